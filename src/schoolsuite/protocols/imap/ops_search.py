"""SEARCH, SORT, THREAD and ESEARCH (RFC 3501 §6.4.4, RFC 4731, RFC 5256, RFC 7162 §3.1.5).

Flag, size, date, uid and MODSEQ keys are answered from the index pages
alone; FROM/TO/CC/BCC/SUBJECT and SENT* from the stored envelope (one record,
no message bytes); HEADER, BODY and TEXT decrypt the message and search its
text parts one by one, stopping at the first hit. Keys of an AND are tried
cheapest first, and UID/sequence-number keys of the top-level AND limit which
messages are looked at at all. There is no index of words ("nothing is
analysed"): a body search reads every candidate message, so in a large
mailbox the scan runs in a small thread pool (:func:`use_threads`) and the
reactor keeps serving the other sessions meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import datetime
import threading
import time
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.utils import parsedate_tz
from typing import Any, NamedTuple

from twisted.internet import defer

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
# Charsets in which an ASCII byte always stands for that ASCII character (so ASCII text can be searched as
# bytes); stateful 7-bit ones such as ISO-2022-JP are not among them.
_ASCII_SUPERSETS = frozenset(("", "us-ascii", "ascii", "utf-8", "utf8", "latin1", "latin-1"))
_ASCII_SUPERSET_PREFIXES = ("iso-8859-", "windows-125", "cp125")
# Keys by what they need: the index page only (0), the stored structure/envelope (1), the message bytes (2).
_STRUCTURE_KEYS = frozenset(("FROM", "TO", "CC", "BCC", "SUBJECT", "SENTBEFORE", "SENTON", "SENTSINCE"))
_CONTENT_KEYS = frozenset(("HEADER", "BODY", "TEXT"))


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


class _Needle(NamedTuple):
    """A search string casefolded, and as ASCII bytes when it is ASCII (for the bytes fast path)."""

    text: str
    ascii: bytes | None


def _needle(raw: bytes) -> _Needle:
    text = raw.decode("utf-8", "replace").casefold()
    return _Needle(text, text.encode("ascii") if text.isascii() else None)


class _Message:
    """One message under evaluation; structure and bytes are loaded only when a key needs them."""

    __slots__ = ("user", "view", "uid", "seq", "flags", "modseq", "date", "size", "_body", "_headers", "_parts",
                 "env", "refs")

    def __init__(self, user: Any, view: SelectedMailbox, seq: int, uid: int, flags: int, modseq: int, date: int,
                 size: int) -> None:
        self.user = user
        self.view = view
        self.seq = seq
        self.uid = uid
        self.flags = flags
        self.modseq = modseq
        self.date = date
        self.size = size
        self._body: _Body | None | bool = False
        self._headers: list[tuple[str, str]] | None = None
        self._parts: dict[int, bytes] | None = None  # decoded text part bytes by offset (several BODY keys)

    @property
    def body(self) -> _Body | None:
        if self._body is False:
            stored = mail.get_message(self.user, self.view.id, self.uid)
            self._body = None if stored is None else _Body(self.user, stored)
        return self._body  # type: ignore[return-value]

    @property
    def envelope(self) -> list[Any] | None:
        body = self.body
        return body.root.envelope if body is not None else None

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
        env = self.envelope
        if not env or not env[index]:
            return ""
        out = []
        for name, _adl, mailbox, host in env[index]:
            if mailbox is None:
                continue
            addr = f"{mailbox}@{host}" if host else mailbox
            out.append(f"{decode_words(name)} <{addr}>" if name else addr)
        return "\n".join(out).casefold()

    def subject(self) -> str:
        """RFC 3501 §6.4.4 SUBJECT: the envelope's subject field, encoded words decoded."""
        env = self.envelope
        return decode_words(env[1]).casefold() if env and env[1] else ""

    def body_contains(self, needle: _Needle) -> bool:
        """Whether a text part of the body contains ``needle``: part by part, stopping at the first hit."""
        body = self.body
        if body is None:
            return False
        for part in _text_parts(body.root):
            if self._part_contains(body, part, needle):
                return True
        return False

    def _part_contains(self, body: _Body, e: mime.Entity, needle: _Needle) -> bool:
        if self._parts is None:
            self._parts = {}
        raw = self._parts.get(e.bstart)
        if raw is None:
            raw = self._parts[e.bstart] = _decoded_part(body, e)
        charset = next((v for k, v in e.params if k == "charset"), "").lower()
        if needle.ascii is not None and raw.isascii() and (
                charset in _ASCII_SUPERSETS or charset.startswith(_ASCII_SUPERSET_PREFIXES)):
            return needle.ascii in raw.lower()  # ASCII text: casefold is lower(), no decoding needed
        try:
            text = raw.decode(charset or "utf-8", "replace")
        except LookupError:
            text = raw.decode("utf-8", "replace")
        return needle.text in text.casefold()


