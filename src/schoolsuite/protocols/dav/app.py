"""Assembly of CalDAV/CardDAV: Radicale as a WSGI application under ``/dav/``.

Radicale's plugin loader accepts a callable for ``[storage] type``,
``[auth] type`` and ``[rights] type``; ours return objects built here, so
the app and Radicale's sharing module share ONE storage object (Radicale
builds its storage twice otherwise).

Threads: Radicale is synchronous, so it runs in a thread pool of its own
(``[dav] threads``), not the reactor's: authentication runs argon2id on the
reactor's pool, and WSGI threads waiting for it must never be the threads it
needs. Store writes hop to the store writer thread and the WSGI thread waits
for the commit, so a 201 always follows a durable commit.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import radicale
import radicale.config
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web import resource
from twisted.web.wsgi import WSGIResource

from ... import server as server_module
from ...services.groups import GroupService
from ...storage import dav as store_dav
from ...storage.dav import DavStore
from ..http.body import Accept, Reject
from . import directory, groupbooks
from .plugin_auth import Auth, Rights
from .plugin_storage import Storage
from .root import RootOptions, RootPropfind
from .wsgi import Limits, Middleware, precondition_body

log = Logger(namespace="schoolsuite.dav")

MOUNT = "dav"


class _ToTwistedLog(logging.Handler):
    """Radicale's warnings and errors into the server log, as their templates only: the
    arguments can quote user names, paths or a line of refused calendar data."""

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= logging.ERROR else "warn"
        template = str(record.msg).replace("%r", "…").replace("%s", "…").replace("%d", "…")
        getattr(Logger(namespace="schoolsuite.dav.radicale"), level)("radicale: {template}", template=template)


def _quiet_radicale_logging() -> None:
    logger = logging.getLogger("radicale")
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    if not any(isinstance(h, _ToTwistedLog) for h in logger.handlers):
        logger.addHandler(_ToTwistedLog())


def radicale_configuration(storage_factory: Any, auth_factory: Any, rights_factory: Any,
                           max_item_size: int, max_request_size: int) -> Any:
    """Radicale's configuration: our plugins, no web UI, no sharing, no hooks, no own limits checks."""
    configuration = radicale.config.load()
    configuration.update({
        "server": {
            # Radicale caps the resource size at 80 % of the request size.
            "max_content_length": str(max(max_request_size, max_item_size * 2)),
            "max_resource_size": str(max_item_size),
            "validate_user_value": "none",  # names are hashed in the store: any text is fine
            "validate_path_value": "none",
        },
        "encoding": {"request": "utf-8", "stock": "utf-8"},
        "auth": {"type": auth_factory, "delay": "0", "cache_logins": "False", "realm": "schoolsuite",
                 "lc_username": "True"},
        "rights": {"type": rights_factory, "permit_delete_collection": "True",
                   "permit_overwrite_collection": "True"},
        "storage": {"type": storage_factory, "predefined_collections": "{}"},
        "sharing": {"type": "none"},
        "web": {"type": "none"},
        "hook": {"type": "none"},
        "logging": {"level": "warning", "mask_passwords": "True", "bad_put_request_content": "False"},
    }, "schoolsuite", privileged=True)
    return configuration


