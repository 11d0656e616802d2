"""The IMAP exception hierarchy, mapped to wire replies in :func:`reply_for` only (RFC 3501 §7.1)."""

from __future__ import annotations

import uuid

from twisted.logger import Logger

log = Logger(namespace="schoolsuite.imap")


class ImapError(Exception):
    """Base: a refusal carried to the client as a tagged response."""

    status = b"NO"

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class Bad(ImapError):
    """Protocol error: BAD (RFC 3501 §7.1.3)."""

    status = b"BAD"


class No(ImapError):
    """Refused: NO with an optional response code (RFC 5530 codes: TRYCREATE, NONEXISTENT, ...)."""


class Bye(ImapError):
    """The server closes the connection (RFC 3501 §7.1.5)."""

    status = b"BYE"


class Cut(ImapError):
    """A response already begun cannot be finished (a streamed literal whose bytes are gone): the connection
    is closed without another byte, since anything else would be read as part of the literal."""


def reply_for(tag: bytes, exc: BaseException) -> bytes:
    """The one place exceptions become wire replies; a fault is logged with an incident id."""
    if isinstance(exc, ImapError):
        code = f"[{exc.code}] " if exc.code else ""
        text = (code + exc.text).encode("utf-8", "replace").replace(b"\r", b" ").replace(b"\n", b" ")
        if isinstance(exc, Bye):
            return b"* BYE " + text + b"\r\n"
        return tag + b" " + exc.status + b" " + text + b"\r\n"
    incident = uuid.uuid4().hex[:12]
    log.error("IMAP command failed: incident={incident} error={error!r}", incident=incident, error=exc)
    return tag + b" NO [SERVERBUG] Internal error (incident " + incident.encode() + b")\r\n"
