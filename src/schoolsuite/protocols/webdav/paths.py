"""The grammar of ``/files/`` paths and ``Destination`` headers: raw bytes → checked names.

Pure functions, no I/O. Every spelling of a traversal is refused here, once,
before WsgiDAV sees the request: ``..`` and ``.`` segments, their
percent-encoded forms (``%2e%2e``), encoded slashes and backslashes
(``%2f``, ``%5c``), NUL, bytes that are not UTF-8, and ``Destination`` URLs
that leave the site or the owner's home. Names come out NFC-normalised
(macOS sends NFD), so that the same name is the same file.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes, urlsplit

MOUNT = "/files"
_FORBIDDEN_CHARS = ("/", "\\", "\x00")
#: A segment whose every "%" starts a two-digit hex escape.
_ESCAPES = re.compile(rb"(?:[^%]|%[0-9A-Fa-f]{2})*")
#: Characters no name may hold once decoded: slash, backslash, NUL, other controls, DEL.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f/\\\\]")


class PathError(ValueError):
    """A path refused: ``status`` is 400 (malformed) or 403 (outside what the user may reach)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class FilesPath:
    """A request path below ``/files/``: the home's owner and the names below it."""

    owner: str | None  # the first segment (an address); None for /files/ itself
    names: tuple[str, ...]
    trailing_slash: bool

    def wsgi_path(self) -> str:
        """PATH_INFO for WsgiDAV (PEP 3333: the UTF-8 bytes as a latin-1 string)."""
        parts = ([self.owner] if self.owner is not None else []) + list(self.names)
        path = "/" + "/".join(parts)
        if self.trailing_slash and parts:
            path += "/"
        return path.encode("utf-8").decode("latin-1")

    def url(self) -> str:
        """The percent-encoded absolute path of this location (RFC 3986 §3.3)."""
        parts = ([self.owner] if self.owner is not None else []) + list(self.names)
        path = MOUNT + "/" + "/".join(quote(p, safe="@!$&'()*+,;=:") for p in parts)
        if self.trailing_slash and parts:
            path += "/"
        return path


def _pct_decode(segment: bytes) -> bytes:
    """RFC 3986 §2.1 percent-decoding that refuses malformed escapes."""
    if b"%" not in segment:
        return segment
    if not _ESCAPES.fullmatch(segment):
        raise PathError(400, "malformed percent-encoding")
    return unquote_to_bytes(segment)


def segment_name(raw: bytes) -> str:
    """One path segment: decoded, checked, NFC."""
    if b"\\" in raw:
        raise PathError(400, "backslash in path")
    decoded = _pct_decode(raw)
    try:
        name = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise PathError(400, "path is not UTF-8") from None
    bad = _FORBIDDEN.search(name)
    if bad is not None:
        if bad.group() in _FORBIDDEN_CHARS:
            raise PathError(400, "encoded slash, backslash or NUL in path")
        raise PathError(400, "control character in path")
    if not name.isascii():
        name = unicodedata.normalize("NFC", name)
    if name in (".", ".."):
        raise PathError(400, "dot segment in path")
    if len(name.encode()) > 255:
        raise PathError(400, "name longer than 255 bytes")
    return name


def parse_request_path(raw: bytes) -> FilesPath:
    """The path of a request to ``/files/...`` (query ignored); :class:`PathError` if refused."""
    path = raw.split(b"?", 1)[0]
    if b"#" in path:
        raise PathError(400, "fragment in request target")  # RFC 9112 §3.2: none allowed
    if not path.startswith(b"/"):
        raise PathError(400, "path must be absolute")
    segments = path.split(b"/")[1:]
    if not segments or segment_name(segments[0]) != MOUNT[1:]:
        raise PathError(400, "not a files path")
    rest = segments[1:]
    trailing = bool(rest) and rest[-1] == b""
    names = [segment_name(s) for s in rest if s != b""]
    if not names:
        return FilesPath(None, (), True)
    return FilesPath(names[0], tuple(names[1:]), trailing)


def parse_destination(value: bytes, host: bytes | None, scheme: str = "https") -> FilesPath:
    """RFC 4918 §10.3: the ``Destination`` of a COPY or MOVE, which must stay on this site.

    An absolute URI must name this scheme and host; the path is checked like
    a request path.
    """
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        raise PathError(400, "Destination is not ASCII") from None
    if not text:
        raise PathError(400, "empty Destination")
    parts = urlsplit(text)
    if parts.scheme or parts.netloc:
        if parts.scheme.lower() != scheme or not host or parts.netloc.lower() != host.decode("latin-1").lower():
            raise PathError(403, "Destination on another site")
    if parts.query or parts.fragment:
        raise PathError(400, "query or fragment in Destination")
    if not parts.path.startswith("/"):
        raise PathError(400, "Destination path must be absolute")
    return parse_request_path(parts.path.encode("ascii"))
