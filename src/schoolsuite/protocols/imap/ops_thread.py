"""SORT keys and THREAD algorithms (RFC 5256 §2-3, RFC 5957 DISPLAYFROM/DISPLAYTO)."""

from __future__ import annotations

import re
from typing import Any

from .ops_search import decode_words, sent_date

_BLOB = r"(?:\[[^\[\]]*\]\s*)"
_LEADER = re.compile(r"^(?:\s*(?:" + _BLOB + r")*(?:re|fwd?)\s*" + _BLOB + r"?:\s*)", re.IGNORECASE)
_BLOB_ONLY = re.compile(r"^\s*" + _BLOB)
_TRAILER = re.compile(r"(?:\s*\(fwd\)|\s+)$", re.IGNORECASE)
_FWD = re.compile(r"^\[fwd:(.*)\]$", re.IGNORECASE | re.DOTALL)


def base_subject(raw: str | None) -> str:
    """RFC 5256 §2.1 base subject: decoded, whitespace folded, reply/forward leaders and trailers removed."""
    s = re.sub(r"\s+", " ", decode_words(raw)).strip()
    while True:
        while True:  # (2) trailers
            t = _TRAILER.sub("", s)
            if t == s:
                break
            s = t
        while True:  # (3)-(5) leaders and blobs
            t = _LEADER.sub("", s, count=1)
            if t == s:
                b = _BLOB_ONLY.sub("", s, count=1)
                if b != s and b:
                    t = b
            if t == s:
                break
            s = t
        m = _FWD.match(s)  # (6)
        if m:
            s = m.group(1).strip()
            continue
        break
    return s.upper()


def _first_address(value: Any, display: bool = False) -> str:
    """RFC 5256 §3 / RFC 5957: the first address's mailbox, or its display name (a group's name)."""
    if not value:
        return ""
    for name, _adl, mailbox, host in value:
        if mailbox is None:
            continue  # the end of a group
        if not display:
            return mailbox.upper()
        if host is None:
            return decode_words(mailbox).upper()  # a group: its name
        if name:
            return decode_words(name).upper()
        return f"{mailbox}@{host}".upper()
    return ""


def _key(m: Any, key: str) -> Any:
    env = m.env
    if key == "ARRIVAL":
        return m.date
    if key == "DATE":
        sent = sent_date(env)
        return m.date if sent is None else sent
    if key == "SIZE":
        return m.size
    if key == "SUBJECT":
        return base_subject(env[1] if env else None)
    if key == "FROM":
        return _first_address(env[2] if env else None)
    if key == "TO":
        return _first_address(env[5] if env else None)
    if key == "CC":
        return _first_address(env[6] if env else None)
    if key == "DISPLAYFROM":
        return _first_address(env[2] if env else None, True)
    if key == "DISPLAYTO":
        return _first_address(env[5] if env else None, True)
    return 0


def sort_messages(messages: list[Any], keys: tuple[tuple[str, bool], ...]) -> list[Any]:
    """Stable multi-key sort; ties end in sequence order (RFC 5256 §3)."""
    out = sorted(messages, key=lambda m: m.seq)
    for key, reverse in reversed(keys):
        out.sort(key=lambda m: _key(m, key), reverse=reverse)
    return out


def _number(m: Any, uid: bool) -> int:
    return m.uid if uid else m.seq


def _render_tree(node: list[Any], uid: bool) -> bytes:
    """One thread (RFC 5256 §4): numbers of a chain, then the nested sub-threads: ``(a b (c)(d))``."""
    numbers: list[bytes] = []
    nested = b""
    cur = node
    while True:
        message, kids = cur
        if message is not None:
            numbers.append(b"%d" % _number(message, uid))
        if len(kids) == 1 and message is not None:
            cur = kids[0]
            continue
        nested = b"".join(_render_tree(k, uid) for k in kids)
        break
    text = b" ".join(numbers)
    if nested:
        text = text + b" " + nested if text else nested
    return b"(" + text + b")"


def thread_messages(messages: list[Any], algorithm: str, uid: bool) -> bytes:
    if algorithm == "ORDEREDSUBJECT":
        groups: dict[str, list[Any]] = {}
        for m in sort_messages(messages, (("SUBJECT", False), ("DATE", False))):
            groups.setdefault(_key(m, "SUBJECT"), []).append(m)
        threads = sorted(groups.values(), key=lambda g: (_key(g[0], "DATE"), g[0].seq))
        out = b""
        for g in threads:
            node = [g[0], [[x, []] for x in g[1:]]]
            out += _render_tree(node, uid)
        return out
    return _references(messages, uid)


_MSGID = re.compile(r"<[^<>\s]+>")


