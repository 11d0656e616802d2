"""The HTTPS site's root resource and request class.

Mount points (interfaces.md): ``/dav/`` (CalDAV/CardDAV), ``/files/`` (WebDAV),
``/admin/`` (provisioning API) are attached with ``root.putChild`` as they land.
"""

from __future__ import annotations

from twisted.web import resource, server

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
    """A request that names the server without a version and sends security headers."""

    def setHeader(self, name: bytes | str, value: bytes | str) -> None:
        """Replace Twisted's ``Server: TwistedWeb/<version>`` with a bare name."""
        if (name.encode() if isinstance(name, str) else name).lower() == b"server":
            value = SERVER_NAME
        super().setHeader(name, value)

    def process(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.setHeader(name, value)
        super().process()


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
        self.putChild(b"", Index())
        well_known = resource.Resource()
        # RFC 6764 §5: /.well-known/caldav and /carddav point at the DAV root.
        well_known.putChild(b"caldav", PermanentRedirect(b"/dav/"))
        well_known.putChild(b"carddav", PermanentRedirect(b"/dav/"))
        self.putChild(b".well-known", well_known)

    def mount(self, name: bytes, child: resource.IResource) -> None:
        """Attach an application (``b"dav"``, ``b"files"``, ``b"admin"``) that answers OPTIONS itself."""
        self.mounts.add(name)
        self.putChild(name, child)

    def getChildWithDefault(self, path: bytes, request: server.Request) -> resource.IResource:
        if request.method == b"OPTIONS" and path not in self.mounts:
            return Options()
        return super().getChildWithDefault(path, request)


def make_site(root: resource.Resource | None = None) -> server.Site:
    """A Site over ``root`` (default: a fresh :class:`Root`) that never shows tracebacks."""
    site = server.Site(root if root is not None else Root(), requestFactory=Request)
    site.displayTracebacks = False
    site.noisy = False
    return site
