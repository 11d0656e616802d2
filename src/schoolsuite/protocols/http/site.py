"""The HTTPS site's root resource and request class.

Mount points (interfaces.md): ``/dav/`` (CalDAV/CardDAV), ``/files/`` (WebDAV),
``/admin/`` (provisioning API) are attached with ``root.putChild`` as they land.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.web import resource, server

from .body import BodyControl, BodyLimits, Reject

SERVER_NAME = b"schoolsuite"  # never a version number (no fingerprinting help)

SECURITY_HEADERS = {
    # RFC 6797: clients must keep using HTTPS for a year.
    b"Strict-Transport-Security": b"max-age=31536000",
    b"X-Content-Type-Options": b"nosniff",
    b"X-Frame-Options": b"DENY",
    b"Referrer-Policy": b"no-referrer",
}

INDEX_HTML = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>schoolsuite</title></head>
<body><h1>schoolsuite</h1>
<p>Mail, calendars, contacts and files for this school. Set up your mail, calendar and
contacts apps with your school address; they find everything else themselves.</p>
</body></html>
"""


class Request(server.Request):
    """A request that names the server without a version and sends security headers.

    Its body is handled by :class:`~schoolsuite.protocols.http.body.BodyControl`:
    never spooled to disk in plaintext, and checked by the mount's gate (auth,
    quota, size) from the headers before any of it is read.
    """

    body: BodyControl | None = None

    def setHeader(self, name: bytes | str, value: bytes | str) -> None:
        """Replace Twisted's ``Server: TwistedWeb/<version>`` with a bare name."""
        if (name.encode() if isinstance(name, str) else name).lower() == b"server":
            value = SERVER_NAME
        super().setHeader(name, value)

    # -- the body (body.py) ---------------------------------------------------

    def gotLength(self, length: int | None) -> None:
        from twisted.internet import reactor

        site = self.channel.site
        limits = getattr(site, "body_limits", None) or BodyLimits()
        root = site.resource
        path = (getattr(self.channel, "_path", b"") or b"").split(b"?", 1)[0]
        # The same unquoting as Twisted's resource traversal, so "/%66iles/" finds the files gate.
        segment = unquote_to_bytes(path[1:].split(b"/", 1)[0]) if path.startswith(b"/") else b""
        gate = root.body_gate(segment) if hasattr(root, "body_gate") else None
        self.body = BodyControl(self, limits, gate, reactor)
        self.body.begin(length)

    def handleContentChunk(self, data: bytes) -> None:
        assert self.body is not None
        self.body.chunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.body is None or self.body.complete(command, path, version):
            super().requestReceived(command, path, version)

    def process_received(self, command: bytes, path: bytes, version: bytes) -> None:
        """Process a request whose body was complete before its gate decided."""
        super().requestReceived(command, path, version)

    def start_early(self, command: bytes, path: bytes, version: bytes) -> None:
        """Process a streamed request now; its body follows through ``self.content``."""
        super().requestReceived(command, path, version)

    @property
    def body_context(self) -> dict[str, Any]:
        """What the mount's gate attached (e.g. the authenticated principal)."""
        return self.body.context if self.body is not None else {}

    def write(self, data: bytes) -> None:
        if self.body is not None and self.body.answered_raw:
            return  # the answer went out before the body was read
        if not self.startedWriting and self.body is not None and self.body.body_pending:
            # Answering before the body is in: the connection cannot be reused (RFC 9112 §9.6).
            self.channel.persistent = False
            self.setHeader(b"Connection", b"close")
        super().write(data)

    def finish(self) -> None:
        if self.body is not None and self.body.answered_raw:
            if self.channel is not None:
                self.channel.loseConnection()
            return
        if self.body is not None and self.body.body_pending and self.channel is not None:
            self.channel.persistent = False
            self.channel._networkProducer.pauseProducing()  # the rest of the body is not read
            decoder = getattr(self.channel, "_transferDecoder", None)
            if decoder is not None:
                # Bytes already in flight must not reach a request the channel no longer has.
                decoder.dataCallback = lambda data: None
                decoder.finishCallback = lambda extra: None
        super().finish()

    def connectionLost(self, reason: Any) -> None:
        if self.body is not None:
            self.body.lost()
        super().connectionLost(reason)

    def process(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.setHeader(name, value)
        rejection = self.body.rejection if self.body is not None else None
        if rejection is not None:
            self._answer(rejection)
            return
        super().process()

    def _answer(self, reject: Reject) -> None:
        self.setResponseCode(reject.status)
        for name, value in reject.headers:
            self.setHeader(name, value)
        self.setHeader(b"Content-Length", str(len(reject.body)).encode())
        self.write(reject.body)
        self.finish()


class Index(resource.Resource):
    """``/``: a small page saying what this server is."""

    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Content-Security-Policy", b"default-src 'none'; frame-ancestors 'none'")
        return INDEX_HTML

    render_HEAD = render_GET


class Options(resource.Resource):
    """OPTIONS on any path not handled by a mount (RFC 9110 §9.3.7)."""

    isLeaf = True
    ALLOW = b"OPTIONS, GET, HEAD"

    def render_OPTIONS(self, request: server.Request) -> bytes:
        request.setHeader(b"Allow", self.ALLOW)
        request.setHeader(b"Content-Length", b"0")
        return b""


class PermanentRedirect(resource.Resource):
    """A 301 to a fixed location (RFC 9110 §15.4.2)."""

    isLeaf = True

    def __init__(self, location: bytes) -> None:
        super().__init__()
        self.location = location

    def render(self, request: server.Request) -> bytes:
        if request.method == b"OPTIONS":
            return Options().render_OPTIONS(request)
        request.setResponseCode(301)
        request.setHeader(b"Location", self.location)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"moved to " + self.location + b"\n"


class Root(resource.Resource):
    """The site root: index, OPTIONS anywhere, well-known, and the mounts."""

    def __init__(self) -> None:
        super().__init__()
        self.mounts: set[bytes] = set()
        # Methods a mount answers on "/" itself (DAV discovery: PROPFIND, OPTIONS; RFC 6764 §6).
        self.root_methods: dict[bytes, resource.IResource] = {}
        self.putChild(b"", Index())
        well_known = resource.Resource()
        # RFC 6764 §5: /.well-known/caldav and /carddav point at the DAV root.
        well_known.putChild(b"caldav", PermanentRedirect(b"/dav/"))
        well_known.putChild(b"carddav", PermanentRedirect(b"/dav/"))
        self.putChild(b".well-known", well_known)

    def mount(self, name: bytes, child: resource.IResource) -> None:
        """Attach an application (``b"dav"``, ``b"files"``, ``b"admin"``) that answers OPTIONS itself."""
        parent, _, leaf = name.rpartition(b"/")
        if parent:  # e.g. b".well-known/autoconfig": a child of an existing resource (autoconfig.py)
            self.children[parent].putChild(leaf, child)
            return
        self.mounts.add(name)
        self.putChild(name, child)
        self.root_methods.update(getattr(child, "root_methods", {}))

    def body_gate(self, segment: bytes) -> Any:
        """The body gate (see body.py) of the mount named ``segment``, if it has one."""
        return getattr(self.children.get(segment), "body_gate", None) if segment in self.mounts else None

    def getChildWithDefault(self, path: bytes, request: server.Request) -> resource.IResource:
        if path == b"" and not request.postpath and request.method in self.root_methods:
            return self.root_methods[request.method]
        if request.method == b"OPTIONS" and path not in self.mounts:
            return Options()
        return super().getChildWithDefault(path, request)


def private_log_line(timestamp: str, request: server.Request) -> str:
    """An access-log line without the path below the mount: file, folder and user names stay out of logs."""
    path = (request.uri or b"").split(b"?", 1)[0]
    mount = path.split(b"/")[1] if path.count(b"/") >= 1 else b""
    shown = (b"/" + mount + (b"/..." if path.rstrip(b"/") != b"/" + mount else b"/")) if mount else b"/"
    ip = getattr(request.getClientAddress(), "host", "-")
    method = request.method.decode("ascii", "replace")
    length = request.sentLength or "-"
    return (f'"{ip}" - - {timestamp} "{method} {shown.decode("latin-1")} '
            f'{request.clientproto.decode("ascii", "replace")}" {request.code} {length}')


def make_site(root: resource.Resource | None = None, limits: BodyLimits | None = None) -> server.Site:
    """A Site over ``root`` (default: a fresh :class:`Root`) that never shows tracebacks nor logs file names."""
    site = server.Site(root if root is not None else Root(), requestFactory=Request, logFormatter=private_log_line)
    site.body_limits = limits or BodyLimits()
    site.displayTracebacks = False
    site.noisy = False
    return site
