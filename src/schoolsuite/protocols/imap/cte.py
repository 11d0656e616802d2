"""Content-Transfer-Encoding decoders (RFC 2045 §6) for BINARY (RFC 3516), piece by piece.

A decoder is fed the encoded bytes in pieces of any size and returns what they decode to; ``end()``
returns the rest. The result does not depend on where the pieces were cut, so a part can be decoded
once to learn its decoded size (the literal's length must be announced first) and again to send it,
without ever holding it whole.
"""

from __future__ import annotations

import binascii

_HEX = frozenset(b"0123456789ABCDEFabcdef")


class UndecodableError(ValueError):
    """The content is not valid in its Content-Transfer-Encoding."""


def decode_qp(data: bytes) -> bytes:
    """RFC 2045 §6.7 quoted-printable: trailing blanks dropped, ``=`` at line end joins, CRLF line breaks."""
    out = bytearray()
    lines = data.split(b"\n")
    for n, line in enumerate(lines):
        last = n == len(lines) - 1
        if line.endswith(b"\r"):
            line = line[:-1]
        line = line.rstrip(b" \t")
        soft = line.endswith(b"=")
        if soft:
            line = line[:-1]
        i = 0
        while i < len(line):
            c = line[i]
            if c == 0x3D and i + 2 < len(line) and line[i + 1] in _HEX and line[i + 2] in _HEX:
                out.append(int(line[i + 1 : i + 3], 16))
                i += 3
                continue
            out.append(c)
            i += 1
        if not soft and not last:
            out += b"\r\n"
    return bytes(out)


class Identity:
    """7bit, 8bit, binary: the bytes as they are."""

    def feed(self, data: bytes) -> bytes:
        return data

    def end(self) -> bytes:
        return b""


_B64_DROP = bytes(c for c in range(256)
                  if c not in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


class Base64:
    """RFC 2045 §6.8: characters outside the alphabet are ignored, and the first ``=`` ends the data ("the
    occurrence of any '=' characters may be taken as evidence that the end of the data has been reached");
    a last group of 2 or 3 characters without its padding is decoded as if padded."""

    def __init__(self) -> None:
        self.carry = b""
        self.done = False

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        data = self.carry + data.translate(None, _B64_DROP)
        pad = data.find(b"=")
        if pad >= 0:
            self.done = True
            self.carry = b""
            return _last(data[:pad])
        cut = len(data) - len(data) % 4
        self.carry = data[cut:]
        return binascii.a2b_base64(data[:cut]) if cut else b""

    def end(self) -> bytes:
        if self.done:
            return b""
        rest, self.carry = self.carry, b""
        self.done = True
        return _last(rest)


def _last(data: bytes) -> bytes:
    """Decode ``data`` (alphabet only), its last group completed with padding."""
    extra = len(data) % 4
    if extra == 1:
        raise UndecodableError("base64 data ends with a lone character")
    try:
        return binascii.a2b_base64(data + b"=" * ((4 - extra) % 4))
    except binascii.Error as exc:  # pragma: no cover - alphabet-only input decodes
        raise UndecodableError(str(exc)) from None


_QP_LINE = 1 << 16  # a quoted-printable line longer than this is decoded in pieces, cut where it is safe
_QP_UNSAFE_END = frozenset(b" \t=\r")


class QuotedPrintable:
    """Quoted-printable, line by line (:func:`decode_qp` over whole lines gives the same bytes as over the
    whole part); a very long line is cut where neither an escape, a soft break nor trailing blanks end."""

    def __init__(self) -> None:
        self.carry = b""

    def feed(self, data: bytes) -> bytes:
        data = self.carry + data
        cut = data.rfind(b"\n") + 1
        if not cut and len(data) > _QP_LINE:
            cut = _safe_cut(data)
        self.carry = data[cut:]
        return decode_qp(data[:cut]) if cut else b""

    def end(self) -> bytes:
        rest, self.carry = self.carry, b""
        return decode_qp(rest)


def _safe_cut(data: bytes) -> int:
    """An end for a piece of one line after which decoding the rest separately changes nothing: not after a
    blank, a CR or ``=``, nor one character after ``=``; 0 if there is none."""
    for k in range(len(data), 1, -1):
        if data[k - 1] not in _QP_UNSAFE_END and data[k - 2] != 0x3D:
            return k
    return 0


class Base64Lines:
    """Encodes to base64 in lines of 76 characters, each ended by CRLF (RFC 2045 §6.8), piece by piece."""

    RAW_LINE = 57  # bytes that make one line of 76 characters

    def __init__(self) -> None:
        self.carry = b""

    def feed(self, data: bytes) -> bytes:
        data = self.carry + data
        cut = len(data) - len(data) % self.RAW_LINE
        self.carry = data[cut:]
        return self._lines(data[:cut])

    def end(self) -> bytes:
        rest, self.carry = self.carry, b""
        return self._lines(rest)

    @staticmethod
    def _lines(data: bytes) -> bytes:
        if not data:
            return b""
        return b"".join(
            binascii.b2a_base64(data[i:i + 57], newline=False) + b"\r\n" for i in range(0, len(data), 57))

    @staticmethod
    def size(raw: int) -> int:
        """The length of what ``raw`` bytes encode to."""
        lines = (raw + 56) // 57
        return 4 * ((raw + 2) // 3) + 2 * lines


def decoder(encoding: str | None) -> Identity | Base64 | QuotedPrintable | None:
    """A fresh decoder for a Content-Transfer-Encoding, or None when it is not known (RFC 3516 §4.3)."""
    cte = (encoding or "7bit").lower()
    if cte in ("7bit", "8bit", "binary"):
        return Identity()
    if cte == "base64":
        return Base64()
    if cte == "quoted-printable":
        return QuotedPrintable()
    return None
