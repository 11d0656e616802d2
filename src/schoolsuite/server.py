"""Server assembly: config → store, services, listeners; lifecycle.

Each enabled listener gets a Twisted server endpoint (``tcp:`` or systemd
socket activation), a protocol factory from :data:`PROTOCOL_FACTORIES`, implicit
TLS where configured, and connection metrics. On SIGTERM/SIGINT the reactor
stops listening, waits for ``services.shutdown()`` (open transactions finish)
and closes the store.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet import defer, error
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.ssl import CertificateOptions
from twisted.logger import (
    FilteringLogObserver, InvalidLogLevelError, Logger, LogLevel, LogLevelFilterPredicate, globalLogBeginner, textFileLogObserver)
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web import resource

from schoolsuite.config import Config, Listener
from schoolsuite.errors import UserError
from schoolsuite.metrics import (
    CONNECTIONS_TOTAL, OPEN_CONNECTIONS, REGISTRY, STORE_MAP_SIZE_BYTES, STORE_MAP_USED_BYTES)
from schoolsuite.protocols.http.site import Root, make_site
from schoolsuite.tuning import tune_malloc

log = Logger(namespace="schoolsuite.server")

TLS_LABELS = {"implicit": "implicit TLS", "starttls": "STARTTLS", "none": "no TLS"}
SERVER_NAMES = {"imap": "IMAP", "imaps": "IMAP", "submission": "SMTP submission",
                "submissions": "SMTP submission", "mx": "SMTP (MX)"}


class ServerError(UserError):
    """A listener cannot be set up or cannot listen (one-line message)."""


@dataclass
class ServerContext:
    """What a protocol factory gets: its listener, the shared services, TLS for STARTTLS."""

    name: str
    listener: Listener
    config: Config
    store: Any
    services: Any
    reactor: Any
    tls: CertificateOptions | None  # for STARTTLS; implicit TLS is wrapped around the factory


#: Applications under the HTTPS root (``b"dav"``, ``b"files"``, ``b"admin"``, ...):
#: name → builder of the resource; protocol modules add theirs when imported.
HTTP_MOUNTS: dict[bytes, Callable[[ServerContext], resource.IResource]] = {}

#: Called on shutdown once the listeners stopped and before the store closes; each returns a
#: Deferred (or None) that fires when that application's in-flight requests are done.
SHUTDOWN_DRAINS: list[Callable[[], Any]] = []

#: Protocol modules; importing one registers its listeners (PROTOCOL_FACTORIES)
#: and HTTP applications (HTTP_MOUNTS). Add a module here when it lands.
PROTOCOL_MODULES: tuple[str, ...] = ("schoolsuite.protocols.dav",)
PROTOCOL_MODULES += ("schoolsuite.protocols.http.admin", "schoolsuite.protocols.http.autoconfig")  # issue 7
PROTOCOL_MODULES += ("schoolsuite.protocols.webdav",)  # issue 6: /files/

PROTOCOL_MODULES += ("schoolsuite.protocols.smtp",)  # issue 4: submission, submissions, mx
PROTOCOL_MODULES += ("schoolsuite.protocols.imap",)  # issue 3: imap, imaps

def load_protocols() -> None:
    """Import every protocol module so that it registers itself."""
    for name in PROTOCOL_MODULES:
        importlib.import_module(name)


def https_factory(ctx: ServerContext) -> Factory:
    """The HTTPS site: the root, well-known, and every registered mount."""
    root = Root()
    for name, build in HTTP_MOUNTS.items():
        root.mount(name, build(ctx))
    return make_site(root)


class StoreGaugedMetrics(resource.Resource):
    """``/metrics`` via prometheus_client's MetricsResource, refreshing store gauges per scrape."""

    isLeaf = True

    def __init__(self, store: Any) -> None:
        super().__init__()
        from prometheus_client.twisted import MetricsResource

        self._inner = MetricsResource(registry=REGISTRY)
        self._store = store

    def render(self, request: Any) -> Any:
        if hasattr(self._store, "map_usage"):
            used, size = self._store.map_usage()
            STORE_MAP_USED_BYTES.set(used)
            STORE_MAP_SIZE_BYTES.set(size)
        return self._inner.render(request)


def metrics_factory(ctx: ServerContext) -> Factory:
    """Plain-HTTP Prometheus exposition at ``/metrics``."""
    root = resource.Resource()
    root.putChild(b"metrics", StoreGaugedMetrics(ctx.store))
    return make_site(root)


# Listener name → factory builder; protocol modules add imap, submission, mx, ...
PROTOCOL_FACTORIES: dict[str, Callable[[ServerContext], Factory]] = {
    "https": https_factory,
    "metrics": metrics_factory,
}


class _CountingProtocol(ProtocolWrapper):
    def connectionMade(self) -> None:
        label = self.factory.label
        CONNECTIONS_TOTAL.labels(label).inc()
        OPEN_CONNECTIONS.labels(label).inc()
        super().connectionMade()

    def connectionLost(self, reason: Any) -> None:
        OPEN_CONNECTIONS.labels(self.factory.label).dec()
        super().connectionLost(reason)


class CountingFactory(WrappingFactory):
    """Counts accepted and open connections per protocol (bounded label: listener name)."""

    protocol = _CountingProtocol
    noisy = False

    def __init__(self, wrapped: Factory, label: str) -> None:
        super().__init__(wrapped)
        self.label = label
        OPEN_CONNECTIONS.labels(label).set(0)


