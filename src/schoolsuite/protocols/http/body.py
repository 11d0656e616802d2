"""Request bodies of the HTTPS site: never on disk in plaintext, checked before they are read.

Twisted's ``server.Request`` spools any body over 100 KB to a plaintext
temporary file and looks at nothing until the whole body has arrived. The
site's :class:`~schoolsuite.protocols.http.site.Request` hands its body
handling to :class:`BodyControl`, which works like this:

1. When the headers are complete (``gotLength``) the mount that the path
   names may have a *gate* (``resource.body_gate``): a function of the
   :class:`RequestHead` that returns (or fires a Deferred with) an
   :class:`Accept` or a :class:`Reject`. While the gate decides (it may
   check a password off the reactor thread), the connection is paused, so
   the body waits in the kernel's socket buffer, not in our memory.
   Mounts without a gate get the site's size limit only.
2. A :class:`Reject` (401, 413, 507, ...) is answered at once. If the body
   is still to come, the answer says ``Connection: close``; what the client
   keeps sending is discarded (never stored) for a short grace time so that
   it can read the answer, then the connection is closed (RFC 9112 §9.6).
3. An :class:`Accept` with ``stream=True`` starts the application at once
   and feeds it the body through a bounded :class:`BodyPipe` (back-pressure
   by pausing the connection), so an upload streams into sealed chunks.
   Otherwise the body goes to a :class:`SealedSpool`: in memory while small,
   beyond that in an anonymous temporary file encrypted with AES-256-GCM
   under a random key that exists only in this process's memory.
4. ``Expect: 100-continue`` (RFC 9110 §10.1.1) is answered only after the
   gate accepted, never before.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.abstract import FileDescriptor
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from ...storage.spool import SealedSpool

log = Logger(namespace="schoolsuite.http.body")



@dataclass(frozen=True)
class BodyLimits:
    """Site-wide limits on request bodies (a gate may set its own maximum)."""

    memory_max: int = 1 << 20  # bodies up to this stay in memory
    max_body: int = 100 << 20  # 413 above this unless a gate allows more
    linger_seconds: float = 2.0  # discard time after an early answer
    linger_bytes: int = 16 << 20  # ... or this many discarded bytes
    stream_high_water: int = 4 << 20  # pause the client above this many buffered bytes
    stream_read_size: int = 256 << 10  # socket reads while a body streams (Twisted's default: 64 KiB)
    body_idle_seconds: float = 120.0  # a streamed body that stalls this long is cut off
    spool_dir: str | None = None  # None: the system temp dir


@dataclass(frozen=True)
class RequestHead:
    """What a gate sees: the request line and headers, before any body byte."""

    method: bytes
    path: bytes
    headers: Headers
    length: int | None  # None: chunked (unknown until the end)
    client: str
    secure: bool


@dataclass(frozen=True)
class Accept:
    """Read the body (at most ``max_body`` bytes; None: the site's limit)."""

    max_body: int | None = None
    stream: bool = False
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reject:
    """Answer now with this status; the body is never stored."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""


Gate = Callable[[RequestHead], "Accept | Reject | defer.Deferred[Accept | Reject]"]

REASONS = {400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 413: b"Content Too Large",
           500: b"Internal Server Error", 503: b"Service Unavailable", 507: b"Insufficient Storage"}


def too_large(limit: int) -> Reject:
    """RFC 9110 §15.5.14: the body is larger than this server accepts."""
    return Reject(413, ((b"Content-Type", b"text/plain; charset=utf-8"),),
                  f"request body larger than {limit} bytes\n".encode())


class BodyClosed(IOError):
    """The client went away (or sent too much) before the body was complete."""


class BodyPipe:
    """The body of a streamed request: fed on the reactor, read by the application's thread.

    At most about ``high_water`` bytes wait here: above that the connection
    is paused (``pause``), and it is resumed (``resume``, from the reading
    thread via the reactor) once the reader has taken them below half.
    """

    def __init__(self, reactor: Any, pause: Callable[[], None], resume: Callable[[], None],
                 high_water: int, idle_seconds: float = 120.0, on_idle: Callable[[], None] | None = None) -> None:
        self._reactor = reactor
        self._pause, self._resume = pause, resume
        self._high = high_water
        self._idle = idle_seconds
        self._on_idle = on_idle
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._cond = threading.Condition()
        self._eof = False
        self._error: str | None = None
        self._paused = False
        self._wanted: int | None = None  # bytes the waiting reader needs before it is woken (None: none waits)
        self.received = 0

    # -- reactor side -------------------------------------------------------

    def feed(self, data: bytes) -> None:
        with self._cond:
            if self._error is not None:
                return
            self._chunks.append(data)
            self._buffered += len(data)
            self.received += len(data)
            over = self._buffered > self._high
            if self._wanted is not None and self._buffered >= self._wanted:
                self._cond.notify_all()  # not for every piece: the reader waits for a block's worth
        if over and not self._paused:
            self._paused = True
            self._pause()

    def finish(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def fail(self, reason: str) -> None:
        with self._cond:
            if not self._eof:
                self._error = reason
            self._chunks.clear()
            self._buffered = 0
            self._cond.notify_all()

    def _maybe_resume(self) -> None:
        if self._paused and self._buffered <= self._high // 2:
            self._paused = False
            self._resume()

    # -- reader side (the application's thread) -----------------------------

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all, if negative); blocks until enough is there or the end.

        "Enough" is ``size`` or half the high-water mark, whichever is less, so
        a reader never waits for bytes that back-pressure holds back.
        """
        want = None if size is None or size < 0 else size
        enough = None if want is None else min(want, max(1, self._high // 2))
        with self._cond:
            while True:
                if self._error is not None:
                    raise BodyClosed(self._error)
                if self._eof or (enough is not None and self._buffered >= enough):
                    break
                before = self.received
                self._wanted = 1 if enough is None else enough  # (reading to the end: woken by finish)
                self._cond.wait(self._idle)
                self._wanted = None
                if self.received == before and not self._eof and self._error is None:
                    # A client that stops sending must not hold a worker thread forever.
                    self._error = "request body timed out"
                    if self._on_idle is not None:
                        self._reactor.callFromThread(self._on_idle)
            out: list[bytes] = []
            got = 0
            while self._chunks and (want is None or got < want):
                chunk = self._chunks.popleft()
                if want is not None and got + len(chunk) > want:
                    self._chunks.appendleft(chunk[want - got:])
                    chunk = chunk[:want - got]
                out.append(chunk)
                got += len(chunk)
            self._buffered -= got
            low = self._paused and self._buffered <= self._high // 2
        if low:
            self._reactor.callFromThread(self._maybe_resume)
        return b"".join(out)

    def readline(self, size: int | None = -1) -> bytes:
        out = bytearray()
        while size is None or size < 0 or len(out) < size:
            byte = self.read(1)
            if not byte:
                break
            out += byte
            if byte == b"\n":
                break
        return bytes(out)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.readline, b"")

    # Twisted's requestReceived asks where the body ends and rewinds it.
    def tell(self) -> int:
        return 0

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def close(self) -> None:
        self.fail("closed")


_DECIDING, _STORING, _STREAMING, _REJECTED, _DONE = range(5)


class BodyControl:
    """The body of one request: gate, then store, stream or discard it (see module doc)."""

    def __init__(self, request: Any, limits: BodyLimits, gate: Gate | None, reactor: Any) -> None:
        self.request = request
        self.limits = limits
        self._gate = gate
        self._reactor = reactor
        self.state = _DECIDING
        self._early: list[bytes] = []  # bytes that came while the gate decided
        self._received: tuple[bytes, bytes, bytes] | None = None  # request line, once complete
        self._line: tuple[bytes, bytes, bytes] = (b"", b"", b"")
        self._length: int | None = None
        self._expect = False
        self._paused = False
        self._max = limits.max_body
        self._count = 0
        self._linger: Any = None
        self.rejection: Reject | None = None
        self.answered_raw = False
        self.context: dict[str, Any] = {}
        self.pipe: BodyPipe | None = None
        self.spool: SealedSpool | None = None

    # -- called by the Request ----------------------------------------------

    def begin(self, length: int | None) -> None:
        req, channel = self.request, self.request.channel
        self._length = length
        self._line = (getattr(channel, "_command", b""), getattr(channel, "_path", b""),
                      getattr(channel, "_version", b"HTTP/1.1"))
        expect = req.requestHeaders.getRawHeaders(b"expect")
        if expect:
            # Answered by us once the gate accepts (Twisted would send 100 right away).
            self._expect = expect[0].lower() == b"100-continue" and self._line[2] == b"HTTP/1.1"
            req.requestHeaders.removeHeader(b"expect")
        req.content = io.BytesIO()  # placeholder until decided
        peer = getattr(getattr(channel, "transport", None), "getPeer", lambda: None)()
        head = RequestHead(self._line[0], self._line[1], req.requestHeaders, length,
                           getattr(peer, "host", "?"), bool(req.isSecure()))
        if self._gate is None:
            d = defer.succeed(Accept())
        else:
            d = defer.maybeDeferred(self._gate, head)
        if not d.called:
            self._pause()
        d.addCallbacks(self._decided, self._gate_failed)

    def chunk(self, data: bytes) -> None:
        if self.state == _DECIDING:
            self._early.append(data)
            self._count += len(data)
        elif self.state == _STORING:
            self._count += len(data)
            if self._count > self._max:
                self._reject_midway(too_large(self._max))
                return
            self.request.content.write(data)
        elif self.state == _STREAMING:
            self._count += len(data)
            if self._count > self._max:
                assert self.pipe is not None
                self.pipe.fail("request body too large")
                self._reject_midway(too_large(self._max))
                return
            assert self.pipe is not None
            self.pipe.feed(data)
        elif self.state == _REJECTED:
            self._count += len(data)
            if self._count > self.limits.linger_bytes:
                self._close()

    def complete(self, command: bytes, path: bytes, version: bytes) -> bool:
        """The whole body is in. True if the request should be processed now."""
        if self.state == _DECIDING:
            self._received = (command, path, version)
            return False
        if self.state == _STREAMING:
            assert self.pipe is not None
            self.pipe.finish()
            self.state = _DONE
            self._socket_reads(None)
            return False  # already being processed
        if self.state == _REJECTED:
            self._close()
            return False
        if self.state == _STORING:
            self.state = _DONE
        return True

    def _socket_reads(self, size: int | None) -> None:
        """Read the socket in pieces of ``size`` bytes while a body streams (None: the default again).

        Twisted reads 64 KiB at a time; a large upload then costs a trip
        through the reactor, the TLS layer and the HTTP parser per 64 KiB.
        """
        transport = getattr(self.request.channel, "transport", None)
        for _ in range(4):  # the TCP connection, under the TLS layer and wrappers if there are any
            if transport is None or isinstance(transport, FileDescriptor):
                break
            transport = transport.__dict__.get("transport")  # (wrappers forward attribute reads)
        if not isinstance(transport, FileDescriptor):
            return
        if size is None:
            transport.__dict__.pop("bufferSize", None)
        else:
            transport.bufferSize = size

    def lost(self) -> None:
        if self.pipe is not None:
            self.pipe.fail("connection lost")
        if self._linger is not None and self._linger.active():
            self._linger.cancel()

    @property
    def body_pending(self) -> bool:
        """True while the client may still be sending this request's body."""
        return self.state in (_DECIDING, _STREAMING, _REJECTED)

    # -- decisions ----------------------------------------------------------

    def _gate_failed(self, failure: Any) -> None:
        log.failure("body gate failed", failure)
        self._decided(Reject(500, ((b"Content-Type", b"text/plain; charset=utf-8"),), b"server error\n"))

    def _decided(self, decision: Accept | Reject) -> None:
        if self.request.channel is None or getattr(self.request, "_disconnected", False):
            return
        if isinstance(decision, Accept):
            self.context = dict(decision.context)
            if decision.max_body is not None:
                self._max = decision.max_body
            if self._length is not None and self._length > self._max:
                decision = too_large(self._max)
        if isinstance(decision, Reject):
            self.rejection = decision
            if self._received is not None or self._length == 0:
                # Body complete (or none): answer through the ordinary request path.
                self.state = _DONE
                self._resume()
                self._process_received()
                return
            self._reject_midway(decision)
            return
        early, self._early = b"".join(self._early), []
        if self._received is not None or self._length == 0:
            self.state = _DONE
            self.request.content = io.BytesIO(early)
            self.request.content.seek(0, 2)
            self._resume()
            self._process_received()
            return
        if self._expect:
            self.request.channel.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if decision.stream:
            self.state = _STREAMING
            self.pipe = BodyPipe(self._reactor, self._pause, self._resume, self.limits.stream_high_water,
                                 self.limits.body_idle_seconds, self._close)
            self.request.content = self.pipe
            if early:
                self.pipe.feed(early)
            self._socket_reads(self.limits.stream_read_size)
            self._resume()
            self.request.start_early(*self._line)
            return
        self.state = _STORING
        known_small = self._length is not None and self._length <= self.limits.memory_max
        self.spool = None if known_small else SealedSpool(self.limits.memory_max, self.limits.spool_dir)
        self.request.content = io.BytesIO() if known_small else self.spool
        if early:
            self.request.content.write(early)
        self._resume()

    def _process_received(self) -> None:
        if self._received is not None:
            self.request.process_received(*self._received)

    def _reject_midway(self, reject: Reject) -> None:
        """Answer while the body is still coming, then discard it and close (RFC 9112 §9.6)."""
        self.state = _REJECTED
        self.rejection = reject
        self.answered_raw = True  # whatever the application writes later is dropped
        self._early = []
        content = self.request.content
        if isinstance(content, SealedSpool):
            content.close()
        self.request.content = io.BytesIO()
        self.request.channel.transport.write(raw_response(reject))
        if self._expect and not self._count:
            self._close()  # RFC 9110 §10.1.1: the client waits for us and sends nothing
            return
        self._resume()
        self._linger = self._reactor.callLater(self.limits.linger_seconds, self._close)

    def _close(self) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self.state = _DONE
        channel = self.request.channel
        if channel is not None and channel.transport is not None:
            channel.transport.pauseProducing() if hasattr(channel.transport, "pauseProducing") else None
            channel.transport.loseConnection()

    def _pause(self) -> None:
        channel = self.request.channel
        if channel is not None and not self._paused:
            self._paused = True
            channel._networkProducer.pauseProducing()

    def _resume(self) -> None:
        channel = self.request.channel
        if channel is not None and self._paused:
            self._paused = False
            channel._networkProducer.resumeProducing()


def raw_response(reject: Reject) -> bytes:
    """A complete HTTP/1.1 answer that closes the connection (written before the body was read)."""
    from .site import SECURITY_HEADERS, SERVER_NAME

    reason = REASONS.get(reject.status, b"Error")
    lines = [b"HTTP/1.1 %d %s" % (reject.status, reason), b"Server: " + SERVER_NAME,
             b"Content-Length: %d" % len(reject.body), b"Connection: close"]
    lines += [name + b": " + value for name, value in SECURITY_HEADERS.items()]
    lines += [name + b": " + value for name, value in reject.headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + reject.body
