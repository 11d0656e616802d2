"""SMTP replies and the one exception hierarchy of the SMTP server.

Every refusal is an :class:`SMTPReply` subclass carrying the basic code, the
enhanced status code (RFC 3463) and a text; :func:`render` is the one place
that turns a reply into wire bytes (RFC 5321 §4.2: multi-line replies use
``code-text``). A server fault never shows its cause to the client: it is
logged with an incident id and answered ``451 4.3.0`` with that id.
"""

from __future__ import annotations

import uuid


class SMTPReply(Exception):
    """A reply to send instead of the normal one."""

    code = 500
    enhanced = "5.5.0"
    text = "Error"
    close = False  # close the connection after sending

    def __init__(self, text: str | None = None, *, code: int | None = None, enhanced: str | None = None,
                 close: bool | None = None) -> None:
        if text is not None:
            self.text = text
        if code is not None:
            self.code = code
        if enhanced is not None:
            self.enhanced = enhanced
        if close is not None:
            self.close = close
        super().__init__(f"{self.code} {self.enhanced} {self.text}")

    @property
    def permanent(self) -> bool:
        return self.code >= 500


class BadCommand(SMTPReply):
    """Syntax error in a command or its parameters (RFC 5321 §4.2.2: 500/501)."""

    code, enhanced, text = 501, "5.5.4", "Syntax error in parameters or arguments"


class UnknownCommand(SMTPReply):
    code, enhanced, text = 500, "5.5.2", "Command unrecognized"


class LineTooLong(SMTPReply):
    """RFC 5321 §4.5.3.1.4 / §4.5.3.1.10: a command line over the limit."""

    code, enhanced, text = 500, "5.5.2", "Line too long"


class BadSequence(SMTPReply):
    """RFC 5321 §4.1.4: commands out of order."""

    code, enhanced, text = 503, "5.5.1", "Bad sequence of commands"


class UnknownParameter(SMTPReply):
    """RFC 5321 §4.1.1.11 / RFC 1869: an ESMTP parameter that is not recognised."""

    code, enhanced, text = 555, "5.5.4", "MAIL FROM/RCPT TO parameters not recognized or not implemented"


class Refused(SMTPReply):
    """A policy refusal (relay denied, sender not owned, DMARC reject): 550 5.7.1."""

    code, enhanced, text = 550, "5.7.1", "Refused"


class TempFailure(SMTPReply):
    """Try again later (RFC 5321 §4.2.1: 4yz)."""

    code, enhanced, text = 451, "4.3.0", "Temporary failure; try again later"


class ServerFault(TempFailure):
    """An unexpected error; the client sees only the incident id."""

    def __init__(self) -> None:
        self.incident = uuid.uuid4().hex[:12]
        super().__init__(f"Temporary server error (incident {self.incident}); try again later")


def render(code: int, enhanced: str | None, text: str | list[str]) -> bytes:
    """One reply, possibly multi-line (RFC 5321 §4.2.1), with the enhanced code on each line (RFC 2034 §4)."""
    lines = text if isinstance(text, list) else [text]
    out = []
    for index, line in enumerate(lines):
        sep = " " if index == len(lines) - 1 else "-"
        prefix = f"{enhanced} " if enhanced else ""
        out.append(f"{code}{sep}{prefix}{line}\r\n")
    return "".join(out).encode("utf-8")


def render_error(exc: SMTPReply) -> bytes:
    return render(exc.code, exc.enhanced, exc.text)
