"""WSGI middleware between Twisted's WSGIResource and Radicale.

It fixes what Radicale does not expect from this host, enforces our limits
and maps errors to wire replies in one place (:func:`error_response`):

- PEP 3333 hands PATH_INFO over as latin-1; Radicale expects text, so the
  path is re-decoded as UTF-8 (non-ASCII hrefs and UIDs), 400 if it is not;
- a chunked request body (no Content-Length; Twisted has already de-chunked
  it) is measured and handed on with a Content-Length: Radicale would answer
  a chunked PUT with 400;
- bodies above the limits get 413 before Radicale reads them, with the RFC
  4791 §5.3.2.1 / RFC 6352 §6.3.2.1 ``max-resource-size`` precondition;
- a calendar object or vCard Radicale could not parse gets its 400 with the
  ``valid-calendar-data`` / ``valid-address-data`` precondition element
  (RFC 4791 §5.3.2.1, RFC 6352 §6.3.2.1) instead of bare text;
- a write Radicale refused for want of rights (a read-only generated address
  book, another user's home) gets its 403 with the RFC 3744 §7.1.1
  ``need-privileges`` precondition naming the resource and privilege;
- headers a reverse proxy would set (X-Script-Name, X-Remote-User, ...) are
  dropped: no client may change our hrefs or claim a user;
- a server fault (5xx from Radicale, or an exception here) is logged with an
  incident id, and the client sees the id, never a traceback or a path;
- requests are counted by method and status, and timed.
"""

from __future__ import annotations

import io
import os
import time
import urllib.parse
from xml.sax.saxutils import escape as xml_escape
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import defusedxml.ElementTree as DefusedET
from radicale.item.filter import time_range_timestamps
from twisted.logger import Logger

from . import metrics as dav_metrics
from .plugin_storage import EXPAND_HINT

log = Logger(namespace="schoolsuite.dav")

_DROP_HEADERS = ("HTTP_X_SCRIPT_NAME", "HTTP_X_REMOTE_USER", "HTTP_REMOTE_USER", "HTTP_X_REMOTE_ADDR",
                 "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PROTO",
                 "HTTP_X_FORWARDED_SERVER", "REMOTE_USER")

_NS = {"C": "urn:ietf:params:xml:ns:caldav", "CR": "urn:ietf:params:xml:ns:carddav"}


@dataclass(frozen=True)
class Limits:
    """Sizes in bytes."""

    max_item_size: int
    max_request_size: int


class DavError(Exception):
    """A request refused before Radicale saw it: status, optional precondition element."""

    def __init__(self, status: int, reason: str, precondition: str | None = None, text: str = "") -> None:
        super().__init__(text or reason)
        self.status, self.reason, self.precondition, self.text = status, reason, precondition, text or reason


def precondition_body(element: str) -> bytes:
    """RFC 4918 §16: ``<D:error>`` holding one precondition element (``C:valid-calendar-data``)."""
    prefix, _, local = element.partition(":")
    ns = _NS[prefix]
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<D:error xmlns:D="DAV:" xmlns:{prefix}="{ns}">'
            f"<{prefix}:{local}/></D:error>\n").encode()


#: RFC 3744 §3: the privilege a refused write needed, and whether it is on the parent (bind/unbind).
_PRIVILEGE = {"PUT": ("write-content", False), "POST": ("bind", False), "PROPPATCH": ("write-properties", False),
              "DELETE": ("unbind", True), "MOVE": ("unbind", True), "MKCOL": ("bind", True),
              "MKCALENDAR": ("bind", True)}


def need_privileges_body(method: str, path: str) -> bytes | None:
    """RFC 3744 §7.1.1: ``<D:error><D:need-privileges>`` for a write refused by rights; None for reads."""
    if method not in _PRIVILEGE:
        return None
    privilege, on_parent = _PRIVILEGE[method]
    href = path.rstrip("/").rpartition("/")[0] + "/" if on_parent else path
    quoted = xml_escape(urllib.parse.quote(href, safe="/@:+,;=!$&'()*~"))
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<D:error xmlns:D="DAV:"><D:need-privileges>'
            f"<D:resource><D:href>{quoted}</D:href><D:privilege><D:{privilege}/></D:privilege></D:resource>"
            f"</D:need-privileges></D:error>\n").encode()


def error_response(error: DavError) -> tuple[str, list[tuple[str, str]], bytes]:
    """The one place refusals become status line, headers and body."""
    if error.precondition:
        body, ctype = precondition_body(error.precondition), "application/xml; charset=utf-8"
    else:
        body, ctype = (error.text + "\n").encode(), "text/plain; charset=utf-8"
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
    return f"{error.status} {error.reason}", headers, body


_CAL = "{urn:ietf:params:xml:ns:caldav}"
_XML_METHODS = frozenset({"PROPFIND", "PROPPATCH", "REPORT", "MKCALENDAR", "MKCOL"})