class DavResource(WSGIResource):
    """``/dav/``: Radicale in its pool; answers PROPFIND/OPTIONS on ``/`` too (``root_methods``)."""

    closing = False

    def __init__(self, reactor: Any, pool: ThreadPool, app: Any, root_methods: dict[bytes, resource.IResource],
                 limits: Limits) -> None:
        super().__init__(reactor, pool, app)
        self.root_methods = root_methods
        self._limits = limits
        self._pool = pool

    def render(self, request: Any) -> Any:
        if self.closing:
            request.setResponseCode(503)
            request.setHeader(b"Retry-After", b"10")
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"the server is shutting down\n"
        return super().render(request)

    def drain(self, timeout: float = 30.0) -> defer.Deferred[None]:
        """Shutdown (server.SHUTDOWN_DRAINS): 503 to new requests, wait for the requests in flight.

        The store closes after this fires, so no WSGI thread is inside a transaction then.
        The pool is joined off the reactor thread: its workers may still need the reactor.
        """
        self.closing = True
        done: defer.Deferred[None] = defer.Deferred()
        reactor = self._reactor

        def wait() -> None:
            self._pool.stop()
            reactor.callFromThread(lambda: done.called or done.callback(None))

        threading.Thread(target=wait, name="dav-drain", daemon=True).start()
        timer = reactor.callLater(timeout, lambda: done.called or done.callback(None))
        done.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])
        return done

    def body_gate(self, head: Any) -> Accept | Reject:
        """Refuse an oversized body from its Content-Length before reading it (body.py)."""
        item_put = head.method == b"PUT" and not head.path.split(b"?", 1)[0].endswith(b"/")
        limit = self._limits.max_item_size if item_put else self._limits.max_request_size
        if head.length is not None and head.length > limit:
            if item_put:
                ctype = (head.headers.getRawHeaders(b"content-type") or [b""])[0].lower()
                kind = "CR" if b"vcard" in ctype or head.path.lower().endswith(b".vcf") else "C"
                return Reject(413, ((b"Content-Type", b"application/xml; charset=utf-8"),),
                              precondition_body(f"{kind}:max-resource-size"))
            return Reject(413, ((b"Content-Type", b"text/plain; charset=utf-8"),), b"request body too large\n")
        return Accept(max_body=limit)


def build_application(services: Any, dav_config: Any, run_write: Any = None) -> tuple[Any, Storage]:
    """The wrapped Radicale application and its storage (tests call this without a server)."""
    _quiet_radicale_logging()
    dav = DavStore(services.store, run_write)
    virtual = {directory.NAME: directory.factory} if dav_config.school_directory else {}
    groups = getattr(services, "groups", None) or GroupService(services.store)
    dynamic = [groupbooks.GroupBooks(groups)]
    shared: dict[str, Any] = {}
    made_defaults: set[bytes] = set()

    def storage_factory(configuration: Any) -> Storage:
        if "storage" not in shared:
            shared["storage"] = Storage(configuration, dav, max_items=dav_config.max_collection_items,
                                        virtual=virtual, dynamic=dynamic)
        return shared["storage"]

    def on_login(principal: Any) -> None:
        # Accounts made without the DAV initializer (e.g. by the CLI) get their defaults now.
        if principal.account_id not in made_defaults:
            dav.write(principal.account_id, store_dav.make_default_collections)
            made_defaults.add(principal.account_id)

    def auth_factory(configuration: Any) -> Auth:
        auth = Auth(configuration, services)
        auth.on_login = on_login
        return auth

    def rights_factory(configuration: Any) -> Rights:
        return Rights(configuration, read_only_names=virtual.keys(), read_only_prefixes=(groupbooks.PREFIX,))

    configuration = radicale_configuration(storage_factory, auth_factory, rights_factory,
                                           dav_config.max_item_size, dav_config.max_request_size)
    app = radicale.Application(configuration)
    limits = Limits(dav_config.max_item_size, dav_config.max_request_size)
    return Middleware(app, limits), storage_factory(configuration)


def build_resource(ctx: Any) -> resource.IResource:
    """``HTTP_MOUNTS[b"dav"]``: the resource under ``/dav/`` with its own thread pool."""
    services, reactor, dav_config = ctx.services, ctx.reactor, ctx.config.dav

    def run_write(fn: Any) -> Any:
        return threads.blockingCallFromThread(reactor, services.writer.run, fn)

    app, _ = build_application(services, dav_config, run_write)
    pool = ThreadPool(minthreads=1, maxthreads=dav_config.threads, name="dav")
    reactor.callWhenRunning(pool.start)
    root_methods: dict[bytes, resource.IResource] = {
        b"PROPFIND": RootPropfind(services, MOUNT),
        b"OPTIONS": RootOptions(),
    }
    limits = Limits(dav_config.max_item_size, dav_config.max_request_size)
    dav_resource = DavResource(reactor, pool, app, root_methods, limits)
    server_module.SHUTDOWN_DRAINS.append(dav_resource.drain)
    return dav_resource
