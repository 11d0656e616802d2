"""SEARCH, SORT, THREAD and ESEARCH (RFC 3501 §6.4.4, RFC 4731, RFC 5256, RFC 7162 §3.1.5).

Flag, size, date, uid and MODSEQ keys are answered from the index pages
alone; header keys open the stored structure and the header bytes; BODY
and TEXT decrypt the message and search its decoded text parts.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import datetime
import time
from email.header import decode_header, make_header
from email.utils import parsedate_tz
from typing import Any

from ...storage import mail, mime
from . import render
from .errors import Bad, No
from .grammar import Search
from .ops_fetch import _Body, decode_qp
from .session import SelectedMailbox, Session

_FLAG_KEYS = {
    "ANSWERED": (mail.ANSWERED, True), "DELETED": (mail.DELETED, True), "DRAFT": (mail.DRAFT, True),
    "FLAGGED": (mail.FLAGGED, True), "SEEN": (mail.SEEN, True), "UNANSWERED": (mail.ANSWERED, False),
    "UNDELETED": (mail.DELETED, False), "UNDRAFT": (mail.DRAFT, False), "UNFLAGGED": (mail.FLAGGED, False),
    "UNSEEN": (mail.SEEN, False),
}
_ADDRESS_INDEX = {"FROM": 2, "TO": 5, "CC": 6, "BCC": 7}
_CHARSETS = frozenset(("UTF-8", "US-ASCII", "UTF8"))


def decode_words(value: str | None) -> str:
    """RFC 2047 encoded words decoded; raw 8-bit taken as UTF-8."""
    if not value:
        return ""
    raw = value.encode("latin-1", "replace").decode("utf-8", "replace")
    if "=?" not in raw:
        return raw
    try:
        return str(make_header(decode_header(raw)))
    except (ValueError, LookupError, UnicodeError, binascii.Error):
        return raw


def _date_header(env: list[Any] | None) -> Any:
    """The envelope's Date header parsed by RFC 5322 rules (a 10-tuple), or None."""
    if not env or not env[0]:
        return None
    return parsedate_tz(env[0])


def sent_date(env: list[Any] | None) -> int | None:
    parsed = _date_header(env)
    if parsed is None:
        return None
    try:
        return calendar.timegm(parsed[:6] + (0, 0, 0)) - (parsed[9] or 0)  # type: ignore[operator]
    except (ValueError, OverflowError, TypeError):
        return None


def header_date(env: list[Any] | None) -> datetime.date | None:
    """The calendar date written in the Date header (its own timezone)."""
    parsed = _date_header(env)
    if parsed is None:
        return None
    try:
        return datetime.date(parsed[0], parsed[1], parsed[2])
    except ValueError:
        return None


class _Message:
    """One message under evaluation; header and text are loaded only when a key needs them."""

    def __init__(self, user: Any, view: SelectedMailbox, i: int, index: mail.MailboxIndex) -> None:
        self.user = user
        self.view = view
        self.uid = index.uids[i]
        self.seq = i + 1
        self.flags = index.flags[i]
        self.modseq = index.modseqs[i]
        self.date = index.dates[i]
        self.size = index.sizes[i]
        self._body: _Body | None | bool = False
        self._headers: list[tuple[str, str]] | None = None
        self._text: str | None = None

    @property
    def body(self) -> _Body | None:
        if self._body is False:
            stored = mail.get_message(self.user, self.view.id, self.uid)
            self._body = None if stored is None else _Body(self.user, stored)
        return self._body  # type: ignore[return-value]

    def headers(self) -> list[tuple[str, str]]:
        if self._headers is None:
            body = self.body
            if body is None:
                self._headers = []
            else:
                raw = body.range(body.root.hstart, body.root.bstart)
                self._headers = [(n, decode_words(v.decode("latin-1")).casefold())
                                 for n, v in mime.header_fields(raw)]
        return self._headers

    def addresses(self, index: int) -> str:
        """An address field as "name <mailbox@host>" lines, for FROM/TO/CC/BCC (parsed, comments gone)."""
        body = self.body
        env = body.root.envelope if body is not None else None
        if not env or not env[index]:
            return ""
        out = []
        for name, _adl, mailbox, host in env[index]:
            if mailbox is None:
                continue
            addr = f"{mailbox}@{host}" if host else mailbox
            out.append(f"{decode_words(name)} <{addr}>" if name else addr)
        return "\n".join(out).casefold()

    def text(self) -> str:
        if self._text is None:
            body = self.body
            self._text = "" if body is None else _decoded_text(body, body.root).casefold()
        return self._text


