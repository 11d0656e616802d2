"""WsgiDAV assembled over our provider, lock storage, property manager and domain controller.

Request flow: the site's body gate (gate.py) authenticates and checks quota
from the headers; :class:`FilesResource` runs :class:`FilesApp` in a thread
pool of its own (never the reactor's, which checks passwords); FilesApp
re-checks the path and ``Destination`` grammar (paths.py), builds a clean
``PATH_INFO``, binds the account for the lock storage, and calls WsgiDAV.
Every failure becomes a status line and a short text in one place
(:class:`ErrorMapper`); a server fault is logged with an incident id, and no
path or traceback reaches the client.
"""

from __future__ import annotations

import io
import queue
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.wsgi import WSGIResource, _WSGIResponse
from wsgidav.dav_error import DAVError, get_http_status_string
from wsgidav.dc.base_dc import BaseDomainController
from wsgidav.http_authenticator import HTTPAuthenticator
from wsgidav.lock_man.lock_manager import LockManager
from wsgidav.mw.base_mw import BaseMiddleware
from wsgidav.request_resolver import RequestResolver
from wsgidav.util import get_rfc1123_time, parse_time_string
from wsgidav.wsgidav_app import WsgiDAVApp
from zope.interface import implementer

from ...storage import NotFound, StoreFullError
from ..http.body import BodyPipe
from . import locks, metrics, quickput
from .gate import REALM, FilesContext
from .paths import FilesPath, PathError, parse_destination, parse_request_path
from .props import StorePropertyManager
from .provider import FileSpaceProvider

log = Logger(namespace="schoolsuite.webdav")
_BYTES_IN = metrics.BYTES.labels("in")
_PUT_SECONDS = metrics.SECONDS.labels("PUT")

#: environ key that WsgiDAV's HTTPAuthenticator trusts as the user name. Only
#: FilesApp sets it (a client header would arrive as ``HTTP_...``).
TRUSTED_USER = "schoolsuite.user"
ANONYMOUS_ALLOW = "OPTIONS, GET, HEAD, PROPFIND, PROPPATCH, PUT, DELETE, MKCOL, COPY, MOVE, LOCK, UNLOCK"


class GateDomainController(BaseDomainController):
    """Authentication already happened in the body gate; WsgiDAV never checks a password itself."""

    def get_domain_realm(self, path_info: str, environ: dict[str, Any]) -> str:
        return REALM

    def require_authentication(self, realm: str, environ: dict[str, Any]) -> bool:
        return True

    def basic_auth_user(self, realm: str, user_name: str, password: str, environ: dict[str, Any]) -> bool:
        return False

    def supports_http_digest_auth(self) -> bool:
        return False


