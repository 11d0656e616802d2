"""SMTP: submission (STARTTLS and implicit TLS, RFC 6409/8314) and MX (RFC 5321).

Importing this module registers the ``submission``, ``submissions`` and
``mx`` listeners in :data:`schoolsuite.server.PROTOCOL_FACTORIES`.

Layout: ``grammar.py`` (pure parser), ``message.py`` (pure header and line
checks), ``ops/`` (one module per command family), ``protocol.py`` (the
Twisted protocol and its state machine), ``errors.py`` (replies).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory

from ... import server
from .protocol import SMTPFactory
from .session import MemoryBudget, Settings

MODES = {"submission": "submission", "submissions": "submission", "mx": "mx"}


def transport_of(services: Any, config: Any) -> Any:
    """The process's MailTransport (built by Services.build, or here for a bare Services)."""
    transport = getattr(services, "transport", None)
    if transport is None:
        from ...services.transport import MailTransport

        transport = MailTransport(services, config)
        services.transport = transport
    return transport


def build_factory(ctx: Any) -> Factory:
    """The factory of one SMTP listener."""
    config = ctx.config
    smtp = config.smtp
    transport = transport_of(ctx.services, config)
    ctx.reactor.callWhenRunning(transport.start)
    if getattr(transport, "memory_budget", None) is None:
        transport.memory_budget = MemoryBudget(smtp.max_buffered)
    settings = Settings(
        listener=ctx.name,
        mode=MODES[ctx.name],
        hostname=config.instance.hostname,
        max_size=smtp.max_message_size,
        max_recipients=smtp.max_recipients,
        idle_timeout=smtp.idle_timeout_seconds,
        max_connections=smtp.max_connections,
        max_connections_per_client=smtp.max_connections_per_client,
        reveal_client=smtp.submission_reveal_client,
        dmarc_enforce=smtp.dmarc_enforce_reject,
        tls=ctx.tls,
        implicit_tls=ctx.listener.tls == "implicit",
        transport=transport,
        auth=ctx.services.auth,
        sessions=ctx.services.sessions,
        reactor=ctx.reactor,
        budget=transport.memory_budget,
    )
    return SMTPFactory(settings)


for _name in MODES:
    server.PROTOCOL_FACTORIES[_name] = build_factory