def _text_parts(e: mime.Entity) -> Iterator[mime.Entity]:
    """The leaf entities whose text a BODY search looks at, in order (text/*, untyped, inside message/rfc822)."""
    if e.multipart:
        for p in e.parts:
            yield from _text_parts(p)
    elif e.message is not None:
        yield from _text_parts(e.message)
    elif e.type.lower() in ("text", "message", ""):
        yield e


def _decoded_part(body: _Body, e: mime.Entity) -> bytes:
    """A leaf's body with its Content-Transfer-Encoding undone (as given when that fails)."""
    raw = body.range(e.bstart, e.end)
    cte = (e.encoding or "").lower()
    try:
        if cte == "base64":
            return base64.b64decode(b"".join(raw.split()))
        if cte == "quoted-printable":
            return decode_qp(raw)
    except (binascii.Error, ValueError):
        pass
    return raw


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
        self._needles: dict[bytes, _Needle] = {}

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
            when = header_date(m.envelope)
            return _compare(key[4:], when or _date_of(m.date), c[1])
        if key in ("FROM", "TO", "CC", "BCC"):
            return self.needle(c[1]).text in m.addresses(_ADDRESS_INDEX[key])
        if key == "SUBJECT":
            return self.needle(c[1]).text in m.subject()
        if key == "HEADER":
            name, needle = c[1].lower(), self.needle(c[2]).text
            return any(n == name and needle in v for n, v in m.headers())
        if key == "BODY":
            return m.body_contains(self.needle(c[1]))
        if key == "TEXT":
            needle = self.needle(c[1])
            return any(needle.text in v for _, v in m.headers()) or m.body_contains(needle)
        if key == "SAVED":  # RFC 5182 "$"
            return m.uid in self.view.saved
        raise Bad("unsupported search key")

    def needle(self, raw: bytes) -> _Needle:
        found = self._needles.get(raw)
        if found is None:
            found = self._needles[raw] = _needle(raw)
        return found


def _cost(c: Any) -> int:
    """What a criterion needs: the index page only (0), the stored structure (1), the message bytes (2)."""
    key = c[0]
    if key == "AND":
        return max((_cost(x) for x in c[1]), default=0)
    if key == "OR":
        return max(_cost(c[1]), _cost(c[2]))
    if key == "NOT":
        return _cost(c[1])
    return 2 if key in _CONTENT_KEYS else 1 if key in _STRUCTURE_KEYS else 0


def cheapest_first(c: Any) -> Any:
    """The same criteria with every AND's keys, and each OR's two sides, in order of cost: a message that fails
    a flag or UID key is then never decrypted, one whose subject matches needs no body read."""
    key = c[0]
    if key == "AND":
        if len(c[1]) == 1:
            return cheapest_first(c[1][0])
        return ("AND", sorted((cheapest_first(x) for x in c[1]), key=_cost))
    if key == "OR":  # commutative too: the cheaper side first, the other only when it fails
        a, b = cheapest_first(c[1]), cheapest_first(c[2])
        return ("OR", b, a) if _cost(b) < _cost(a) else ("OR", a, b)
    if key == "NOT":
        return ("NOT", cheapest_first(c[1]))
    return c


def candidates(c: Any, view: SelectedMailbox) -> list[int] | None:
    """Positions (0-based sequence numbers) the UID and sequence-number keys of the top-level AND (or the one
    top-level key) allow, or None for all: the other messages are not looked at."""
    allowed: set[int] | None = None
    uids = view.uids
    count = len(uids)
    for key in c[1] if c[0] == "AND" else [c]:
        if key[0] not in ("UID", "SEQ"):
            continue
        here: set[int] = set()
        for a, b in key[1]:
            if key[0] == "UID":
                largest = uids[-1] if uids else 0
                lo, hi = sorted((largest if a is None else a, largest if b is None else b))
                here.update(range(uids.bisect_left(lo), uids.bisect_right(hi)))
            else:
                lo, hi = sorted((count if a is None else a, count if b is None else b))
                here.update(range(max(lo, 1) - 1, min(hi, count)))
        allowed = here if allowed is None else allowed & here
    return None if allowed is None else sorted(allowed)


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


# -- scans off the reactor thread -------------------------------------------------------

SCAN_IN_THREAD_FROM = 2000  # a search that opens stored messages in a mailbox this large runs in a worker
FLUSH_GRACE_SECONDS = 0.1  # on shutdown, after the workers are gone


