"""IMAP command grammar: complete command bytes → frozen dataclasses (RFC 3501 §9, RFC 9051 §9).

Pure: no I/O, no Twisted. The protocol hands over one complete command
(its lines and literals exactly as received, ``{n}\\r\\n`` markers included);
:func:`parse_command` returns a typed command or raises :class:`ParseError`
(which the protocol answers with BAD). Functions are named after the RFC
grammar rules they implement.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any


class ParseError(Exception):
    """The command does not follow the grammar (answered with BAD)."""

    def __init__(self, message: str, tag: bytes | None = None) -> None:
        super().__init__(message)
        self.tag = tag


# RFC 3501 §9: ATOM-CHAR is any CHAR except atom-specials.
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0, 0x20)) | {0x7F}
_ASTRING_SPECIALS = _ATOM_SPECIALS - {ord("]")}
_TAG_SPECIALS = _ASTRING_SPECIALS | {ord("+")}
# RFC 7888 §8: ``{n}`` or ``{n+}`` (LITERAL+ and LITERAL- share the "+" form; there is no ``{n-}``).
LITERAL_RE = re.compile(rb"\{(\d{1,20})(\+?)\}\r?\n?$")
_LITERAL_AT = re.compile(rb"\{(\d{1,20})\+?\}\r?\n")

SeqSet = tuple[tuple[int | None, int | None], ...]  # None stands for "*"
SAVED: SeqSet = ((0, 0),)  # "$", the saved search result (RFC 5182); 0 is no valid number


# -- commands ----------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    tag: str
    name: str


@dataclass(frozen=True)
class Simple(Command):
    """CAPABILITY NOOP LOGOUT STARTTLS CHECK CLOSE UNSELECT EXPUNGE IDLE NAMESPACE."""


@dataclass(frozen=True)
class Login(Command):
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Authenticate(Command):
    mechanism: str
    initial: bytes | None = field(default=None, repr=False)  # SASL-IR (RFC 4959); b"" for "="


@dataclass(frozen=True)
class Compress(Command):
    mechanism: str


@dataclass(frozen=True)
class Enable(Command):
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class Id(Command):
    params: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True)
class Select(Command):
    mailbox: str
    condstore: bool = False
    qresync: tuple[int, int, SeqSet | None, tuple[SeqSet, SeqSet] | None] | None = None


@dataclass(frozen=True)
class MailboxCommand(Command):
    """CREATE DELETE SUBSCRIBE UNSUBSCRIBE GETQUOTAROOT."""

    mailbox: str
    special_use: str | None = None


@dataclass(frozen=True)
class Rename(Command):
    old: str
    new: str


@dataclass(frozen=True)
class ListCommand(Command):
    """LIST and LSUB, with LIST-EXTENDED (RFC 5258) options and LIST-STATUS (RFC 5819)."""

    reference: str
    patterns: tuple[str, ...]
    select_options: tuple[str, ...] = ()
    return_options: tuple[str, ...] = ()
    status_items: tuple[str, ...] = ()


@dataclass(frozen=True)
class Status(Command):
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class AppendMessage:
    flags: tuple[str, ...]
    date: str | None
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Append(Command):
    mailbox: str
    messages: tuple[AppendMessage, ...]


@dataclass(frozen=True)
class Section:
    """``BODY[part.SPECIFIER (fields)]<start.length>`` (RFC 3501 §6.4.5)."""

    part: tuple[int, ...] = ()
    specifier: str = ""  # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None


@dataclass(frozen=True)
class FetchItem:
    name: str  # FLAGS, UID, BODY, BODY.PEEK, BINARY, BINARY.PEEK, BINARY.SIZE, ENVELOPE, ...
    section: Section | None = None

    @property
    def peek(self) -> bool:
        return self.name.endswith(".PEEK")


@dataclass(frozen=True)
class Fetch(Command):
    uid: bool
    sequence: SeqSet
    items: tuple[FetchItem, ...]
    changed_since: int | None = None
    vanished: bool = False


@dataclass(frozen=True)
class Store(Command):
    uid: bool
    sequence: SeqSet
    mode: str  # set, add, remove
    silent: bool
    flags: tuple[str, ...]
    unchanged_since: int | None = None


@dataclass(frozen=True)
class Copy(Command):
    """COPY and MOVE (RFC 6851)."""

    uid: bool
    sequence: SeqSet
    mailbox: str


@dataclass(frozen=True)
class UidExpunge(Command):
    sequence: SeqSet


@dataclass(frozen=True)
class Search(Command):
    """SEARCH, SORT (RFC 5256) and THREAD; ``returns`` set means ESEARCH (RFC 4731)."""

    uid: bool
    charset: str | None
    criteria: Any
    returns: tuple[str, ...] | None = None
    sort: tuple[tuple[str, bool], ...] = ()  # (key, reverse)
    algorithm: str | None = None


@dataclass(frozen=True)
class Quota(Command):
    """GETQUOTA and SETQUOTA (RFC 9208)."""

    root: str


# -- the reader ----------------------------------------------------------------


class Reader:
    """A cursor over one command's bytes."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def error(self, what: str) -> ParseError:
        return ParseError(what)

    def at_end(self) -> bool:
        return self.pos >= len(self.data) or self.data[self.pos:] in (b"\r\n", b"\n")

    def end(self) -> None:
        if not self.at_end():
            raise self.error("unexpected characters at end of command")

    def peek(self, n: int = 1) -> bytes:
        return self.data[self.pos : self.pos + n]

    def take(self, literal: bytes) -> bool:
        if self.data[self.pos : self.pos + len(literal)].upper() == literal.upper():
            self.pos += len(literal)
            return True
        return False

    def expect(self, literal: bytes) -> None:
        if not self.take(literal):
            raise self.error(f"expected {literal.decode()!r}")

    def sp(self) -> None:
        if self.peek() != b" ":
            raise self.error("expected a space")
        self.pos += 1

    def maybe_sp(self) -> bool:
        if self.peek() == b" ":
            self.pos += 1
            return True
        return False

    def _run(self, specials: frozenset[int]) -> bytes:
        start = self.pos
        data = self.data
        while self.pos < len(data) and data[self.pos] not in specials:
            self.pos += 1
        return data[start : self.pos]

    def atom(self) -> str:
        value = self._run(_ATOM_SPECIALS)
        if not value:
            raise self.error("expected an atom")
        return value.decode("latin-1")

    def tag(self) -> str:
        value = self._run(_TAG_SPECIALS)
        if not value:
            raise self.error("expected a tag")
        return value.decode("latin-1")

    def number(self) -> int:
        start = self.pos
        while self.pos < len(self.data) and 0x30 <= self.data[self.pos] <= 0x39:
            self.pos += 1
        if start == self.pos or self.pos - start > 20:
            raise self.error("expected a number")
        return int(self.data[start : self.pos])

    def nz_number(self) -> int:
        n = self.number()
        if n == 0 or n > 0xFFFFFFFF:
            raise self.error("number out of range")
        return n

    def literal(self) -> bytes:
        """RFC 3501 §4.3 ``{n}CRLF`` + n octets; RFC 7888 ``{n+}``; RFC 3516 ``~{n}``."""
        if self.peek() == b"~":
            self.pos += 1
        m = _LITERAL_AT.match(self.data, self.pos)
        if not m:
            raise self.error("expected a literal")
        n = int(m.group(1))
        start = m.end()
        if start + n > len(self.data):
            raise self.error("literal is short")
        self.pos = start + n
        return self.data[start : start + n]

    def quoted(self) -> bytes:
        if self.peek() != b'"':
            raise self.error("expected a quoted string")
        self.pos += 1
        out = bytearray()
        data = self.data
        while self.pos < len(data):
            c = data[self.pos]
            if c == 0x22:
                self.pos += 1
                return bytes(out)
            if c == 0x5C:
                self.pos += 1
                if self.pos >= len(data) or data[self.pos] not in b'"\\':
                    raise self.error("bad escape in quoted string")
                c = data[self.pos]
            elif c in (0x0D, 0x0A):
                raise self.error("line break in quoted string")
            out.append(c)
            self.pos += 1
        raise self.error("unterminated quoted string")

    def _literal_next(self) -> bool:
        c = self.peek(2)
        return c[:1] == b"{" or c == b"~{"

    def string(self) -> bytes:
        c = self.peek()
        if c == b'"':
            return self.quoted()
        if self._literal_next():
            return self.literal()
        raise self.error("expected a string")

    def astring(self) -> bytes:
        if self.peek() == b'"' or self._literal_next():
            return self.string()
        value = self._run(_ASTRING_SPECIALS)
        if not value:
            raise self.error("expected an astring")
        return value

    def astr(self) -> str:
        return self.astring().decode("utf-8", "surrogateescape")

    def nstring_or_nil(self) -> bytes | None:
        if self.take(b"NIL"):
            return None
        return self.string()

    def mailbox(self, utf8: bool = False) -> str:
        """RFC 3501 ``mailbox``: modified UTF-7 unless UTF8=ACCEPT is enabled (RFC 6855)."""
        raw = self.astring()
        text = raw.decode("utf-8", "surrogateescape")
        if utf8:
            return text
        if "&" in text:
            try:
                text = mutf7_decode(raw)
            except ValueError:
                pass  # not modified UTF-7: the name as sent (it then matches no mailbox)
        return text

    def list_mailbox(self, utf8: bool = False) -> str:
        """RFC 3501 ``list-mailbox``: atom-ish with % and *, or a string (UTF-8 under UTF8=ACCEPT)."""
        if self.peek() == b'"' or self._literal_next():
            raw = self.string()
        else:
            raw = self._run((_ATOM_SPECIALS - {ord("%"), ord("*"), ord("]")}))
            if not raw:
                raise self.error("expected a list-mailbox")
        if utf8:
            return raw.decode("utf-8", "surrogateescape")
        try:
            return mutf7_decode(raw)
        except ValueError:
            return raw.decode("utf-8", "surrogateescape")

    def paren_list(self, item: Any) -> list[Any]:
        self.expect(b"(")
        out = []
        if self.take(b")"):
            return out
        while True:
            out.append(item())
            if self.take(b")"):
                return out
            self.sp()

    def flag(self) -> str:
        """RFC 3501 ``flag``: a system flag or a keyword atom."""
        if self.peek() == b"\\":
            self.pos += 1
            if self.peek() == b"*":
                self.pos += 1
                return "\\*"
            return "\\" + self.atom()
        return self.atom()

    def sequence_set(self) -> SeqSet:
        """RFC 3501 ``sequence-set``, or ``$``: the saved search result (RFC 5182 §2.1)."""
        if self.take(b"$"):
            if self.peek() not in (b" ", b")", b"", b"\r", b"\n"):
                raise self.error("bad sequence set")
            return SAVED
        ranges = []
        while True:
            a = self.seq_number()
            b = a
            if self.take(b":"):
                b = self.seq_number()
            ranges.append((a, b))
            if not self.take(b","):
                break
        if self.peek() not in (b" ", b")", b"", b"\r", b"\n"):
            raise self.error("bad sequence set")
        return tuple(ranges)

    def seq_number(self) -> int | None:
        if self.take(b"*"):
            return None
        return self.nz_number()


# -- modified UTF-7 (RFC 3501 §5.1.3) ------------------------------------------


def mutf7_encode(name: str) -> bytes:
    out = bytearray()
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.extend(b"&" + base64.b64encode(data).rstrip(b"=").replace(b"/", b",") + b"-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.extend(b"&-" if ch == "&" else ch.encode("ascii"))
        else:
            pending.append(ch)
    flush()
    return bytes(out)


def mutf7_decode(raw: bytes) -> str:
    out = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == 0x26:
            j = raw.find(b"-", i)
            if j < 0:
                raise ValueError("unterminated shift")
            if j == i + 1:
                out.append("&")
            else:
                chunk = raw[i + 1 : j].replace(b",", b"/")
                chunk += b"=" * (-len(chunk) % 4)
                try:
                    text = base64.b64decode(chunk, validate=True).decode("utf-16-be")
                except (ValueError, UnicodeDecodeError):
                    raise ValueError("bad modified UTF-7") from None
                out.append(text)
            i = j + 1
        elif c >= 0x80:
            raise ValueError("8-bit in modified UTF-7")
        else:
            out.append(chr(c))
            i += 1
    return "".join(out)
