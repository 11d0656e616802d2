"""IMAP4rev1 server (RFC 3501 and the extensions listed in ops_auth.CAPABILITIES).

Layers: ``grammar``/``commands``/``search_grammar`` (bytes → typed commands,
pure), ``ops_*`` (one module per command family, calling storage and
services), ``protocol`` (the Twisted Protocol: buffering, literals, states,
IDLE, STARTTLS, COMPRESS). Importing this package registers the ``imap``
(STARTTLS) and ``imaps`` (implicit TLS) listeners.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from ... import server
from ...server import PROTOCOL_FACTORIES
from ...services.budget import MemoryBudget
from . import ops_search
from .protocol import IMAPFactory, ImapLimits


def limits_from_config(config: Any) -> ImapLimits:
    section = getattr(config, "imap", None)
    limits = ImapLimits()
    if section is not None:
        for name in ("max_line", "max_message_size", "max_connections_per_client", "max_connections_per_account",
                     "autologout_seconds", "max_buffered"):
            if hasattr(section, name):
                setattr(limits, name, getattr(section, name))
    return limits


def _scan_threads(ctx: Any) -> None:
    """Large searches run in the server's scan pool, which is drained before the store closes."""
    pool = ops_search.use_threads(ctx.services, ctx.reactor)
    if pool.drain not in server.SHUTDOWN_DRAINS:
        server.SHUTDOWN_DRAINS.append(pool.drain)


#: id(services) → (services, that server's IMAP factories); one shutdown drain per server.
_FACTORIES: dict[int, tuple[Any, list[IMAPFactory]]] = {}


def _say_bye_on_shutdown(ctx: Any, factory: IMAPFactory) -> IMAPFactory:
    """On shutdown every open IMAP connection gets its BYE and is closed before the store closes."""
    entry = _FACTORIES.get(id(ctx.services))
    if entry is None or entry[0] is not ctx.services:
        factories: list[IMAPFactory] = []
        entry = _FACTORIES[id(ctx.services)] = (ctx.services, factories)

        def drain() -> defer.Deferred[Any]:
            return defer.DeferredList([f.drain() for f in factories])

        server.SHUTDOWN_DRAINS.append(drain)
    entry[1].append(factory)
    return factory


#: id(services) → (services, the literal budget the server's IMAP listeners share).
_BUDGETS: dict[int, tuple[Any, MemoryBudget]] = {}


def _budget(ctx: Any) -> MemoryBudget:
    """One MemoryBudget ([imap] max_buffered) for all IMAP listeners of a server."""
    entry = _BUDGETS.get(id(ctx.services))
    if entry is None or entry[0] is not ctx.services:
        entry = _BUDGETS[id(ctx.services)] = (ctx.services, MemoryBudget(limits_from_config(ctx.config).max_buffered))
    return entry[1]


def imap_factory(ctx: Any) -> IMAPFactory:
    """The 143-style listener: STARTTLS offered, LOGIN refused before it (``tls = "none"``: plain, no STARTTLS)."""
    tls = ctx.tls if ctx.listener.tls == "starttls" else None
    _scan_threads(ctx)
    return _say_bye_on_shutdown(
        ctx, IMAPFactory(ctx.services, limits_from_config(ctx.config), tls=tls, implicit_tls=False,
                         budget=_budget(ctx)))


def imaps_factory(ctx: Any) -> IMAPFactory:
    """The 993-style listener; the server wraps implicit TLS around it."""
    _scan_threads(ctx)
    return _say_bye_on_shutdown(
        ctx, IMAPFactory(ctx.services, limits_from_config(ctx.config), tls=ctx.tls, implicit_tls=True,
                         budget=_budget(ctx)))


PROTOCOL_FACTORIES["imap"] = imap_factory
PROTOCOL_FACTORIES["imaps"] = imaps_factory

__all__ = ["IMAPFactory", "ImapLimits", "imap_factory", "imaps_factory"]
