"""Rendering IMAP data on the wire: strings, lists, ENVELOPE, BODYSTRUCTURE (RFC 3501 §7.4.2, §9)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ...storage import mime
from .grammar import mutf7_encode

_QUOTABLE = frozenset(range(0x20, 0x7F)) | {0x09}


def string(value: bytes | str | None) -> bytes:
    """An nstring: NIL, a quoted string, or a literal when it cannot be quoted."""
    if value is None:
        return b"NIL"
    if isinstance(value, str):
        value = value.encode("latin-1", "replace") if all(ord(c) < 256 for c in value) else value.encode("utf-8")
    if len(value) < 1024 and all(c in _QUOTABLE for c in value) and b"\t" not in value:
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(value) + value


def astring(value: str) -> bytes:
    raw = value.encode("utf-8")
    if raw and all(c in _QUOTABLE and c not in b'(){ %*"\\]' for c in raw):
        return raw
    return string(raw)


def mailbox_name(name: str, utf8: bool = False) -> bytes:
    """RFC 3501 §5.1.3 modified UTF-7, or UTF-8 under UTF8=ACCEPT (RFC 6855)."""
    if utf8:  # RFC 6855 §3: UTF-8 in quoted strings once UTF8=ACCEPT is enabled
        raw = name.encode("utf-8", "surrogateescape")
        if b"\r" not in raw and b"\n" not in raw and b"\x00" not in raw:
            return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        return string(raw)
    encoded = mutf7_encode(name)
    return string(encoded)


def paren(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def number_list(numbers: Iterable[int]) -> bytes:
    return b" ".join(b"%d" % n for n in numbers)


def sequence_set(numbers: Iterable[int]) -> bytes:
    """A compact sequence set (``1:3,7``) of ascending numbers."""
    out: list[bytes] = []
    start = prev = None
    for n in numbers:
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            out.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
        start = prev = n
    if start is not None:
        out.append(b"%d" % start if start == prev else b"%d:%d" % (start, prev))
    return b",".join(out)


_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")


def internal_date(seconds: int) -> bytes:
    """RFC 3501 ``date-time``: ``"dd-Mon-yyyy hh:mm:ss +0000"``."""
    t = time.gmtime(seconds)
    return b'"%2d-%s-%04d %02d:%02d:%02d +0000"' % (t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour,
                                                     t.tm_min, t.tm_sec)


def _addresses(value: Any) -> bytes:
    if not value:
        return b"NIL"
    return paren(paren(string(x) for x in addr) for addr in value)


def envelope(env: list[Any] | None) -> bytes:
    """RFC 3501 §7.4.2 ENVELOPE from the stored fields."""
    if env is None:
        env = [None] * 10
    out = []
    for i, value in enumerate(env):
        if 2 <= i <= 7:
            out.append(_addresses(value))
        else:
            out.append(string(value))
    return paren(out)


def _params(params: list[list[str]]) -> bytes:
    if not params:
        return b"NIL"
    return paren(b"%s %s" % (string(k), string(v)) for k, v in params)


def _disposition(e: mime.Entity) -> bytes:
    if not e.disposition:
        return b"NIL"
    return paren([string(e.disposition[0]), _params(e.disposition[1])])


def _language(e: mime.Entity) -> bytes:
    if not e.language:
        return b"NIL"
    if len(e.language) == 1:
        return string(e.language[0])
    return paren(string(x) for x in e.language)


def bodystructure(e: mime.Entity, extended: bool = True) -> bytes:
    """RFC 3501 §7.4.2 BODYSTRUCTURE (``extended``) or BODY."""
    if e.multipart:
        out = b"".join(bodystructure(p, extended) for p in e.parts)
        out += b" " + string(e.subtype)
        if extended:
            out += b" " + b" ".join([_params(e.params), _disposition(e), _language(e), string(e.location)])
        return b"(" + out + b")"
    fields = [string(e.type), string(e.subtype), _params(e.params), string(e.id), string(e.description),
              string(e.encoding or "7BIT"), b"%d" % e.body_size]
    kind = e.type.lower()
    if kind == "message" and e.message is not None and e.subtype.lower() in ("rfc822", "global"):
        fields += [envelope(e.message.envelope), bodystructure(e.message, extended), b"%d" % e.lines]
    elif kind == "text":
        fields.append(b"%d" % e.lines)
    if extended:
        fields += [string(e.md5), _disposition(e), _language(e), string(e.location)]
    return paren(fields)
