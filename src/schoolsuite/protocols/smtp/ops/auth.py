"""AUTH PLAIN (RFC 4616) and LOGIN, over TLS only (RFC 4954 §4, RFC 8314 §3.3).

Credentials go to the shared authentication service, which throttles
failures per account and client and answers in constant time.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet import defer

from ..errors import BadCommand, BadSequence, SMTPReply
from ..grammar import Auth
from ..session import Reply, Session


@dataclass(frozen=True)
class Challenge:
    """A 334 continuation: the next client line goes to ``answer``."""

    text: str
    answer: Callable[[bytes], "Reply | Challenge | defer.Deferred[Reply]"]


class AuthRequired(SMTPReply):
    code, enhanced, text = 530, "5.7.0", "Authentication required"


class EncryptionRequired(SMTPReply):
    code, enhanced, text = 538, "5.7.11", "Encryption required for requested authentication mechanism"


def handle(session: Session, command: Auth) -> "Reply | Challenge | defer.Deferred[Reply]":
    if not session.submission:
        raise BadCommand("AUTH not available on this port", code=503, enhanced="5.5.1")
    if not session.tls:
        raise EncryptionRequired()
    if session.principal is not None:
        raise BadSequence("Already authenticated")  # RFC 4954 §4
    if session.transaction is not None:
        raise BadSequence("AUTH not allowed during a mail transaction")
    if command.mechanism == "PLAIN":
        if command.initial is None:
            return Challenge("", lambda line: _plain(session, line))
        return _plain(session, command.initial.encode("ascii", "replace"))
    if command.mechanism == "LOGIN":
        def password(user: str) -> Challenge:
            return Challenge(base64.b64encode(b"Password:").decode(),
                             lambda line: _check(session, user, _b64(line)))
        if command.initial is not None:
            return password(_b64(command.initial.encode("ascii", "replace")))
        return Challenge(base64.b64encode(b"Username:").decode(), lambda line: password(_b64(line)))
    raise BadCommand("Unsupported authentication mechanism", code=504, enhanced="5.5.4")


def _b64(line: bytes) -> str:
    if line.strip() == b"*":  # RFC 4954 §4: the client cancels
        raise BadCommand("Authentication cancelled", enhanced="5.0.0")
    try:
        return base64.b64decode(line.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise BadCommand("Cannot decode response", enhanced="5.5.2") from None


def _plain(session: Session, line: bytes) -> "defer.Deferred[Reply]":
    text = "" if line.strip() == b"=" else _b64(line)
    parts = text.split("\x00")
    if len(parts) != 3 or not parts[1]:
        raise BadCommand("Malformed PLAIN response", enhanced="5.5.2")
    authzid, user, secret = parts
    if authzid and authzid.lower() != user.lower():
        raise SMTPReply("Not authorized to act as that user", code=535, enhanced="5.7.8")
    return _check(session, user, secret)


def _check(session: Session, user: str, secret: str) -> "defer.Deferred[Reply]":
    from ....services.auth import AuthFailed  # the service's refusal type

    d = session.settings.auth.authenticate(user, secret, session.client_ip, "smtp")

    def ok(principal: object) -> Reply:
        session.principal = principal
        session.own_addresses = session.settings.transport.addresses_of(principal.account_id)  # type: ignore[attr-defined]
        return Reply(235, "2.7.0", "Authentication successful")

    def refused(failure: object) -> Reply:
        failure.trap(AuthFailed)  # type: ignore[attr-defined]
        reason = failure.value.reason  # type: ignore[attr-defined]
        if reason == "blocked":
            raise SMTPReply("Too many failed logins; try again later", code=454, enhanced="4.7.0")
        raise SMTPReply("Authentication credentials invalid", code=535, enhanced="5.7.8")

    return d.addCallbacks(ok, refused)