def is_reply(raw: str | None) -> bool:
    """Whether subject extraction removed a reply/forward leader or trailer (RFC 5256 §2.1)."""
    text = re.sub(r"\s+", " ", decode_words(raw)).strip()
    return bool(_LEADER.match(text) or re.search(r"\(fwd\)\s*$", text, re.IGNORECASE) or _FWD.match(text))


class _C:
    """A container of the REFERENCES algorithm (a message or a dummy)."""

    __slots__ = ("msg", "parent", "kids")

    def __init__(self) -> None:
        self.msg: Any = None
        self.parent: _C | None = None
        self.kids: list[_C] = []

    def ancestor_of(self, other: "_C | None") -> bool:
        while other is not None:
            if other is self:
                return True
            other = other.parent
        return False

    def link(self, parent: "_C | None") -> None:
        if self.parent is not None:
            self.parent.kids.remove(self)
        self.parent = parent
        if parent is not None:
            parent.kids.append(self)


def _date_key(c: _C) -> tuple[int, int]:
    if c.msg is not None:
        return (_key(c.msg, "DATE"), c.msg.seq)
    return _date_key(c.kids[0]) if c.kids else (0, 0)


def _subject_of(c: _C) -> tuple[str, bool]:
    m = c.msg if c.msg is not None else (c.kids[0].msg if c.kids else None)
    raw = (m.env or [None] * 10)[1] if m is not None else None
    return base_subject(raw), is_reply(raw)


def _references(messages: list[Any], uid: bool) -> bytes:
    """RFC 5256 §3 REFERENCES."""
    table: dict[str, _C] = {}
    for n, m in enumerate(sorted(messages, key=lambda x: x.seq)):
        env = m.env or [None] * 10
        ids = _MSGID.findall(env[9] or "")
        mid = ids[0] if ids and ids[0] not in table or (ids and table[ids[0]].msg is None) else f"<{n}@unique>"
        c = table.setdefault(mid, _C())
        c.msg = m
        refs = _MSGID.findall(m.refs or "") or _MSGID.findall(env[8] or "")[:1]
        prev: _C | None = None
        for ref in refs:  # step 1.A: link the references chain
            rc = table.setdefault(ref, _C())
            if prev is not None and rc.parent is None and not rc.ancestor_of(prev) and rc is not prev:
                rc.link(prev)
            prev = rc
        # step 1.B: the message's parent is the last reference (replacing a guessed one)
        if prev is not None and (prev is c or c.ancestor_of(prev)):
            prev = None
        c.link(prev)
    roots = [c for c in table.values() if c.parent is None]

    def prune(c: _C) -> list[_C]:  # step 4
        kept: list[_C] = []
        for k in list(c.kids):
            kept.extend(prune(k))
        c.kids = kept
        for k in kept:
            k.parent = c
        if c.msg is None:
            if not c.kids:
                return []
            if c.parent is not None or len(c.kids) == 1:
                return list(c.kids)
        return [c]

    tops: list[_C] = []
    for r in roots:
        for t in prune(r):
            t.parent = None
            tops.append(t)

    def sort_all(cs: list[_C]) -> None:
        for c in cs:
            sort_all(c.kids)
            c.kids.sort(key=_date_key)

    sort_all(tops)
    tops.sort(key=_date_key)
    # step 5: group the roots by base subject
    subjects: dict[str, _C] = {}
    for t in tops:
        subj, reply = _subject_of(t)
        if not subj:
            continue
        old = subjects.get(subj)
        if old is None or (t.msg is None and old.msg is not None) or \
                (old.msg is not None and _subject_of(old)[1] and t.msg is not None and not reply):
            subjects[subj] = t
    result: list[_C] = []
    removed: set[int] = set()
    for t in tops:
        subj, reply = _subject_of(t)
        old = subjects.get(subj) if subj else None
        if old is None or old is t:
            result.append(t)
            continue
        removed.add(id(t))
        if old.msg is None and t.msg is None:
            for k in list(t.kids):
                k.parent = old
                old.kids.append(k)
        elif old.msg is None:
            t.parent = old
            old.kids.append(t)
        elif reply and not _subject_of(old)[1]:
            t.parent = old
            old.kids.append(t)
        else:
            dummy = _C()
            for x in (old, t):
                x.parent = dummy
                dummy.kids.append(x)
            subjects[subj] = dummy
            index = next(i for i, r in enumerate(result) if r is old) if old in result else None
            if index is not None:
                result[index] = dummy
            else:
                result.append(dummy)
    final = [r for r in result if id(r) not in removed]
    sort_all(final)  # step 6
    final.sort(key=_date_key)

    def to_node(c: _C) -> list[Any]:
        return [c.msg, [to_node(k) for k in c.kids]]

    return b"".join(_render_tree(to_node(t), uid) for t in final)
