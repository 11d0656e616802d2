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
    if not value:
        return ""
    for name, _adl, mailbox, host in value:
        if mailbox is None or host is None:
            continue
        if display and name:
            return decode_words(name).upper()
        return (mailbox or "").upper() if not display else f"{mailbox}@{host}".upper()
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
    """One thread: ``(a b (c)(d))`` — a chain, then sibling sub-threads in parentheses."""
    parts = []
    cur = node
    while True:
        message, kids = cur
        if message is not None:
            parts.append(b"%d" % _number(message, uid))
        if len(kids) == 1:
            cur = kids[0]
            continue
        for kid in kids:
            parts.append(_render_tree(kid, uid))
        break
    text = b""
    for p in parts:
        if p.startswith(b"("):
            text += p
        else:
            text += (b" " if text else b"") + p
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


_MSGID = re.compile(r"<[^<>]+>")


def _references(messages: list[Any], uid: bool) -> bytes:
    """RFC 5256 §3 REFERENCES (parent links from References/In-Reply-To, then subject grouping)."""
    containers: dict[str, dict[str, Any]] = {}

    def container(mid: str) -> dict[str, Any]:
        c = containers.get(mid)
        if c is None:
            c = containers[mid] = {"msg": None, "parent": None, "kids": [], "id": mid}
        return c

    def ancestor(a: dict[str, Any], b: dict[str, Any]) -> bool:
        while b is not None:
            if b is a:
                return True
            b = b["parent"]
        return False

    for n, m in enumerate(sorted(messages, key=lambda x: x.seq)):
        env = m.env or [None] * 10
        ids = _MSGID.findall(env[9] or "")
        mid = ids[0] if ids else f"<unique-{n}>"
        c = container(mid)
        if c["msg"] is not None:
            c = container(f"<dup-{n}>")
        c["msg"] = m
        refs = _MSGID.findall(m.refs or "") or _MSGID.findall(env[8] or "")[:1]
        prev = None
        for ref in refs:
            rc = container(ref)
            if prev is not None and rc["parent"] is None and not ancestor(rc, prev):
                rc["parent"] = prev
                prev["kids"].append(rc)
            prev = rc
        if prev is not None and prev is not c and not ancestor(c, prev):
            if c["parent"] is not None:
                c["parent"]["kids"].remove(c)
            c["parent"] = prev
            prev["kids"].append(c)
    roots = [c for c in containers.values() if c["parent"] is None]

    def prune(c: dict[str, Any]) -> list[dict[str, Any]]:
        kids = []
        for k in c["kids"]:
            kids.extend(prune(k))
        c["kids"] = kids
        for k in kids:
            k["parent"] = c
        if c["msg"] is None and (len(kids) == 1 or c["parent"] is not None):
            return kids  # an empty container is replaced by its children
        if c["msg"] is None and not kids:
            return []
        return [c]

    tops: list[dict[str, Any]] = []
    for r in roots:
        r["parent"] = None
        tops.extend(prune(r))

    def date(c: dict[str, Any]) -> tuple[int, int]:
        if c["msg"] is not None:
            return (_key(c["msg"], "DATE"), c["msg"].seq)
        return min((date(k) for k in c["kids"]), default=(0, 0))

    def to_node(c: dict[str, Any]) -> list[Any]:
        kids = sorted(c["kids"], key=date)
        return [c["msg"], [to_node(k) for k in kids]]

    # RFC 5256 §3 step 5: threads whose roots share a base subject are merged.
    by_subject: dict[str, dict[str, Any]] = {}
    merged: list[dict[str, Any]] = []
    for t in sorted(tops, key=date):
        subj = _key(t["msg"], "SUBJECT") if t["msg"] is not None else ""
        first = by_subject.get(subj) if subj else None
        if first is not None and first["msg"] is not None and t["msg"] is not None:
            env = t["msg"].env or [None] * 10
            if re.match(r"^\s*(re|fwd?)\s*:", decode_words(env[1]), re.IGNORECASE):
                first["kids"].append(t)
                continue
        if subj:
            by_subject.setdefault(subj, t)
        merged.append(t)
    return b"".join(_render_tree(to_node(t), uid) for t in sorted(merged, key=date))