@dataclass
class _Planned:
    name: str
    listener: Listener
    endpoint: IStreamServerEndpoint
    factory: Factory


def _address(port: IListeningPort) -> str:
    host = port.getHost()
    if hasattr(host, "port"):
        return f"[{host.host}]:{host.port}" if ":" in host.host else f"{host.host}:{host.port}"
    return str(getattr(host, "name", host))


class Server:
    """The assembled server: planned listeners, then ports once listening."""

    def __init__(self, config: Config, reactor: Any, store: Any, services: Any) -> None:
        self.config, self.reactor, self.store, self.services = config, reactor, store, services
        self.planned: list[_Planned] = []
        self.ports: list[IListeningPort] = []
        self.retention: Any = None  # the audit log's (services/audit.py), once listening
        self._stopped = False

    @defer.inlineCallbacks
    def listen(self) -> Any:
        """Listen on every planned endpoint, one line per listener; ServerError on failure."""
        for plan in self.planned:
            try:
                port = yield plan.endpoint.listen(plan.factory)
            except error.CannotListenError as exc:
                reason = getattr(exc.socketError, "strerror", None) or str(exc.socketError)
                raise ServerError(f"cannot listen for {plan.name} on {plan.listener.endpoint}: {reason}") from None
            except Exception as exc:
                raise ServerError(f"cannot listen for {plan.name} on {plan.listener.endpoint}: {exc}") from None
            self.ports.append(port)
            print(f"listening: {plan.name} on {_address(port)} ({TLS_LABELS[plan.listener.tls]})", flush=True)
        if self.services is not None:
            from schoolsuite.services.audit import Retention

            self.retention = Retention(self.store, self.services.writer, self.config.audit.retention_days,
                                       self.reactor)
            self.retention.start()

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Stop listening, let services finish open transactions, close the store."""
        if self._stopped:
            return
        self._stopped = True
        if self.retention is not None:
            self.retention.stop()
        try:
            yield defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in self.ports])
            yield defer.DeferredList([defer.maybeDeferred(drain) for drain in SHUTDOWN_DRAINS])
            if self.services is not None and hasattr(self.services, "shutdown"):
                yield defer.maybeDeferred(self.services.shutdown)
        finally:
            self.store.close()
            log.info("schoolsuite stopped; store closed")


def _plan(server: Server, name: str, listener: Listener, tls: CertificateOptions | None) -> _Planned | None:
    build = PROTOCOL_FACTORIES.get(name)
    if build is None:
        log.warn("{name} listener configured but the {proto} server is not implemented yet; not listening",
                 name=name, proto=SERVER_NAMES.get(name, name))
        return None
    try:
        endpoint = serverFromString(server.reactor, listener.endpoint)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        hint = "no such inherited socket (check LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES)" if listener.endpoint.startswith("systemd") else str(exc)
        raise ServerError(f"[listeners.{name}] endpoint {listener.endpoint!r}: {hint}") from None
    ctx = ServerContext(name, listener, server.config, server.store, server.services, server.reactor, tls)
    factory = build(ctx)
    if listener.tls == "implicit":
        factory = TLSMemoryBIOFactory(tls, False, factory)
    return _Planned(name, listener, endpoint, CountingFactory(factory, name))


def build_server(config: Config, reactor: Any) -> Server:
    """Open the store, build services and plan every enabled listener (nothing listens yet)."""
    from schoolsuite.instance import open_store
    from schoolsuite.services import Services
    from schoolsuite.tls import context_for

    load_protocols()
    enabled = [(n, lst) for n, lst in config.listeners.items() if lst.enabled]
    tls = context_for(config) if any(lst.tls != "none" for _, lst in enabled) else None
    store = open_store(config)
    services = None
    try:
        services = Services.build(config, store, reactor)
        server = Server(config, reactor, store, services)
        for name, listener in enabled:
            plan = _plan(server, name, listener, tls)
            if plan is not None:
                server.planned.append(plan)
    except BaseException:
        if services is not None:  # its writer thread would keep the process alive
            services.writer.abandon()
        store.close()
        raise
    return server


def serve(config: Config, reactor: Any = None) -> int:
    """Run until SIGTERM/SIGINT; return the exit status (0 after a clean stop)."""
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    malloc = tune_malloc()  # before the store and the threads allocate
    server = build_server(config, reactor)
    # Info and above by default; SCHOOLSUITE_LOG_LEVEL=debug shows e.g. cached logins.
    try:
        level = LogLevel.levelWithName(os.environ.get("SCHOOLSUITE_LOG_LEVEL", "info").lower())
    except InvalidLogLevelError:
        level = LogLevel.info
    observer = FilteringLogObserver(textFileLogObserver(sys.stdout), [LogLevelFilterPredicate(level)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    log.info("malloc: {malloc}", malloc=malloc)
    status = {"code": 0}

    def failed(failure: Any) -> None:
        status["code"] = 2
        msg = failure.getErrorMessage() if failure.check(UserError) else f"internal error: {failure.value!r}"
        print(f"schoolsuite: {msg}", file=sys.stderr, flush=True)
        reactor.stop()

    reactor.callWhenRunning(lambda: server.listen().addErrback(failed))
    reactor.addSystemEventTrigger("before", "shutdown", server.stop)
    reactor.run()  # installs SIGTERM/SIGINT handlers that stop the reactor
    return status["code"]
