"""Pure operations on message bytes: line-ending checks, header access and header edits.

Messages stay bytes in canonical CRLF form (RFC 5321 §2.3.8); headers are
edited by prepending or appending whole field lines, never by re-serialising
the message (that would break DKIM signatures made upstream).
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable
from dataclasses import dataclass

_HEADER_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")


@dataclass(frozen=True)
class BodyCheck:
    """What a message's bytes contain that the envelope must allow."""

    bare_line_ending: bool  # LF without CR or CR without LF (SMTP smuggling, 2023)
    eight_bit: bool
    nul: bool


def check_bytes(data: bytes) -> BodyCheck:
    """Find bare CR/LF, 8-bit bytes and NULs (RFC 5321 §2.3.8, §4.1.4; RFC 6152)."""
    crlf = data.count(b"\r\n")
    bare = data.count(b"\n") != crlf or data.count(b"\r") != crlf
    eight_bit = not data.isascii()
    return BodyCheck(bare, eight_bit, b"\x00" in data)


def split_header(data: bytes) -> tuple[bytes, bytes]:
    """(header block including its final CRLF, the empty line and body after it)."""
    if data.startswith(b"\r\n"):
        return b"", data
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return (data, b"") if data.endswith(b"\r\n") else (data + b"\r\n", b"")
    return data[: end + 2], data[end + 2 :]


def header_fields(header: bytes) -> list[tuple[str, bytes]]:
    """(lower-case name, raw value with folding) of each field, in order (RFC 5322 §2.2)."""
    return [(name, value) for name, value, _ in _raw_fields(header)]


def get_all(header: bytes, name: str) -> list[str]:
    """Decoded values (UTF-8, unfolded) of every field called ``name``."""
    name = name.lower()
    return [
        _unfold(value) for field_name, value in header_fields(header) if field_name == name
    ]


def _unfold(value: bytes) -> str:
    return re.sub(r"\r\n(?=[ \t])", "", value.decode("utf-8", "replace")).strip()


def from_addresses(header: bytes) -> list[str]:
    """The addresses of every ``From:`` field (RFC 5322 §3.6.2), lower-cased."""
    values = get_all(header, "from")
    return [addr.lower() for _, addr in email.utils.getaddresses(values) if addr]


def from_domain(header: bytes) -> str | None:
    """RFC 7489 §6.6.1: the RFC5322.From domain, or None if there is not exactly one address."""
    values = get_all(header, "from")
    if len(values) != 1:
        return None
    addresses = [a for _, a in email.utils.getaddresses(values) if a]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return None
    return addresses[0].rpartition("@")[2].rstrip(".").lower()


def has_field(header: bytes, name: str) -> bool:
    name = name.lower()
    return any(field_name == name for field_name, _ in header_fields(header))


def prepend(data: bytes, *fields: str) -> bytes:
    """Put header fields before the message (trace fields go on top, RFC 5321 §4.4)."""
    return "".join(fold(f) for f in fields).encode("utf-8") + data


def append_fields(data: bytes, *fields: str) -> bytes:
    """Add header fields at the end of the header block."""
    header, body = split_header(data)
    return header + "".join(fold(f) for f in fields).encode("utf-8") + body


def remove_fields(data: bytes, name: str, keep: Callable[[bytes], bool]) -> bytes:
    """Drop every field called ``name`` whose raw value ``keep`` refuses."""
    header, body = split_header(data)
    name = name.lower()
    out = [raw for field_name, value, raw in _raw_fields(header) if field_name != name or keep(value)]
    return b"".join(raw + b"\r\n" for raw in out) + body


def _raw_fields(header: bytes) -> list[tuple[str, bytes, bytes]]:
    """(lower-case name, value, whole raw field) in order."""
    fields: list[tuple[str, bytes, bytes]] = []
    for line in header.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            name, value, raw = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line, raw + b"\r\n" + line)
            continue
        m = _HEADER_NAME.match(line)
        if m is None:
            fields.append(("", line, line))
        else:
            fields.append((m.group(1).decode("ascii").lower(), line[m.end() :], line))
    return fields


def fold(field: str, width: int = 78) -> str:
    """A field line, folded at spaces (RFC 5322 §2.2.3), ending with CRLF."""
    if len(field) <= width:
        return field + "\r\n"
    lines: list[str] = []
    current = ""
    for word in field.split(" "):
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = "\t" + word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "\r\n".join(lines) + "\r\n"


def dot_unstuff(data: bytes) -> bytes:
    """RFC 5321 §4.5.2: remove the leading dot the client added to lines starting with one."""
    if data.startswith(b".."):
        data = data[1:]
    return data.replace(b"\r\n..", b"\r\n.")
