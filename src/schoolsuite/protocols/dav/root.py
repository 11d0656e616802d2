"""PROPFIND and OPTIONS on the site root ``/`` for DAV discovery.

Clients given only the server name probe ``/`` (DAVx5 and Thunderbird after
the well-known URIs; RFC 6764 §6 step 4 allows a client to start at the
root). The root is not inside ``/dav/``, so this small handler answers there:
after Basic authentication it names the user's principal
(``current-user-principal``, RFC 5397 §3) and homes (``calendar-home-set``,
RFC 4791 §6.2.1; ``addressbook-home-set``, RFC 6352 §7.1.1), each under
``/dav/``. Everything else about ``/`` stays the site's.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree as ET

import defusedxml.ElementTree as DefusedET
from twisted.web import resource, server

from ...services.auth import AuthFailed

DAV_HEADER = b"1, 2, 3, calendar-access, addressbook, extended-mkcol"
ALLOW = b"OPTIONS, GET, HEAD, PROPFIND"
_D, _C, _CR = "DAV:", "urn:ietf:params:xml:ns:caldav", "urn:ietf:params:xml:ns:carddav"
_DEFAULT_PROPS = ("{DAV:}current-user-principal", "{DAV:}resourcetype")


def _home_href(mount: str, address: str) -> str:
    return f"/{mount}/{quote(address, safe='@')}/"


def _properties(mount: str, address: str) -> dict[str, Any]:
    """Builders of the properties the root knows, by Clark name."""
    home = _home_href(mount, address)

    def href_prop(value: str):  # type: ignore[no-untyped-def]
        def build(el: ET.Element) -> None:
            ET.SubElement(el, f"{{{_D}}}href").text = value
        return build

    def collection(el: ET.Element) -> None:
        ET.SubElement(el, f"{{{_D}}}collection")

    return {
        f"{{{_D}}}current-user-principal": href_prop(home),
        f"{{{_D}}}principal-collection-set": href_prop(f"/{mount}/"),
        f"{{{_C}}}calendar-home-set": href_prop(home),
        f"{{{_CR}}}addressbook-home-set": href_prop(home),
        f"{{{_D}}}resourcetype": collection,
    }


def requested_props(body: bytes) -> list[str] | None:
    """Clark names asked for; None for allprop/empty body; ValueError if not a propfind."""
    if not body.strip():
        return None
    try:
        root = DefusedET.fromstring(body)
    except Exception:
        raise ValueError("malformed XML") from None
    if root.tag != f"{{{_D}}}propfind":
        raise ValueError("not a propfind")
    prop = root.find(f"{{{_D}}}prop")
    if prop is None:
        return None
    return [child.tag for child in prop]


def multistatus(mount: str, address: str, wanted: list[str] | None) -> bytes:
    """RFC 4918 §9.1: one response for ``/`` with found (200) and unknown (404) properties."""
    known = _properties(mount, address)
    names = list(_DEFAULT_PROPS) if wanted is None else wanted
    ms = ET.Element(f"{{{_D}}}multistatus")
    response = ET.SubElement(ms, f"{{{_D}}}response")
    ET.SubElement(response, f"{{{_D}}}href").text = "/"
    for status, group in (("200 OK", [n for n in names if n in known]),
                          ("404 Not Found", [n for n in names if n not in known])):
        if not group:
            continue
        propstat = ET.SubElement(response, f"{{{_D}}}propstat")
        prop = ET.SubElement(propstat, f"{{{_D}}}prop")
        for name in group:
            el = ET.SubElement(prop, name)
            if name in known:
                known[name](el)
        ET.SubElement(propstat, f"{{{_D}}}status").text = f"HTTP/1.1 {status}"
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(ms)


def basic_credentials(request: server.Request) -> tuple[str, str] | None:
    header = request.getHeader(b"authorization") or b""
    scheme, _, value = header.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class RootPropfind(resource.Resource):
    """PROPFIND ``/`` (Depth 0 answered for any depth: the root lists nothing)."""

    isLeaf = True

    def __init__(self, services: Any, mount: str = "dav") -> None:
        super().__init__()
        self._services = services
        self._mount = mount

    def render_PROPFIND(self, request: server.Request) -> Any:
        credentials = basic_credentials(request)
        if credentials is None:
            return self._unauthorized(request)
        try:
            wanted = requested_props(request.content.read() if request.content is not None else b"")
        except ValueError:
            request.setResponseCode(400)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"malformed PROPFIND body\n"
        client = request.getClientAddress()
        d = self._services.auth.authenticate(credentials[0], credentials[1], getattr(client, "host", None), "dav")

        def ok(principal: Any) -> None:
            body = multistatus(self._mount, principal.address, wanted)
            request.setResponseCode(207, b"Multi-Status")
            request.setHeader(b"Content-Type", b"application/xml; charset=utf-8")
            request.setHeader(b"Content-Length", str(len(body)).encode())
            request.write(body)
            request.finish()

        def failed(failure: Any) -> None:
            failure.trap(AuthFailed)
            request.write(self._unauthorized(request))
            request.finish()

        d.addCallbacks(ok, failed)
        d.addErrback(lambda f: request.finish() if not request.finished else None)
        return server.NOT_DONE_YET

    def _unauthorized(self, request: server.Request) -> bytes:
        request.setResponseCode(401)
        request.setHeader(b"WWW-Authenticate", b'Basic realm="schoolsuite", charset="UTF-8"')
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"authentication required\n"


class RootOptions(resource.Resource):
    """OPTIONS ``/``: say that DAV with CalDAV and CardDAV is here (RFC 4791 §5.1)."""

    isLeaf = True

    def render_OPTIONS(self, request: server.Request) -> bytes:
        request.setHeader(b"Allow", ALLOW)
        request.setHeader(b"DAV", DAV_HEADER)
        request.setHeader(b"Content-Length", b"0")
        return b""