def _decoded_text(body: _Body, e: mime.Entity) -> str:
    if e.multipart:
        return "\n".join(_decoded_text(body, p) for p in e.parts)
    if e.message is not None:
        return _decoded_text(body, e.message)
    if e.type.lower() not in ("text", "message") and e.type.lower() != "":
        return ""
    raw = body.range(e.bstart, e.end)
    cte = (e.encoding or "").lower()
    try:
        if cte == "base64":
            raw = base64.b64decode(b"".join(raw.split()))
        elif cte == "quoted-printable":
            raw = decode_qp(raw)
    except (binascii.Error, ValueError):
        pass
    charset = next((v for k, v in e.params if k == "charset"), "utf-8")
    try:
        return raw.decode(charset, "replace")
    except LookupError:
        return raw.decode("utf-8", "replace")


def _date_of(seconds: int) -> datetime.date:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).date()


class Evaluator:
    def __init__(self, s: Session, view: SelectedMailbox, table: list[str], count: int) -> None:
        self.s = s
        self.view = view
        self.lower = {k.lower(): i for i, k in enumerate(table)}
        self.count = count
        self.max_modseq = 0
        self.now = time.time()

    def keyword_bit(self, flag: str) -> int | None:
        bit = mail._SYSTEM_BY_LOWER.get(flag.lower())
        if bit is not None:
            return bit
        index = self.lower.get(flag.lower())
        return None if index is None else 1 << (mail.KEYWORD_BASE + index)

    def match(self, c: Any, m: _Message) -> bool:
        key = c[0]
        if key == "AND":
            return all(self.match(x, m) for x in c[1])
        if key == "OR":
            return self.match(c[1], m) or self.match(c[2], m)
        if key == "NOT":
            return not self.match(c[1], m)
        if key == "ALL":
            return True
        flag = _FLAG_KEYS.get(key)
        if flag is not None:
            return bool(m.flags & flag[0]) == flag[1]
        if key == "RECENT":
            return m.uid in self.view.recent
        if key == "OLD":
            return m.uid not in self.view.recent
        if key == "NEW":
            return m.uid in self.view.recent and not m.flags & mail.SEEN
        if key in ("KEYWORD", "UNKEYWORD"):
            bit = self.keyword_bit(c[1])
            has = bit is not None and bool(m.flags & bit)
            return has if key == "KEYWORD" else not has
        if key == "SEQ":
            return any(_within(m.seq, a, b, self.count) for a, b in c[1])
        if key == "UID":
            largest = self.view.uids[-1] if self.view.uids else 0
            return any(_within(m.uid, a, b, largest) for a, b in c[1])
        if key == "LARGER":
            return m.size > c[1]
        if key == "SMALLER":
            return m.size < c[1]
        if key == "MODSEQ":
            ok = m.modseq >= c[1]
            if ok:
                self.max_modseq = max(self.max_modseq, m.modseq)
            return ok
        if key in ("BEFORE", "ON", "SINCE"):
            return _compare(key, _date_of(m.date), c[1])
        if key in ("OLDER", "YOUNGER"):  # RFC 5032
            age = self.now - m.date
            return age >= c[1] if key == "OLDER" else age <= c[1]
        if key in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            body = m.body
            when = header_date(body.root.envelope) if body else None
            return _compare(key[4:], when or _date_of(m.date), c[1])
        if key in ("FROM", "TO", "CC", "BCC"):
            return _needle(c[1]) in m.addresses(_ADDRESS_INDEX[key])
        if key == "SUBJECT":
            return _header_has(m, "subject", c[1])
        if key == "HEADER":
            return _header_has(m, c[1].lower(), c[2])
        if key == "BODY":
            return _needle(c[1]) in m.text()
        if key == "TEXT":
            needle = _needle(c[1])
            return any(needle in v for _, v in m.headers()) or needle in m.text()
        if key == "SAVED":  # RFC 5182 "$"
            return m.uid in self.view.saved
        raise Bad("unsupported search key")


