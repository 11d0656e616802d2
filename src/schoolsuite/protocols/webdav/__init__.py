"""WebDAV file space under ``/files/`` (issue 6): WsgiDAV over the sealed store.

Importing this module registers the ``/files/`` mount (server.HTTP_MOUNTS)
(the empty file space every new account gets is registered by services).

Modules: ``paths`` (grammar of paths and Destination), ``gate`` (auth,
quota and size from the headers), ``provider`` (the tree, content in and
out), ``locks`` and ``props`` (class 2 locks and dead properties in the
store), ``app`` (WsgiDAV assembly, error mapping, the Twisted resource),
``metrics``.
"""

from __future__ import annotations

from typing import Any

from ...storage import files

#: Defaults when the config has no [webdav] section.
DEFAULT_MAX_UPLOAD = 10 << 30
#: WsgiDAV's read/write block size (measured: see benchmarks/webdav_vs_wsgidav.py).
DEFAULT_BLOCK_SIZE = 1 << 20
DEFAULT_THREADS = 16
DEFAULT_AUTH_CACHE_SECONDS = 60.0
#: An upload whose pending content got no batch for this long is abandoned (its client was cut
#: off, or the server crashed mid-upload): :func:`storage.content.sweep_pending` removes it.
PENDING_MAX_AGE = 3600.0
#: How often abandoned uploads are looked for (and once at start-up).
SWEEP_SECONDS = 900.0


#: Every new account starts with an empty file space; services registers it
#: (so that accounts made by the CLI get one too); kept here under its old name.
init_file_space = files.init_account


def settings(config: Any) -> dict[str, Any]:
    section = getattr(config, "webdav", None)
    return {
        "max_upload": getattr(section, "max_upload_size", DEFAULT_MAX_UPLOAD),
        "block_size": getattr(section, "block_size", DEFAULT_BLOCK_SIZE),
        "threads": getattr(section, "threads", DEFAULT_THREADS),
        "auth_cache_seconds": getattr(section, "auth_cache_seconds", DEFAULT_AUTH_CACHE_SECONDS),
    }


def build_files(ctx: Any) -> Any:
    """The ``/files/`` resource for the HTTPS site."""
    from .app import FilesApp, FilesResource
    from .gate import FilesGate
    from .metrics import STORED_BYTES

    opts = settings(ctx.config)
    services = ctx.services
    gate = FilesGate(services, opts["max_upload"], opts["auth_cache_seconds"])
    app = FilesApp(services.store, opts["block_size"])
    with services.store.read() as txn:
        STORED_BYTES.set(files.total_usage(txn))
    files_resource = FilesResource(ctx.reactor, app, gate, opts["threads"])
    from ... import server

    # Drained on shutdown before the store closes (no request of ours left inside a transaction).
    server.SHUTDOWN_DRAINS.append(files_resource.drain)
    server.SHUTDOWN_DRAINS.append(_sweep_abandoned_uploads(ctx.reactor, services))
    return files_resource


def _sweep_abandoned_uploads(reactor: Any, services: Any) -> Any:
    """Sweep abandoned uploads now and every SWEEP_SECONDS, on the store's writer; returns the stop function.

    Their batches are committed without waiting for the disk (only the final
    publish is durable), so a crash can leave some behind: they are found here.
    """
    from twisted.internet import task
    from twisted.logger import Logger

    from ...storage.content import sweep_pending

    log = Logger(namespace="schoolsuite.webdav")

    def sweep() -> None:
        d = services.writer.run(sweep_pending, services.store, PENDING_MAX_AGE)
        d.addCallback(lambda n: n and log.info("removed {n} abandoned uploads", n=n))
        d.addErrback(lambda f: log.failure("sweeping abandoned uploads failed", f))

    loop = task.LoopingCall(sweep)
    loop.clock = reactor
    reactor.callWhenRunning(loop.start, SWEEP_SECONDS, True)

    def stop() -> None:
        if loop.running:
            loop.stop()

    return stop


def _register() -> None:
    from ... import server

    server.HTTP_MOUNTS[b"files"] = build_files


_register()