class ErrorMapper(BaseMiddleware):
    """Every error of WsgiDAV or of ours → one short answer (the one place errors are mapped)."""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        started = False

        def tracking_start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal started
            started = True
            return start_response(status, headers, exc_info)

        try:
            result = self.next_app(environ, tracking_start)
            try:
                yield from result
            finally:
                if hasattr(result, "close"):
                    result.close()
            return
        except DAVError as e:
            if started:
                raise
            status = get_http_status_string(e)
            code = e.value
            if code >= 500:
                incident = _incident()
                log.error("webdav fault {incident}: {error!r}", incident=incident, error=e.src_exception or e)
                body = f"server error; incident {incident}\n".encode()
                ctype = "text/plain; charset=utf-8"
            elif e.err_condition:
                ctype, body = "application/xml; charset=utf-8", e.err_condition.as_string().encode()
            else:
                ctype, body = "text/plain; charset=utf-8", (status + "\n").encode()
            if code in (204, 304):
                body = b""
            headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
            headers += list(e.add_headers or [])
            start_response(status, headers)
            yield body
        except NotFound:
            # The content or the account went away under the request (deleted meanwhile).
            if started:
                raise
            body = b"404 Not Found\n"
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                             ("Content-Length", str(len(body)))])
            yield body
        except Exception:
            if started:
                raise
            incident = _incident()
            log.failure("webdav fault {incident}", incident=incident)
            body = f"server error; incident {incident}\n".encode()
            start_response("500 Internal Server Error",
                           [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
            yield body


def _incident() -> str:
    return secrets.token_hex(6)


def build_wsgidav(store: Any, block_size: int) -> WsgiDAVApp:
    """WsgiDAV with our provider (share ``/``), lock storage, property manager and domain controller."""
    provider = FileSpaceProvider(store, block_size)
    config = {
        "provider_mapping": {"/": provider},
        "mount_path": "/files",
        "verbose": 1,
        "logging": {"enable": False},
        "suppress_version_info": True,
        "block_size": block_size,
        "add_header_MS_Author_Via": True,  # Windows Explorer / Office (MS-Author-Via: DAV)
        "honor_mtime_header": True,  # X-OC-Mtime from rclone and ownCloud-style clients
        "property_manager": StorePropertyManager(store),
        "lock_storage": locks.StoreLockStorage(),
        "mutable_live_props": ["{DAV:}getlastmodified"],
        "hotfixes": {"emulate_win32_lastmod": True, "re_encode_path_info": True, "unquote_path_info": False},
        "http_authenticator": {
            "domain_controller": GateDomainController,
            "accept_basic": True,
            "accept_digest": False,
            "default_to_digest": False,
            "trusted_auth_header": TRUSTED_USER,
        },
        "middleware_stack": [ErrorMapper, HTTPAuthenticator, RequestResolver],
        "dir_browser": {"enable": False},
        "cors": {"allow_origin": None},
    }
    app = WsgiDAVApp(config)
    assert isinstance(provider.lock_manager, LockManager)
    return app


class FilesApp:
    """The WSGI application under ``/files/`` (see module doc)."""

    def __init__(self, store: Any, block_size: int) -> None:
        self.store = store
        self.dav = build_wsgidav(store, block_size)

    def __call__(self, ctx: FilesContext | None, environ: dict[str, Any], start_response: Any,
                 parsed: tuple[bytes, FilesPath] | None = None) -> Iterable[bytes]:
        """``parsed``: (raw path, FilesPath) as the gate parsed it, reused when the bytes are the same."""
        method = environ.get("REQUEST_METHOD", "")
        started = time.perf_counter()
        status_box = ["000"]

        def counting_start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status_box[0] = status.split(" ", 1)[0]
            headers = [(k, v) for k, v in headers if k.lower() != "server"]
            return start_response(status, headers, exc_info)

        def finished() -> None:
            label = metrics.method_label(method)
            metrics.REQUESTS.labels(label, status_box[0]).inc()
            metrics.SECONDS.labels(label).observe(time.perf_counter() - started)
            locks.bind(None, None)

        try:
            result = self._dispatch(ctx, environ, counting_start, parsed)
        except BaseException:
            finished()
            raise
        return _Closing(result, finished)

    def _dispatch(self, ctx: FilesContext | None, environ: dict[str, Any], start_response: Any,
                  parsed: tuple[bytes, FilesPath] | None = None) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        if ctx is None:
            if method == "OPTIONS":
                return self._anonymous_options(start_response)
            return _plain(start_response, "401 Unauthorized", "authentication required")
        raw_uri = environ.get("REQUEST_URI", "").encode("latin-1")
        try:
            path = parsed[1] if parsed is not None and parsed[0] == raw_uri else parse_request_path(raw_uri)
            if path.owner is not None and path.owner.lower() != ctx.address:
                return _plain(start_response, "403 Forbidden", "this is not your file space")
            destination = environ.get("HTTP_DESTINATION")
            if destination is not None:
                dest = parse_destination(destination.encode("latin-1"),
                                         environ.get("HTTP_HOST", "").encode("latin-1"))
                if dest.owner is None or dest.owner.lower() != ctx.address:
                    return _plain(start_response, "403 Forbidden", "the destination is not in your file space")
                environ["HTTP_DESTINATION"] = dest.url()
        except PathError as e:
            status = "400 Bad Request" if e.status == 400 else "403 Forbidden"
            return _plain(start_response, status, e.reason)
        if method == "PROPFIND" and environ.get("HTTP_DEPTH", "infinity").strip().lower() == "infinity":
            # RFC 4918 §9.1: a server may refuse Depth: infinity (as Apache mod_dav does): the whole
            # multistatus of a large tree would be built in memory.
            body = (b'<?xml version="1.0" encoding="utf-8"?>\n'
                    b'<D:error xmlns:D="DAV:"><D:propfind-finite-depth/></D:error>\n')
            start_response("403 Forbidden", [("Content-Type", "application/xml; charset=utf-8"),
                                             ("Content-Length", str(len(body)))])
            return [body]
        if path.owner is not None:
            path = type(path)(ctx.address, path.names, path.trailing_slash)
        environ["SCRIPT_NAME"] = "/files"
        environ["PATH_INFO"] = path.wsgi_path()
        environ["schoolsuite.files"] = ctx
        raw_segments = raw_uri.split(b"?", 1)[0].split(b"/")
        if path.owner is not None and len(raw_segments) > 2:
            environ["schoolsuite.owner_raw"] = raw_segments[2].decode("ascii", "replace")  # for hrefs
        environ[TRUSTED_USER] = ctx.address
        environ.pop("HTTP_TRANSFER_ENCODING", None)  # the site already removed the chunked framing
        _fix_if_modified_since(environ)
        locks.bind(self.store, ctx.account_id)
        return self.dav(environ, start_response)

    @staticmethod
    def _anonymous_options(start_response: Any) -> list[bytes]:
        """RFC 4918 §10.1 / §18: the capabilities, for clients that ask before they log in."""
        start_response("200 OK", [("DAV", "1, 2"), ("MS-Author-Via", "DAV"), ("Allow", ANONYMOUS_ALLOW),
                                  ("Content-Length", "0")])
        return [b""]


def _fix_if_modified_since(environ: dict[str, Any]) -> None:
    """RFC 9110 §13.1.3: 304 when the resource was modified *at or before* the date.

    WsgiDAV answers 304 only when strictly before; our Last-Modified has whole
    seconds, so moving the client's date one second on gives the RFC's rule.
    """
    value = environ.get("HTTP_IF_MODIFIED_SINCE")
    if not value:
        return
    stamp = parse_time_string(value)
    if stamp is None:
        del environ["HTTP_IF_MODIFIED_SINCE"]  # an invalid date is ignored (RFC 9110 §13.1.3)
        return
    environ["HTTP_IF_MODIFIED_SINCE"] = get_rfc1123_time(stamp + 1)


def _plain(start_response: Any, status: str, text: str) -> list[bytes]:
    body = (text + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


class _Closing:
    """The response iterable, with a callback when the server closes it (PEP 3333)."""

    def __init__(self, inner: Iterable[bytes], on_close: Any) -> None:
        self._inner = inner
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._inner)

    def close(self) -> None:
        try:
            if hasattr(self._inner, "close"):
                self._inner.close()
        finally:
            self._on_close()


@implementer(IPushProducer)
class _Backpressure:
    """Flow control for a response written from a worker thread.

    Twisted's WSGI bridge writes whatever the application yields without
    waiting for the connection: a 2 GiB GET to a slow client would sit in
    memory. Registered on the request as a push producer, this tells the
    worker (between two blocks) to wait while the transport's buffer is full.
    """

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.ready.set()
        self.stopped = False

    def pauseProducing(self) -> None:
        self.ready.clear()

    def resumeProducing(self) -> None:
        self.ready.set()

    def stopProducing(self) -> None:
        self.stopped = True
        self.ready.set()

    def wait(self) -> bool:
        """Block until the connection can take more; False if the client went away."""
        while not self.ready.wait(60.0):
            pass
        return not self.stopped


class _Paced:
    """The response iterable, yielding only while the connection can take more."""

    def __init__(self, inner: Iterable[bytes], pacer: _Backpressure) -> None:
        self._inner, self._pacer = inner, pacer

    def __iter__(self) -> Iterator[bytes]:
        for block in self._inner:
            if not self._pacer.wait():
                return  # the client went away: stop reading content for it
            yield block

    def close(self) -> None:
        if hasattr(self._inner, "close"):
            self._inner.close()


class _FilesResponse(_WSGIResponse):
    """Twisted's WSGI response, with the last block written and the request finished in one reactor call.

    Twisted writes every block with ``blockingCallFromThread`` (the worker
    waits for the reactor) and then finishes with another call: two extra
    thread hops on the path of every small answer (a 201 to a PUT, a
    multistatus). Here each block is held back until the next one is there;
    the last one goes out together with the finish, and the worker does not
    wait for it. ``on_done`` runs on the reactor first (it releases the
    connection's producer before the next request on it registers its own).
    """

    def __init__(self, reactor: Any, threadpool: Any, application: Any, request: Any, on_done: Any) -> None:
        super().__init__(reactor, threadpool, application, request)
        self._held: bytes | None = None
        self._on_done = on_done

    def write(self, data: bytes) -> None:
        """The WSGI ``write`` callable (and the way held blocks go out): blocks until the reactor wrote."""
        self._send_held()
        super().write(data)

    def _send_held(self) -> None:
        held, self._held = self._held, None
        if held:
            super().write(held)

    def run(self) -> None:
        try:
            app_iter = self.application(self.environ, self.startResponse)
            try:
                for elem in app_iter:
                    if elem:
                        self._send_held()
                        self._held = elem
                    if self._requestFinished:
                        break
            finally:
                close = getattr(app_iter, "close", None)
                if close is not None:
                    close()
        except BaseException:
            self._held = None
            failure = Failure()

            def failed(started: bool) -> None:
                self._on_done()
                self._log.failure("WSGI application error", failure=failure)
                if started:
                    self.request.loseConnection()
                elif not self._requestFinished:
                    self.request.setResponseCode(500)
                    self.request.finish()

            self.reactor.callFromThread(failed, self.started)
        else:
            held, self._held = self._held, None

            def finish(started: bool) -> None:
                self._on_done()
                if self._requestFinished:
                    return
                if not started:
                    self._sendResponseHeaders()
                if held:
                    self.request.write(held)
                self.request.finish()

            self.reactor.callFromThread(finish, self.started)
        self.started = True


class _Workers:
    """The worker threads of ``/files/``: started as needed up to ``threads``, fed from one queue.

    Stands in for Twisted's ThreadPool (which WSGIResource only asks for
    ``callInThread``): its hand-over from the reactor to a worker costs two to
    three times as much, on the path of every request.
    """

    def __init__(self, threads: int, name: str = "webdav") -> None:
        self._max = max(1, threads)
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._stopped = False

    def callInThread(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            if self._stopped:
                return
            # _idle: workers waiting, less the work queued for them (negative: work waits for a worker).
            if self._idle <= 0 and len(self._threads) < self._max:
                thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                self._idle += 1
                thread.start()
            self._idle -= 1
        self._queue.put((fn, args, kwargs))

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            fn, args, kwargs = task
            try:
                fn(*args, **kwargs)
            except BaseException:  # _FilesResponse.run reports its own failures; this is a last resort
                log.failure("webdav worker failed")
            with self._lock:
                self._idle += 1

    def stop(self) -> None:
        """Refuse new work, let the queued work finish, join every worker."""
        with self._lock:
            self._stopped = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join()


class FilesResource(WSGIResource):
    """``/files/``: FilesApp in its own worker threads, with the body gate for the site."""

    def __init__(self, reactor: Any, app: FilesApp, gate: Any, threads: int) -> None:
        self._pool = _Workers(threads)
        super().__init__(reactor, self._pool, app)
        self.files_app = app
        self.body_gate = gate
        self.closing = False
        self._active: dict[int, tuple[server.Request, _Backpressure]] = {}
        self._drained: defer.Deferred[None] | None = None

    def drain(self, timeout: float = 30.0) -> defer.Deferred[None]:
        """Shutdown: refuse new requests, cut the bodies and answers in flight, wait for the workers.

        Fires once no worker thread is left (or after ``timeout``), so that the
        store is closed only when no request of ours is inside a transaction.
        """
        if self._drained is not None:
            return self._drained
        self.closing = True
        for request, pacer in list(self._active.values()):
            pacer.stopProducing()  # a GET stops between two blocks
            content = getattr(request, "content", None)
            if isinstance(content, BodyPipe):
                content.fail("server shutting down")  # a PUT stops reading and aborts its upload
        done: defer.Deferred[None] = defer.Deferred()
        reactor = self._reactor

        def wait() -> None:
            self._pool.stop()  # joins the workers; they may still need the reactor, which keeps running
            reactor.callFromThread(lambda: done.called or done.callback(None))

        threading.Thread(target=wait, name="webdav-drain", daemon=True).start()
        timer = reactor.callLater(timeout, lambda: done.called or done.callback(None))
        done.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])
        self._drained = done
        return done

    def render(self, request: server.Request) -> Any:
        if self.closing:
            request.setResponseCode(503)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.setHeader(b"Retry-After", b"5")
            return b"the server is restarting\n"
        ctx = getattr(request, "body_context", {}).get("files")
        parsed = getattr(request, "body_context", {}).get("files_path")
        path = parsed[1] if parsed is not None and parsed[0] == request.uri else None
        if isinstance(request.content, io.BytesIO) and quickput.eligible(request, ctx, path):
            self._quick_put(request, ctx, path)  # type: ignore[arg-type]
        else:
            self._run_wsgi(request, ctx, parsed)
        return server.NOT_DONE_YET

    def _run_wsgi(self, request: server.Request, ctx: FilesContext | None, parsed: Any) -> None:
        app = self.files_app
        raw_uri = request.uri.decode("latin-1")
        pacer = _Backpressure()
        request.registerProducer(pacer, True)
        self._active[id(request)] = (request, pacer)
        request.notifyFinish().addBoth(lambda _: self._active.pop(id(request), None))

        def release() -> None:
            # On the reactor, before the bridge's finish: the channel must be free of our producer
            # when the next request on this connection registers its own. (The client may have
            # gone already, having read the whole answer.)
            if request.channel is not None and request.producer is pacer:
                request.unregisterProducer()

        def bound(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            environ["REQUEST_URI"] = raw_uri  # the path as sent, for paths.py
            return _Paced(app(ctx, environ, start_response, parsed), pacer)

        # Twisted's own WSGIResource.render, with the request's authenticated user bound in.
        response = _FilesResponse(self._reactor, self._threadpool, bound, request, release)
        response.start()

    def _quick_put(self, request: server.Request, ctx: FilesContext, path: FilesPath) -> None:
        """A small plain PUT in one transaction on a worker, answered here (see quickput.py)."""
        started = time.perf_counter()
        body = request.content.read()
        content_type = (request.getHeader(b"content-type") or b"").decode("latin-1")
        mtime = request.getHeader(b"x-oc-mtime")
        store, reactor = self.files_app.store, self._reactor

        def work() -> None:
            try:
                entry, old = quickput.publish(store, ctx, path.names, body, content_type,
                                              float(int(mtime)) if mtime else None)
            except quickput.NotQuick:
                reactor.callFromThread(fall_back)
            except BaseException as e:
                reactor.callFromThread(failed, e)
            else:
                reactor.callFromThread(answer, entry, old)

        def fall_back() -> None:
            request.content.seek(0)
            if self.closing:
                finish(503, "the server is restarting")
            else:
                self._run_wsgi(request, ctx, request.body_context.get("files_path"))

        def answer(entry: Any, old: Any) -> None:
            _BYTES_IN.inc(len(body))
            metrics.STORED_BYTES.inc(entry.size - (old.size if old else 0))
            finish(204 if old is not None else 201, None, (b"ETag", f'"{entry.etag}"'.encode()))

        def failed(error: BaseException) -> None:
            if isinstance(error, StoreFullError):
                finish(507, "the store is full")
            elif isinstance(error, NotFound):
                finish(404, "404 Not Found")  # the account went away meanwhile
            else:
                incident = _incident()
                log.error("webdav fault {incident}: {error!r}", incident=incident, error=error)
                finish(500, f"server error; incident {incident}")

        def finish(code: int, text: str | None, *headers: tuple[bytes, bytes]) -> None:
            metrics.REQUESTS.labels("PUT", str(code)).inc()
            _PUT_SECONDS.observe(time.perf_counter() - started)
            if request.finished or getattr(request, "_disconnected", False):
                return
            data = b"" if text is None else (text + "\n").encode()
            request.setResponseCode(code)
            if data:
                request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.setHeader(b"Content-Length", str(len(data)).encode())
            for name, value in headers:
                request.setHeader(name, value)
            if data:
                request.write(data)
            request.finish()

        self._pool.callInThread(work)