def _needle(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").casefold()


def _header_has(m: _Message, name: str, raw: bytes) -> bool:
    needle = _needle(raw)
    return any(n == name and needle in v for n, v in m.headers())


def _within(n: int, a: int | None, b: int | None, star: int) -> bool:
    lo = star if a is None else a
    hi = star if b is None else b
    if lo > hi:
        lo, hi = hi, lo
    return lo <= n <= hi


def _compare(kind: str, day: datetime.date, ref: datetime.date) -> bool:
    if kind == "BEFORE":
        return day < ref
    if kind == "ON":
        return day == ref
    return day >= ref


def run_search(s: Session, cmd: Search) -> tuple[list[_Message], Evaluator]:
    view = s.require_selected()
    if cmd.charset is not None and cmd.charset not in _CHARSETS:
        raise No("Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")
    with s.read() as txn:
        user = s.user(txn)
        index = mail.load_index(user, view.id)
        table = mail.keywords(user)
        known = set(view.uids)
        ev = Evaluator(s, view, table, len(view.uids))
        out = []
        positions = {u: i for i, u in enumerate(index.uids)}
        for seq, uid in enumerate(view.uids, 1):
            i = positions.get(uid)
            if i is None or uid not in known:
                continue
            m = _Message(user, view, i, index)
            m.seq = seq
            if ev.match(cmd.criteria, m):
                out.append(m)
        if cmd.name in ("SORT", "THREAD"):
            for m in out:
                _ = m.body  # the sort keys need the structure; load it inside the transaction
                if m.body is not None:
                    m.env = m.body.root.envelope  # type: ignore[attr-defined]
                    m.refs = m.body.root.refs  # type: ignore[attr-defined]
                else:
                    m.env, m.refs = None, None  # type: ignore[attr-defined]
    return out, ev


def do_search(s: Session, cmd: Search) -> Any:
    if cmd.returns is not None and "SAVE" in cmd.returns and s.selected is not None:
        s.selected.saved = set()  # RFC 5182 §2.1: a failed SEARCH leaves "$" empty
    with_modseq = any(c[0] == "MODSEQ" for c in _walk(cmd.criteria))
    if with_modseq:
        s.condstore = True
    matches, ev = run_search(s, cmd)
    numbers = [m.uid if cmd.uid else m.seq for m in matches]
    if cmd.name == "SORT":
        from .ops_thread import sort_messages

        numbers = [m.uid if cmd.uid else m.seq for m in sort_messages(matches, cmd.sort)]
        s.send(b"* SORT" + b"".join(b" %d" % n for n in numbers) + b"\r\n")
        return f"{'UID ' if cmd.uid else ''}SORT completed"
    if cmd.name == "THREAD":
        from .ops_thread import thread_messages

        s.send(b"* THREAD " + thread_messages(matches, cmd.algorithm or "REFERENCES", cmd.uid) + b"\r\n")
        return f"{'UID ' if cmd.uid else ''}THREAD completed"
    if cmd.returns is not None or s.rev2:  # RFC 4731 §3.1; RFC 9051 §6.4.4: ESEARCH always
        returns = set(cmd.returns or ("ALL",))
        if "SAVE" in returns:  # RFC 5182 §2.1: with only MIN/MAX, only those are saved
            chosen = matches
            if matches and not returns & {"ALL", "COUNT"} and returns & {"MIN", "MAX"}:
                ends = [min(matches, key=lambda m: m.uid)] if "MIN" in returns else []
                ends += [max(matches, key=lambda m: m.uid)] if "MAX" in returns else []
                chosen = ends
            assert s.selected is not None
            s.selected.saved = {m.uid for m in chosen}
            returns.discard("SAVE")
            if not returns:
                return f"{'UID ' if cmd.uid else ''}SEARCH completed"
        parts = [b'(TAG "%s")' % cmd.tag.encode("latin-1")]
        if cmd.uid:
            parts.append(b"UID")
        if numbers:
            if "MIN" in returns:
                parts.append(b"MIN %d" % min(numbers))
            if "MAX" in returns:
                parts.append(b"MAX %d" % max(numbers))
            if "ALL" in returns:
                parts.append(b"ALL " + render.sequence_set(sorted(numbers)))
        if "COUNT" in returns:
            parts.append(b"COUNT %d" % len(numbers))
        if with_modseq and numbers:
            # RFC 7162 §3.1.5: with only MIN or MAX, the MODSEQ of that message.
            by_number = {(m.uid if cmd.uid else m.seq): m.modseq for m in matches}
            if returns == {"MIN"}:
                modseq = by_number[min(numbers)]
            elif returns == {"MAX"}:
                modseq = by_number[max(numbers)]
            else:
                modseq = max(by_number.values())
            parts.append(b"MODSEQ %d" % modseq)
        s.send(b"* ESEARCH " + b" ".join(parts) + b"\r\n")
        return f"{'UID ' if cmd.uid else ''}SEARCH completed"
    line = b"* SEARCH" + b"".join(b" %d" % n for n in numbers)
    if with_modseq and numbers:
        line += b" (MODSEQ %d)" % max(m.modseq for m in matches)
    s.send(line + b"\r\n")
    return f"{'UID ' if cmd.uid else ''}SEARCH completed"


def _walk(c: Any) -> Any:
    yield c
    if c[0] == "AND":
        for x in c[1]:
            yield from _walk(x)
    elif c[0] == "OR":
        yield from _walk(c[1])
        yield from _walk(c[2])
    elif c[0] == "NOT":
        yield from _walk(c[1])

