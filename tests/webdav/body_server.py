"""A site with test mounts for the request-body tests (run as a subprocess: PORT).

``/gated/``: a gate that wants ``Authorization: Bearer good`` (401), refuses
``X-Quota: over`` (507), allows 1 MiB (413) and streams; decided after a short
delay so that the connection is paused meanwhile. ``/early/``: the same gate, but answers without reading the body. ``/plain/``: no gate
(spooled). Both answer ``LENGTH SHA256`` of the body they read.
"""

from __future__ import annotations

import hashlib
import sys

from twisted.internet import reactor, task, threads
from twisted.web import resource, server

from schoolsuite.protocols.http.body import Accept, BodyLimits, Reject
from schoolsuite.protocols.http.site import Root, make_site


def digest(request: server.Request) -> bytes:
    h, n = hashlib.sha256(), 0
    while True:
        piece = request.content.read(65536)
        if not piece:
            break
        h.update(piece)
        n += len(piece)
    return b"%d %s\n" % (n, h.hexdigest().encode())


class Echo(resource.Resource):
    isLeaf = True

    def render(self, request: server.Request) -> object:
        # How many bytes the connection reads from its socket at a time (raised while a body streams).
        request.setHeader(b"X-Read-Size", b"%d" % request.channel.transport.bufferSize)
        if isinstance(request.content, __import__("io").BytesIO) or not hasattr(request.content, "feed"):
            return digest(request)
        d = threads.deferToThread(digest, request)  # a streamed body is read off the reactor
        d.addCallback(lambda body: (request.setHeader(b"Content-Length", b"%d" % len(body)),
                                    request.write(body), request.finish()))
        return server.NOT_DONE_YET


def gate(head):  # type: ignore[no-untyped-def]
    def decide():  # type: ignore[no-untyped-def]
        if head.headers.getRawHeaders(b"authorization") != [b"Bearer good"]:
            return Reject(401, ((b"WWW-Authenticate", b'Bearer realm="test"'),), b"who are you\n")
        if head.headers.getRawHeaders(b"x-quota") == [b"over"]:
            return Reject(507, (), b"full\n")
        return Accept(max_body=1 << 20, stream=True, context={"who": "good"})
    return task.deferLater(reactor, 0.05, decide)


class Gated(Echo):
    body_gate = staticmethod(gate)


class Early(resource.Resource):
    """Answers at once without reading the (streamed) body."""

    isLeaf = True
    body_gate = staticmethod(gate)

    def render(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Length", b"6")
        return b"early\n"


def main() -> None:
    root = Root()
    root.mount(b"gated", Gated())
    root.mount(b"plain", Echo())
    root.mount(b"early", Early())
    site = make_site(root, BodyLimits(memory_max=64 * 1024, max_body=64 << 20, linger_seconds=1.0,
                                      body_idle_seconds=1.0))
    port = reactor.listenTCP(int(sys.argv[1]), site, interface="127.0.0.1")
    print("listening", port.getHost().port, flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