def expand_window(body: bytes) -> tuple[int, int] | None:
    """The time range of a calendar-query with C:expand (RFC 4791 §9.6.5), when it is the only filter.

    Shape: filter/comp-filter VCALENDAR/comp-filter X/time-range, nothing else; otherwise None.
    """
    if b"expand" not in body or b"calendar-query" not in body:
        return None
    try:
        root = DefusedET.fromstring(body)
    except Exception:
        return None
    if root.tag != _CAL + "calendar-query" or root.find(f".//{_CAL}expand") is None:
        return None
    filters = root.findall(_CAL + "filter")
    if len(filters) != 1 or len(filters[0]) != 1:
        return None
    vcalendar = filters[0][0]
    if vcalendar.tag != _CAL + "comp-filter" or vcalendar.get("name", "").upper() != "VCALENDAR" or len(vcalendar) != 1:
        return None
    component = vcalendar[0]
    if component.tag != _CAL + "comp-filter" or len(component) != 1 or component[0].tag != _CAL + "time-range":
        return None
    try:
        return time_range_timestamps(component[0])
    except Exception:
        return None


def _kind(environ: dict[str, Any]) -> str:
    """"C" for iCalendar, "CR" for vCard, judged by the body's media type or the href."""
    ctype = environ.get("CONTENT_TYPE", "").lower()
    path = environ.get("PATH_INFO", "").lower()
    if "vcard" in ctype or path.endswith(".vcf"):
        return "CR"
    return "C"


class Middleware:
    """Wraps the Radicale application (see the module docstring)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], limits: Limits) -> None:
        self.app = app
        self.limits = limits

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "GET").upper()
        seen: dict[str, str] = {}

        def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"] = status
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        try:
            try:
                self._prepare(environ, method)
            except DavError as error:
                status, headers, body = error_response(error)
                respond(status, headers)
                return [body]
            status_holder: dict[str, Any] = {}

            def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
                status_holder["status"], status_holder["headers"] = status, headers

            body_parts = list(self.app(environ, capture))
            status, headers = status_holder["status"], status_holder["headers"]
            code = int(status.split(" ", 1)[0])
            if code >= 500 and code != 507:  # 507: the collection is full (RFC 4918 §11.5)
                status, headers, body_parts = self._fault(method, status)
            elif code == 400 and method == "PUT":
                # RFC 4791 §5.3.2.1 / RFC 6352 §6.3.2.1: say which precondition failed.
                kind = _kind(environ)
                element = f"{kind}:valid-calendar-data" if kind == "C" else "CR:valid-address-data"
                status, headers, body = error_response(DavError(400, "Bad Request", element))
                body_parts = [body]
            elif code == 403:
                path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
                body = need_privileges_body(method, path)
                if body is not None:
                    headers = [("Content-Type", "application/xml; charset=utf-8"), ("Content-Length", str(len(body)))]
                    body_parts = [body]
            respond(status, headers)
            return body_parts if method != "HEAD" else []
        except Exception:
            status, headers, body_parts = self._fault(method, None)
            respond(status, headers)
            return body_parts
        finally:
            EXPAND_HINT.window = None
            code_text = seen.get("status", "500").split(" ", 1)[0]
            label = dav_metrics.method_label(method)
            dav_metrics.REQUESTS.labels(label, code_text).inc()
            dav_metrics.REQUEST_SECONDS.labels(label).observe(time.perf_counter() - started)

    def _prepare(self, environ: dict[str, Any], method: str) -> None:
        for name in _DROP_HEADERS:
            environ.pop(name, None)
        for key in ("PATH_INFO", "SCRIPT_NAME"):
            try:
                environ[key] = environ.get(key, "").encode("latin-1").decode("utf-8")
            except UnicodeError:
                raise DavError(400, "Bad Request", text="the path is not UTF-8") from None
        # One item per PUT, except a whole-collection import (PUT on the collection's URL).
        item_put = method == "PUT" and not environ.get("PATH_INFO", "").endswith("/")
        limit = self.limits.max_item_size if item_put else self.limits.max_request_size
        length_text = environ.get("CONTENT_LENGTH", "")
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if length_text:
            if not length_text.isdigit():
                raise DavError(400, "Bad Request", text="bad Content-Length")
            length = int(length_text)
        elif chunked:
            # RFC 9112 §7.1: Twisted de-chunked the body already; measure it (up to the limit).
            data = environ["wsgi.input"].read(limit + 1)
            length = len(data)
            environ["wsgi.input"] = io.BytesIO(data)
            environ["CONTENT_LENGTH"] = str(length)
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        else:
            length = 0
        if length > limit:
            element = f"{_kind(environ)}:max-resource-size" if item_put else None
            raise DavError(413, "Content Too Large", element, text="the request body is too large")
        if method == "PUT" and not item_put and length == 0:
            # Radicale would replace the whole collection with an empty one of a guessed type.
            raise DavError(400, "Bad Request", text="an empty body would erase the collection")
        EXPAND_HINT.window = None
        if method in _XML_METHODS and 0 < length:
            data = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(data)
            # No DAV body needs a DTD; defusedxml would refuse it with an error Radicale
            # does not expect (a 500), so refuse it here (RFC 4918 §20.6 on XML entities).
            if b"<!doctype" in data.lower() or b"<!entity" in data.lower():
                raise DavError(400, "Bad Request", text="DTDs and entities are not accepted")
            if method == "REPORT":
                EXPAND_HINT.window = expand_window(data)

    def _fault(self, method: str, status: str | None) -> tuple[str, list[tuple[str, str]], list[bytes]]:
        incident = os.urandom(6).hex()
        log.error("dav server fault: incident={incident} method={method} status={status}",
                  incident=incident, method=dav_metrics.method_label(method), status=status or "exception")
        body = f"internal error; incident {incident}\n".encode()
        return ("500 Internal Server Error",
                [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))], [body])