class ScanPool:
    """Worker threads for searches that open many stored messages (one pool per server).

    Each scan holds one read transaction (an LMDB snapshot, readable from any
    thread); the GIL is handed back to the reactor every few milliseconds, so the
    other sessions keep being served while a long body search runs. Two threads:
    concurrent scans beyond that wait their turn instead of thrashing two cores.
    """

    def __init__(self, reactor: Any, threads: int = 2) -> None:
        from twisted.python.threadpool import ThreadPool

        self.reactor = reactor
        self.stopping = threading.Event()  # set on shutdown: a running scan gives up at its next check
        self.pool = ThreadPool(0, threads, name="imap-search")
        self._drained: defer.Deferred[None] | None = None
        reactor.callWhenRunning(self.pool.start)

    def run(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        from twisted.internet import threads

        return threads.deferToThreadPool(self.reactor, self.pool, fn, *args)

    def drain(self) -> defer.Deferred[None]:
        """Shutdown: running scans stop early; fires once no worker is left, so the store can close."""
        if self._drained is None:
            self.stopping.set()
            done: defer.Deferred[None] = defer.Deferred()

            def fire() -> None:
                if not done.called:
                    done.callback(None)

            def wait() -> None:
                self.pool.stop()  # joins the workers
                # A stopped scan's NO [UNAVAILABLE] is written by then; a moment more lets it leave (TLS) before
                # the server closes the connections.
                self.reactor.callFromThread(self.reactor.callLater, FLUSH_GRACE_SECONDS, fire)

            threading.Thread(target=wait, name="imap-search-drain", daemon=True).start()
            self._drained = done
        return self._drained


_POOLS: dict[int, tuple[Any, ScanPool]] = {}  # id(services) → (services, its pool)


def use_threads(services: Any, reactor: Any) -> ScanPool:
    """The scan pool of the server whose services these are (made on first use)."""
    entry = _POOLS.get(id(services))
    if entry is None or entry[0] is not services:
        entry = _POOLS[id(services)] = (services, ScanPool(reactor))
    return entry[1]


def _pool_of(s: Session) -> ScanPool | None:
    entry = _POOLS.get(id(s.services))
    return entry[1] if entry is not None and entry[0] is s.services else None


def run_search(s: Session, cmd: Search, stopping: threading.Event | None = None
               ) -> tuple[list[_Message], Evaluator]:
    """The messages of the selected mailbox that match (in sequence order), in one read transaction.

    Safe on a worker thread: while it runs the session executes no other command,
    so the view it reads does not change."""
    view = s.require_selected()
    if cmd.charset is not None and cmd.charset not in _CHARSETS:
        raise No("Unsupported charset", "BADCHARSET (UTF-8 US-ASCII)")
    criteria = cheapest_first(cmd.criteria)
    with s.read() as txn:
        user = s.user(txn)
        index = mail.load_index(user, view.id)
        table = mail.keywords(user)
        ev = Evaluator(s, view, table, len(view.uids))
        out = []
        view_uids = list(view.uids)
        # The view is normally the index itself; after other sessions' changes not yet reported it is not.
        at = None if view_uids == index.uids.tolist() else {u: i for i, u in enumerate(index.uids)}
        uids, flags, modseqs, dates, sizes = index.uids, index.flags, index.modseqs, index.dates, index.sizes
        positions = candidates(criteria, view)
        match = ev.match
        index_only = _cost(criteria) == 0
        m = _Message(user, view, 0, 0, 0, 0, 0, 0)
        for n, p in enumerate(range(len(view_uids)) if positions is None else positions):
            if not n & 1023 and stopping is not None and stopping.is_set():
                raise No("Server shutting down", "UNAVAILABLE")
            i = p if at is None else at.get(view_uids[p])
            if i is None:
                continue
            if index_only:  # one object reused until it matches: nothing but the index entry is looked at
                m.seq, m.uid, m.flags = p + 1, uids[i], flags[i]
                m.modseq, m.date, m.size = modseqs[i], dates[i], sizes[i]
            else:
                m = _Message(user, view, p + 1, uids[i], flags[i], modseqs[i], dates[i], sizes[i])
            if match(criteria, m):
                out.append(m)
                m = _Message(user, view, 0, 0, 0, 0, 0, 0)
        if cmd.name in ("SORT", "THREAD"):
            for m in out:
                body = m.body  # the sort keys need the structure; load it inside the transaction
                m.env = body.root.envelope if body is not None else None
                m.refs = body.root.refs if body is not None else None
    return out, ev


def do_search(s: Session, cmd: Search) -> Any:
    if cmd.returns is not None and "SAVE" in cmd.returns and s.selected is not None:
        s.selected.saved = set()  # RFC 5182 §2.1: a failed SEARCH leaves "$" empty
    with_modseq = any(c[0] == "MODSEQ" for c in _walk(cmd.criteria))
    if with_modseq:
        s.condstore = True
    view = s.require_selected()
    pool = _pool_of(s)
    if pool is not None and len(view.uids) >= SCAN_IN_THREAD_FROM and (
            cmd.name != "SEARCH" or _cost(cmd.criteria) > 0):
        return pool.run(run_search, s, cmd, pool.stopping).addCallback(
            lambda found: _answer(s, cmd, with_modseq, found[0]))
    return _answer(s, cmd, with_modseq, run_search(s, cmd)[0])


def _answer(s: Session, cmd: Search, with_modseq: bool, matches: list[_Message]) -> str:
    """SEARCH / ESEARCH / SORT / THREAD responses for the matching messages; the tagged OK's text."""
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

