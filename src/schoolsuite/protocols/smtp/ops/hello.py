"""EHLO and HELO (RFC 5321 §4.1.1.1) with the extensions this server honours."""

from __future__ import annotations

from ..grammar import Extensions, Hello
from ..session import Reply, Session


def handle(session: Session, command: Hello) -> Reply:
    # RFC 5321 §4.1.4: EHLO may be repeated; it resets any transaction in progress.
    session.reset()
    session.helo = command.domain
    settings = session.settings
    if not command.extended:
        session.extended = False
        return Reply(250, None, f"{settings.hostname} Hello {command.domain}")
    session.extended = True
    return Reply(250, None, extensions(session).lines(settings.hostname, f"Hello {command.domain}"))


def extensions(session: Session) -> Extensions:
    settings = session.settings
    starttls = settings.tls is not None and not session.tls and not settings.implicit_tls
    # RFC 4954 §4 / RFC 8314 §3.3: offer AUTH only over TLS, only where AUTH is used.
    auth = ("PLAIN", "LOGIN") if session.submission and session.tls and session.principal is None else ()
    return Extensions(settings.max_size, starttls, auth)
