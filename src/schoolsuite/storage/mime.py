"""MIME structure of a message, computed once at delivery (RFC 5322, RFC 2045/2046, RFC 2231).

:func:`parse` walks a message's bytes once and returns an :class:`Entity`
tree: byte offsets of every part's header and body, its content type and
parameters, and for each message (the top one and every ``message/rfc822``
part) the raw envelope fields with parsed address lists. The tree is stored
sealed next to the message, so FETCH of ENVELOPE, BODYSTRUCTURE or
``BODY[section]`` never reparses the message: it slices the stored content.

Header values are kept as raw bytes decoded as latin-1 (a lossless round
trip), so encoded words stay exactly as sent. A malformed message still gets
a structure: a missing boundary ends the multipart at the end of its part,
a message without a blank line is all header.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 20
MAX_PARTS = 5000

#: RFC 3501 §7.4.2 envelope fields in order.
ENVELOPE_FIELDS = ("date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc", "in-reply-to", "message-id")
_ADDRESS_FIELDS = frozenset(("from", "sender", "reply-to", "to", "cc", "bcc"))

Address = tuple[str | None, str | None, str | None, str | None]  # name, adl, mailbox, host


@dataclass
class Entity:
    """One MIME entity: offsets into the message and what its header says."""

    hstart: int
    bstart: int
    end: int
    type: str = "text"
    subtype: str = "plain"
    params: list[list[str]] = field(default_factory=list)
    id: str | None = None
    description: str | None = None
    encoding: str | None = None
    md5: str | None = None
    disposition: list[Any] | None = None  # [type, params]
    language: list[str] | None = None
    location: str | None = None
    lines: int = 0
    parts: list["Entity"] = field(default_factory=list)  # multipart children
    message: "Entity | None" = None  # message/rfc822: the encapsulated message
    envelope: list[Any] | None = None  # set on messages: the ten RFC 3501 fields
    refs: str | None = None  # References header of a message (threading)

    @property
    def multipart(self) -> bool:
        return self.type.lower() == "multipart"

    @property
    def body_size(self) -> int:
        return self.end - self.bstart

    # -- serialisation (compact JSON; strings are latin-1 bytes) ----------

    def to_obj(self) -> list[Any]:
        return [
            self.hstart, self.bstart, self.end, self.type, self.subtype, self.params, self.id,
            self.description, self.encoding, self.md5, self.disposition, self.language, self.location,
            self.lines, [p.to_obj() for p in self.parts],
            None if self.message is None else self.message.to_obj(), self.envelope, self.refs,
        ]

    @classmethod
    def from_obj(cls, o: list[Any]) -> "Entity":
        e = cls(*o[:14])
        e.parts = [cls.from_obj(p) for p in o[14]]
        e.message = None if o[15] is None else cls.from_obj(o[15])
        e.envelope = o[16]
        e.refs = o[17]
        return e

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_obj(), separators=(",", ":")).encode("ascii")

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Entity":
        return cls.from_obj(json.loads(raw))


# -- headers -------------------------------------------------------------------


def header_end(data: bytes, start: int, end: int) -> tuple[int, int]:
    """(end of header, start of body) of the entity at ``start``: RFC 5322 §2.1 blank line."""
    pos = start
    while pos < end:
        nl = data.find(b"\n", pos, end)
        if nl < 0:
            return end, end
        line = data[pos:nl]
        if line in (b"", b"\r"):
            return pos, nl + 1
        pos = nl + 1
    return end, end


def header_fields(block: bytes) -> list[tuple[str, bytes]]:
    """(lower-case name, unfolded raw value) of each field of a header block (RFC 5322 §2.2.3)."""
    fields: list[tuple[str, bytes]] = []
    name = None
    value: list[bytes] = []
    for line in block.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line[:1] in (b" ", b"\t") and name is not None:
            value.append(line)
            continue
        if name is not None:
            fields.append((name, b"".join(value).strip()))
            name = None
        colon = line.find(b":")
        if colon > 0:
            name = line[:colon].strip().decode("latin-1").lower()
            value = [line[colon + 1 :]]
    if name is not None:
        fields.append((name, b"".join(value).strip()))
    return fields


_TSPECIALS = set(b'()<>@,;:\\"/[]?=')


def _skip_cfws(s: bytes, i: int) -> int:
    n = len(s)
    while i < n:
        c = s[i]
        if c in b" \t\r\n":
            i += 1
        elif c == 0x28:  # comment, nested
            depth = 0
            while i < n:
                if s[i] == 0x5C:
                    i += 2
                    continue
                if s[i] == 0x28:
                    depth += 1
                elif s[i] == 0x29:
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        else:
            break
    return i


def _quoted(s: bytes, i: int) -> tuple[bytes, int]:
    out = bytearray()
    i += 1
    while i < len(s) and s[i] != 0x22:
        if s[i] == 0x5C and i + 1 < len(s):
            i += 1
        out.append(s[i])
        i += 1
    return bytes(out), i + 1


def parse_content_params(value: bytes) -> tuple[str, list[list[str]]]:
    """The first token and the parameters of a Content-Type/Disposition value.

    RFC 2231 continuations (``name*0``, ``name*1*``) are joined; an encoded
    value keeps its ``charset'lang'`` form under the name ``name*``.
    """
    i = _skip_cfws(value, 0)
    start = i
    while i < len(value) and value[i] not in b";" and value[i] not in b" \t(":
        i += 1
    head = value[start:i].decode("latin-1")
    raw: list[tuple[str, str]] = []
    while True:
        i = _skip_cfws(value, i)
        if i >= len(value):
            break
        if value[i] != 0x3B:  # junk before the next ';'
            nxt = value.find(b";", i)
            if nxt < 0:
                break
            i = nxt
        i = _skip_cfws(value, i + 1)
        start = i
        while i < len(value) and value[i] not in b"=; \t":
            i += 1
        name = value[start:i].decode("latin-1").lower()
        i = _skip_cfws(value, i)
        if i >= len(value) or value[i] != 0x3D or not name:
            continue
        i = _skip_cfws(value, i + 1)
        if i < len(value) and value[i] == 0x22:
            val, i = _quoted(value, i)
        else:
            start = i
            while i < len(value) and value[i] not in b"; \t":
                i += 1
            val = value[start:i]
        raw.append((name, val.decode("latin-1")))
    return head, _join_2231(raw)


_CONT = re.compile(r"^(.+?)\*(\d+)(\*?)$")


def _join_2231(raw: list[tuple[str, str]]) -> list[list[str]]:
    """RFC 2231 §3: join ``name*0``… continuations in order."""
    out: list[list[str]] = []
    cont: dict[str, list[tuple[int, str, bool]]] = {}
    for name, val in raw:
        m = _CONT.match(name)
        if m:
            base = m.group(1)
            if base not in cont:
                cont[base] = []
                out.append([base, ""])  # placeholder keeps the order
            cont[base].append((int(m.group(2)), val, bool(m.group(3))))
        else:
            out.append([name, val])
    for item in out:
        pieces = cont.get(item[0])
        if pieces is None:
            continue
        pieces.sort()
        encoded = pieces[0][2]
        item[1] = "".join(v for _, v, _ in pieces)
        if encoded:
            item[0] += "*"
    return out


def _unquote_nstring(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


# -- addresses (RFC 5322 §3.4, obsolete forms of §4.4 tolerated) --------------


def _comment_end(s: bytes, i: int) -> int:
    """Index just after the comment that starts at ``s[i] == "("`` (nested, escapes)."""
    depth = 0
    while i < len(s):
        c = s[i]
        if c == 0x5C:
            i += 2
            continue
        if c == 0x28:
            depth += 1
        elif c == 0x29:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(s)


def _tokens(s: bytes) -> list[tuple[str, bytes]]:
    """Lexical tokens of an address list: ('q', quoted), ('a', atom), ('s', special), ('d', literal)."""
    out: list[tuple[str, bytes]] = []
    i = 0
    n = len(s)
    while True:
        while i < n and s[i] in b" \t\r\n":
            i += 1
        if i >= n:
            return out
        c = s[i]
        if c == 0x28:  # a comment: kept, it names an address that has no phrase
            j = _comment_end(s, i)
            out.append(("c", s[i + 1 : j - 1 if s[j - 1 : j] == b")" else j].replace(b"\\", b"")))
            i = j
        elif c == 0x22:
            val, i = _quoted(s, i)
            out.append(("q", val))
        elif c == 0x5B:
            j = s.find(b"]", i)
            j = n - 1 if j < 0 else j
            out.append(("d", s[i : j + 1]))
            i = j + 1
        elif c in b"<>@,;:.":
            out.append(("s", bytes((c,))))
            i += 1
        else:
            j = i
            while j < n and s[j] not in b' \t\r\n"(<>@,;:.[':
                j += 1
            if j == i:
                j += 1
            out.append(("a", s[i:j]))
            i = j


def _words(tokens: list[tuple[str, bytes]]) -> str | None:
    if not tokens:
        return None
    text = b""
    prev = None
    for kind, val in tokens:
        if kind == "s" and val == b".":
            text += b"."
        else:
            if text and prev != "." and not text.endswith(b"."):
                text += b" "
            text += val
        prev = val.decode("latin-1") if kind == "s" else kind
    return text.decode("latin-1")


def _addr_spec(tokens: list[tuple[str, bytes]]) -> tuple[str | None, str | None, str | None]:
    """(adl, mailbox, host) of the tokens inside <> or of a bare addr-spec."""
    adl = None
    if tokens and tokens[0] == ("s", b"@"):  # obs-route: @a,@b:
        colon = next((k for k, t in enumerate(tokens) if t == ("s", b":")), None)
        if colon is not None:
            adl = "".join(v.decode("latin-1") for _, v in tokens[:colon])
            tokens = tokens[colon + 1 :]
    at = max((k for k, t in enumerate(tokens) if t == ("s", b"@")), default=None)
    if at is None:
        local = "".join(v.decode("latin-1") for _, v in tokens) or None
        return adl, local, None
    local = "".join((b'"' + v + b'"' if k == "q" and re.search(rb"[\s()<>@,;:\\\".\[\]]", v) else v).decode("latin-1")
                    for k, v in tokens[:at])
    host = "".join(v.decode("latin-1") for _, v in tokens[at + 1 :])
    return adl, local or None, host or None


def parse_addresses(value: bytes) -> list[Address]:
    """Envelope address structures of an address-list field, groups as RFC 3501 §7.4.2 says."""
    tokens = _tokens(value)
    out: list[Address] = []
    i = 0
    n = len(tokens)
    while i < n:
        # one mailbox or group, up to ',' at depth 0
        j = i
        phrase_end = None
        angle = None
        while j < n:
            t = tokens[j]
            if t == ("s", b"<") and angle is None:
                angle = j
                k = j + 1
                while k < n and tokens[k] != ("s", b">"):
                    k += 1
                j = k + 1
                continue
            if t == ("s", b":") and angle is None and phrase_end is None:
                phrase_end = j
                break
            if t == ("s", b","):
                break
            j += 1
        if phrase_end is not None:  # a group
            name = _words([t for t in tokens[i:phrase_end] if t[0] != "c"])
            out.append((None, None, name, None))
            k = phrase_end + 1
            members_start = k
            while k < n and tokens[k] != ("s", b";"):
                k += 1
            out.extend(parse_addresses_tokens(tokens[members_start:k]))
            out.append((None, None, None, None))
            i = k + 1
            while i < n and tokens[i] == ("s", b","):
                i += 1
            continue
        item = tokens[i:j]
        i = j + 1
        if not any(k != "c" for k, _ in item):
            continue
        out.append(_mailbox(item))
    return out


def parse_addresses_tokens(tokens: list[tuple[str, bytes]]) -> list[Address]:
    out: list[Address] = []
    cur: list[tuple[str, bytes]] = []
    depth = 0
    for t in tokens + [("s", b",")]:
        if t == ("s", b"<"):
            depth += 1
        elif t == ("s", b">"):
            depth -= 1
        if t == ("s", b",") and depth <= 0:
            if any(k != "c" for k, _ in cur):
                out.append(_mailbox(cur))
            cur = []
        else:
            cur.append(t)
    return out


def _mailbox(item: list[tuple[str, bytes]]) -> Address:
    comments = [v for k, v in item if k == "c"]
    item = [t for t in item if t[0] != "c"]
    name, adl, mailbox, host = _mailbox_of(item)
    if name is None and comments and comments[-1].strip() and ("s", b"<") not in item:
        name = comments[-1].strip().decode("latin-1")  # "user@host (Real Name)"
    return (name, adl, mailbox, host)


def _mailbox_of(item: list[tuple[str, bytes]]) -> Address:
    lt = next((k for k, t in enumerate(item) if t == ("s", b"<")), None)
    if lt is not None:
        gt = next((k for k in range(lt, len(item)) if item[k] == ("s", b">")), len(item))
        adl, mailbox, host = _addr_spec(item[lt + 1 : gt])
        name = _words(item[:lt])
        return (name, adl, mailbox, host)
    adl, mailbox, host = _addr_spec(item)
    return (None, adl, mailbox, host)


# -- the walk -------------------------------------------------------------------


def count_lines(data: bytes, start: int, end: int) -> int:
    if end <= start:
        return 0
    n = data.count(b"\n", start, end)
    return n if data[end - 1 : end] == b"\n" else n + 1


def _envelope(fields: list[tuple[str, bytes]]) -> list[Any]:
    first: dict[str, bytes] = {}
    for name, value in fields:
        if name in ENVELOPE_FIELDS and name not in first:
            first[name] = value
    env: list[Any] = []
    for name in ENVELOPE_FIELDS:
        value = first.get(name)
        if name in _ADDRESS_FIELDS:
            env.append(parse_addresses(value) if value else None)
        else:
            env.append(_unquote_nstring(value))
    # RFC 3501 §7.4.2: sender and reply-to default to from.
    if not env[3]:
        env[3] = env[2]
    if not env[4]:
        env[4] = env[2]
    return env


def parse(data: bytes) -> Entity:
    """The structure of a whole message."""
    counter = [0]
    return _message(data, 0, len(data), 0, counter)


def _message(data: bytes, start: int, end: int, depth: int, counter: list[int]) -> Entity:
    entity = _entity(data, start, end, depth, counter, default_type=("text", "plain"), is_message=True)
    return entity


def _entity(data: bytes, start: int, end: int, depth: int, counter: list[int], *,
            default_type: tuple[str, str], is_message: bool = False) -> Entity:
    counter[0] += 1
    hend, bstart = header_end(data, start, end)
    fields = header_fields(data[start:hend])
    e = Entity(start, bstart, end)
    e.type, e.subtype = default_type
    for name, value in fields:
        if name == "content-type" and value:
            head, params = parse_content_params(value)
            if "/" in head:
                t, _, s = head.partition("/")
                if t and s:
                    e.type, e.subtype = t, s
                    e.params = params
        elif name == "content-transfer-encoding" and e.encoding is None:
            e.encoding = value.decode("latin-1").strip() or None
        elif name == "content-id" and e.id is None:
            e.id = value.decode("latin-1")
        elif name == "content-description" and e.description is None:
            e.description = value.decode("latin-1")
        elif name == "content-md5" and e.md5 is None:
            e.md5 = value.decode("latin-1")
        elif name == "content-disposition" and e.disposition is None and value:
            head, params = parse_content_params(value)
            if head:
                e.disposition = [head, params]
        elif name == "content-language" and e.language is None:
            langs = [x.strip() for x in value.decode("latin-1").split(",") if x.strip()]
            e.language = langs or None
        elif name == "content-location" and e.location is None:
            e.location = value.decode("latin-1")
    if is_message:
        e.envelope = _envelope(fields)
        for name, value in fields:
            if name == "references":
                e.refs = value.decode("latin-1")
                break
    kind = e.type.lower()
    if kind == "multipart" and depth < MAX_DEPTH and counter[0] < MAX_PARTS:
        boundary = next((v for k, v in e.params if k == "boundary"), None)
        if boundary:
            child_default = ("message", "rfc822") if e.subtype.lower() == "digest" else ("text", "plain")
            for pstart, pend in _split(data, bstart, end, boundary.encode("latin-1")):
                if counter[0] >= MAX_PARTS:
                    break
                e.parts.append(_entity(data, pstart, pend, depth + 1, counter, default_type=child_default))
        if not e.parts:
            # RFC 3501 requires at least one part: an empty text part stands in.
            e.parts.append(Entity(end, end, end))
    elif kind == "message" and e.subtype.lower() in ("rfc822", "global") and depth < MAX_DEPTH:
        e.message = _message(data, bstart, end, depth + 1, counter)
        e.lines = count_lines(data, bstart, end)
    elif kind == "text":
        e.lines = count_lines(data, bstart, end)
    return e


def _split(data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """Body ranges between ``--boundary`` delimiter lines (RFC 2046 §5.1.1)."""
    delim = b"--" + boundary
    parts: list[tuple[int, int]] = []
    part_start = None
    pos = start
    while pos < end:
        nl = data.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        if data.startswith(delim, pos) and pos + len(delim) <= end:
            rest = data[pos + len(delim) : line_end].rstrip(b"\r\n \t")
            if rest in (b"", b"--"):
                # The CRLF before the delimiter belongs to the delimiter.
                if part_start is not None:
                    body_end = pos
                    if body_end > part_start and data[body_end - 1 : body_end] == b"\n":
                        body_end -= 1
                        if body_end > part_start and data[body_end - 1 : body_end] == b"\r":
                            body_end -= 1
                    parts.append((part_start, max(part_start, body_end)))
                if rest == b"--":
                    return parts
                part_start = line_end
        pos = line_end
    if part_start is not None:
        parts.append((part_start, end))  # no close delimiter: the part runs to the end
    return parts


def resolve(root: Entity, path: list[int]) -> Entity | None:
    """The entity a section part path names (RFC 3501 §6.4.5), or None."""
    cur = root
    for depth, number in enumerate(path):
        base = cur
        if depth > 0 and cur.message is not None:
            base = cur.message
        if base.multipart:
            if not 1 <= number <= len(base.parts):
                return None
            cur = base.parts[number - 1]
        elif number == 1:
            cur = base
        else:
            return None
    return cur
