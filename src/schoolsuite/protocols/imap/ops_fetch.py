"""FETCH and UID FETCH (RFC 3501 §6.4.5, §7.4.2; RFC 3516 BINARY; RFC 7162 CHANGEDSINCE/VANISHED).

Everything comes from what delivery stored: the index page (flags, size,
internal date, MODSEQ), the stored MIME structure (ENVELOPE, BODYSTRUCTURE,
section offsets), and for body sections only the byte range they cover.
Non-PEEK body fetches set ``\\Seen`` first (one write), then report FLAGS.
"""

from __future__ import annotations

import base64
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Union

from prometheus_client import Counter
from twisted.internet import defer
from twisted.logger import Logger

from ...metrics import REGISTRY
from ...storage import mail, mime
from ...storage.store import CHUNK_SIZE
from . import cte, render
from .cte import decode_qp  # noqa: F401 - also used by ops_search
from .errors import Cut, No
from .grammar import Fetch, FetchItem, Section
from .session import Session

log = Logger(namespace="schoolsuite.imap")

_SETS_SEEN = frozenset(("BODY", "BINARY", "RFC822", "RFC822.TEXT"))


def do_fetch(s: Session, cmd: Fetch) -> Any:
    view = s.require_selected()
    uids = view.resolve(cmd.sequence, cmd.uid)
    items = list(cmd.items)
    names = {i.name for i in items}
    if cmd.uid and "UID" not in names:
        items.insert(0, FetchItem("UID"))
    if cmd.changed_since is not None or "MODSEQ" in names:
        s.condstore = True  # RFC 7162 §3.1: CONDSTORE enabling commands
        if "MODSEQ" not in names:
            items.append(FetchItem("MODSEQ"))
    sets_seen = not view.readonly and any(
        i.name in _SETS_SEEN and (i.section is not None or i.name.startswith("RFC822")) for i in items)
    reply = "FETCH completed" if not cmd.uid else "UID FETCH completed"
    if cmd.vanished:
        _vanished(s, cmd, uids)
    if not sets_seen or not uids:
        pending = _render(s, cmd, uids, items, {})
        return reply if pending is None else pending.addCallback(lambda _: reply)

    def run(user: Any, txn: Any) -> list[mail.IndexEntry]:
        box = mail.get_mailbox(user, view.id)
        if box is None:
            return []
        changed, _ = mail.store_flags(user, box, uids, "add", mail.SEEN)
        if changed:
            mail.save_mailbox(user, box)
            s.notify(txn, (box.id,))
        return changed

    def done(changed: list[mail.IndexEntry]) -> Any:
        for entry in changed:
            view.own.add((entry.uid, entry.modseq))
        pending = _render(s, cmd, uids, items, {e.uid: e for e in changed})
        return reply if pending is None else pending.addCallback(lambda _: reply)

    return s.write(run, durable=False).addCallback(done)  # \Seen is a flag change (see Session.write)


def _vanished(s: Session, cmd: Fetch, uids: list[int]) -> None:
    """RFC 7162 §3.2.6: expunged uids of the set since CHANGEDSINCE."""
    view = s.selected
    assert view is not None and cmd.changed_since is not None
    bounds = [(a or 0xFFFFFFFF, b or 0xFFFFFFFF) for a, b in cmd.sequence]
    lo = min(min(a, b) for a, b in bounds)
    hi = max(max(a, b) for a, b in bounds)
    with s.read() as txn:
        user = s.user(txn)
        box = mail.get_mailbox(user, view.id)
        candidates = mail.vanished_since(user, box, cmd.changed_since, lo, hi) if box is not None else []
    gone = [u for u in candidates if any(min(a, b) <= u <= max(a, b) for a, b in bounds)]
    if gone:
        s.send(b"* VANISHED (EARLIER) " + render.sequence_set(gone) + b"\r\n")


def section_label(name: str, sec: Section, *, with_partial: bool = True) -> bytes:
    text = ".".join(str(p) for p in sec.part)
    if sec.specifier:
        text = f"{text}.{sec.specifier}" if text else sec.specifier
        if sec.fields:
            text += " (" + " ".join(sec.fields) + ")"
    label = f"{name.replace('.PEEK', '')}[{text}]"
    if sec.partial is not None and with_partial:
        label += f"<{sec.partial[0]}>"
    return label.encode("latin-1")


# A FETCH of up to SMALL_FETCH messages that asks for no message text (FLAGS, UID, sizes) is answered in one
# go. Any other is rendered in batches, one per reactor turn, so the other sessions are served in between and a
# slow reader holds at most one batch beyond the transport's write buffer, which paces the batches
# (Session.in_turns): batches of about TURN_BYTES when message text is asked for (ten messages of 25 MB are
# never built at once), and beyond SMALL_FETCH messages (a client's first sync: UID FETCH 1:* (FLAGS) over
# 100,000 messages) also of at most about TURN_SECONDS.
SMALL_FETCH = 500
TURN_SECONDS = 0.004
TURN_BYTES = 512 << 10
_PAGE = 128  # uids whose index entries a batch reads at once (one index page when they are consecutive)

# A literal of more than STREAM_LITERAL bytes that is a byte range of the stored message (BODY[], RFC822,
# BODY[TEXT], BODY[n], BODY[n.MIME], their partials) is never built in memory: its response is written as
# the text before the literal, then the literal's bytes one PIECE per reactor turn, each read in a short
# read transaction of its own, aligned to the store's content chunks and only when the transport wants
# more (the same pacing as the batches), then the rest of the response. Memory per FETCH stays about one
# PIECE beyond the transport's buffer whatever the message size. 1 MiB: below it a literal costs less to
# build than the turns it would take (four content chunks), and a batch then stays within about
# TURN_BYTES + STREAM_LITERAL. While a response is begun and not finished (Session.open_response) no
# other byte may go out on the connection; a piece that cannot be read as announced (the message
# expunged and its content freed by another session) ends the connection instead (Cut).
STREAM_LITERAL = 1 << 20
PIECE = TURN_BYTES - TURN_BYTES % CHUNK_SIZE or CHUNK_SIZE
STREAMED = Counter("schoolsuite_imap_streamed_literals_total",
                   "FETCH literals streamed from the store instead of built in memory: begun, and cut (the "
                   "connection closed mid-literal since the rest could not be read).", ["result"],
                   registry=REGISTRY)


@dataclass
class _Stream:
    """The bytes ``[start, end)`` of a stored message's content, still to be written."""

    content_id: bytes
    start: int
    end: int
    decoder: Any = None  # BINARY: what the bytes read go through (cte), then ``skip`` bytes dropped and
    skip: int = 0  # at most ``length`` sent
    length: int = 0


@dataclass(frozen=True)
class _Streamed:
    """A FETCH item whose literal is streamed: its text up to the literal's ``{n}\r\n``, and the bytes."""

    head: bytes
    stream: _Stream


_Part = Union[bytes, _Streamed]


def _render(s: Session, cmd: Fetch, uids: list[int], items: list[FetchItem],
            seen_now: dict[int, mail.IndexEntry]) -> defer.Deferred[None] | None:
    """FETCH responses: None once all are sent, or a Deferred that fires when the last batch is."""
    job = _Responses(s, cmd, uids, items, seen_now)
    timed = len(uids) > SMALL_FETCH
    if not timed and not job.need_structure:
        job.batch(bounded=False)
        return None
    if job.batch(bounded=True, timed=timed):
        return None
    return s.in_turns(lambda: job.batch(bounded=True, timed=timed))


class _Responses:
    """The FETCH responses of one command, rendered from where the last batch stopped.

    Each batch reads its own snapshot. A message expunged by another session meanwhile is left out
    (RFC 2180 §4.1.2); the others are reported as they are at their batch. ``seen_now`` are the entries
    this command just set \\Seen on, as written: a snapshot may predate that write's commit (see
    Session.write), so they win over an older snapshot entry, in every batch.
    """

    def __init__(self, s: Session, cmd: Fetch, uids: list[int], items: list[FetchItem],
                 seen_now: dict[int, mail.IndexEntry]) -> None:
        view = s.selected
        assert view is not None
        self.s = s
        self.view = view
        self.cmd = cmd
        self.uids = uids
        self.items = items
        self.seen_now = seen_now
        self.pos = 0
        self.filtered = cmd.changed_since is None
        self.need_structure = any(
            i.name not in ("UID", "FLAGS", "MODSEQ", "INTERNALDATE", "RFC822.SIZE") for i in items)
        self.has_flags = any(i.name == "FLAGS" for i in items)
        self.segments: deque[bytes | _Stream] = deque()  # the rest of a response being streamed

    def batch(self, *, bounded: bool, timed: bool = True) -> bool:
        """Render the next batch (all the rest unless ``bounded``; of TURN_BYTES, and of TURN_SECONDS if
        ``timed``); True once every message is done."""
        s, view, cmd, items, seen_now = self.s, self.view, self.cmd, self.items, self.seen_now
        if self.segments:
            self._stream_turn()
            return not self.segments and self.pos >= len(self.uids)
        need_structure, has_flags = self.need_structure, self.has_flags
        started = time.perf_counter()
        written = 0
        with s.read() as txn:
            user = s.user(txn)
            if not self.filtered:
                # RFC 7162 §3.1.4 from the change log: only messages changed since then are looked at.
                changed = {c.uid for c in mail.changes_since(user, view.id, cmd.changed_since) if not c.expunged}
                self.uids = [u for u in self.uids if u in changed]
                self.filtered = True
            uids = self.uids
            table = mail.keywords(user)
            s.announce_keywords(table)
            out: list[bytes] = []
            flag_cache: dict[int, bytes] = {}
            seq_of = view.seq_of
            pos = self.pos
            step = _PAGE if bounded else len(uids)  # unbounded: every entry read at once
            while pos < len(uids):
                page = uids[pos:pos + step]
                entries = mail.index_entries(user, view.id, page)
                for uid in page:
                    pos += 1
                    entry = entries.get(uid)
                    seq = seq_of(uid)
                    if entry is None or seq is None:
                        continue  # expunged by another session meanwhile: nothing to say (RFC 2180 §4.1.2)
                    if seen_now:
                        seen = seen_now.get(uid)
                        if seen is not None and seen.modseq >= entry.modseq:
                            entry = seen
                    if cmd.changed_since is not None and entry.modseq <= cmd.changed_since:
                        continue
                    stored = mail.get_message(user, view.id, uid) if need_structure else None
                    if need_structure and stored is None:
                        continue
                    body = _Body(user, stored) if stored is not None else None
                    parts = []
                    for item in items:
                        parts.append(_item(s, item, entry, table, body, view.recent, flag_cache))
                    if uid in seen_now and not has_flags:
                        parts.append(b"FLAGS (" + " ".join(_flags(entry.flags | mail.SEEN, table, uid, view.recent))
                                     .encode("utf-8") + b")")
                    if any(isinstance(p, _Streamed) for p in parts):
                        # A literal too big to build: the text up to it now, its bytes in the next turns.
                        self.segments = _segments(seq, parts)
                        STREAMED.labels("begun").inc(sum(isinstance(p, _Streamed) for p in parts))
                        out.append(self.segments.popleft())  # type: ignore[arg-type]
                        s.open_response = True
                        break
                    response = b"* %d FETCH (%s)\r\n" % (seq, b" ".join(parts))  # type: ignore[arg-type]
                    out.append(response)
                    if len(out) >= 256:
                        s.send(b"".join(out))
                        out.clear()
                    if bounded:
                        if need_structure:  # bodies and headers: the bytes and the time of every message
                            written += len(response)
                            if written >= TURN_BYTES or timed and time.perf_counter() - started >= TURN_SECONDS:
                                break
                        elif not pos & 31 and time.perf_counter() - started >= TURN_SECONDS:
                            break
                else:
                    continue
                break
            self.pos = pos
            if out:
                s.send(b"".join(out))
        return not self.segments and pos >= len(uids)

    def _stream_turn(self) -> None:
        """Write the streamed response on: one PIECE of its literal, and the text after it up to the next."""
        s = self.s
        segments = self.segments
        read = False
        while segments:
            seg = segments[0]
            if isinstance(seg, bytes):
                s.send(seg)
                segments.popleft()
                continue
            if read:
                break
            try:
                piece = self._piece(seg)
                read = True
                seg.start += len(piece)
                if seg.decoder is not None:
                    piece = self._decoded(seg, piece)
            except Cut:
                STREAMED.labels("cut").inc()
                raise
            if seg.start >= seg.end:
                segments.popleft()
            s.send(piece)
        s.open_response = bool(segments)

    def _decoded(self, seg: _Stream, raw: bytes) -> bytes:
        """What a piece of a transformed stream (BINARY decoding, base64 re-encoding) gives, within the bytes
        announced (Cut if fewer)."""
        try:
            out = seg.decoder.feed(raw)
            if seg.start >= seg.end:
                out += seg.decoder.end()
        except cte.UndecodableError:
            raise Cut("part no longer decodes as measured") from None
        if seg.skip:
            dropped = min(seg.skip, len(out))
            out, seg.skip = out[dropped:], seg.skip - dropped
        out = out[: seg.length]
        seg.length -= len(out)
        if seg.length and seg.start >= seg.end:
            raise Cut("decoded part shorter than announced")
        if not seg.length:
            seg.start = seg.end  # all announced bytes sent: read no further
        return out

    def _piece(self, seg: _Stream) -> bytes:
        """The next PIECE of a streamed literal, up to a chunk boundary, in a read transaction of its own.

        The content is immutable and reference-counted: it reads the same until the last message that
        refers to it is expunged, then not at all. Bytes that cannot be read as announced are never
        replaced by others: the connection is ended (Cut), which a client sees as a short literal.
        """
        stop = _piece_end(seg.start, seg.end)
        try:
            with self.s.read() as txn:
                data = mail.read_message(self.s.user(txn), seg.content_id, seg.start, stop)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the literal cannot be finished
            log.info("IMAP FETCH: a streamed literal could not be read on ({error!r}); closing", error=exc)
            raise Cut("message content gone while it was sent") from None
        if len(data) != stop - seg.start:
            raise Cut("message content shorter than announced")
        return data


def _piece_end(start: int, end: int) -> int:
    """Where the piece of a streamed literal that begins at ``start`` ends: a content chunk boundary."""
    return min(end, (start // CHUNK_SIZE) * CHUNK_SIZE + PIECE)


def _segments(seq: int, parts: list[_Part]) -> deque[bytes | _Stream]:
    """A FETCH response as text and streamed literals, in order; adjacent text joined; text comes first."""
    out: deque[bytes | _Stream] = deque()
    text = [b"* %d FETCH (" % seq]
    for n, part in enumerate(parts):
        if n:
            text.append(b" ")
        if isinstance(part, bytes):
            text.append(part)
            continue
        text.append(part.head)
        out.append(b"".join(text))
        out.append(part.stream)
        text = []
    text.append(b")\r\n")
    out.append(b"".join(text))
    return out


def _flags(mask: int, table: list[str], uid: int, recent: set[int]) -> list[str]:
    flags = mail.mask_to_flags(mask, table)
    if uid in recent:
        flags.append("\\Recent")
    return flags


class _Body:
    """Lazy access to one message's bytes and structure."""

    def __init__(self, user: Any, stored: mail.StoredMessage) -> None:
        self.user = user
        self.stored = stored
        self.root = stored.structure
        self._all: bytes | None = None

    def range(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        if self._all is None and self.root.end <= CHUNK_SIZE:
            self._all = mail.read_message(self.user, self.stored.content_id, size=self.root.end)
        if self._all is not None:
            return self._all[start:end]
        return mail.read_message(self.user, self.stored.content_id, start, end)


def _item(s: Session, item: FetchItem, entry: mail.IndexEntry, table: list[str], body: _Body | None,
          recent: set[int], flag_cache: dict[int, bytes]) -> _Part:
    name = item.name
    if name == "UID":
        return b"UID %d" % entry.uid
    if name == "FLAGS":
        rendered = flag_cache.get(entry.flags)  # one rendering per distinct mask in this response
        if rendered is None:
            rendered = " ".join(mail.mask_to_flags(entry.flags, table)).encode("utf-8")
            flag_cache[entry.flags] = rendered
        if entry.uid in recent:
            rendered = rendered + b" \\Recent" if rendered else b"\\Recent"
        return b"FLAGS (" + rendered + b")"
    if name == "MODSEQ":
        return b"MODSEQ (%d)" % entry.modseq
    if name == "INTERNALDATE":
        return b"INTERNALDATE " + render.internal_date(entry.date)
    if name == "RFC822.SIZE":
        return b"RFC822.SIZE %d" % entry.size
    assert body is not None
    root = body.root
    if name == "ENVELOPE":
        return b"ENVELOPE " + render.envelope(root.envelope)
    if name == "BODYSTRUCTURE":
        return b"BODYSTRUCTURE " + render.bodystructure(root, True)
    if name == "BODY" and item.section is None:
        return b"BODY " + render.bodystructure(root, False)
    if name == "RFC822":
        return _range_literal(b"RFC822 ", body, 0, root.end)
    if name == "RFC822.HEADER":
        return b"RFC822.HEADER " + _literal(body.range(root.hstart, root.bstart))
    if name == "RFC822.TEXT":
        return _range_literal(b"RFC822.TEXT ", body, root.bstart, root.end)
    sec = item.section
    assert sec is not None
    if name.startswith("BINARY"):
        return _binary(item, sec, body)
    span = section_span(body, sec) if root.end > STREAM_LITERAL else None  # only a large message streams
    if span is not None:
        start, end = span
        if sec.partial is not None:
            start = min(start + sec.partial[0], end)
            end = min(start + sec.partial[1], end)
        if end - start > STREAM_LITERAL:
            return _range_literal(section_label(name, sec) + b" ", body, start, end)
    elif root.end > STREAM_LITERAL and sec.part and not sec.specifier:
        streamed = _binary_cte_part(name, sec, body)
        if streamed is not None:
            return streamed
    data = section_bytes(body, sec)
    if data is None:
        return section_label(name, sec) + b" NIL"
    if sec.partial is not None:
        start, length = sec.partial
        data = data[start : start + length]
    return section_label(name, sec) + b" " + _literal(data)


def _literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def _range_literal(label: bytes, body: _Body, start: int, end: int) -> _Part:
    """``label`` and the message bytes ``[start, end)`` as a literal: built, or streamed when large."""
    if end - start > STREAM_LITERAL:
        return _Streamed(label + b"{%d}\r\n" % (end - start), _Stream(body.stored.content_id, start, end))
    return label + _literal(body.range(start, end))


def _binary_cte_part(name: str, sec: Section, body: _Body) -> _Part | None:
    """BODY[n] of a large part in Content-Transfer-Encoding binary (section_bytes): looked through piece by
    piece in the batch's snapshot for a NUL, then streamed as it is, or encoded in base64 lines (RFC 3516
    §4.2) piece by piece; None when it is not such a part."""
    target = mime.resolve(body.root, list(sec.part))
    if target is None or target.multipart or (target.encoding or "").lower() != "binary":
        return None
    start, end = target.bstart, target.end
    if end - start <= STREAM_LITERAL:
        return None
    pos, nul = start, False
    while pos < end and not nul:
        stop = _piece_end(pos, end)
        nul = b"\x00" in mail.read_message(body.user, body.stored.content_id, pos, stop)
        pos = stop
    label = section_label(name, sec) + b" "
    lo, hi = (sec.partial[0], sec.partial[0] + sec.partial[1]) if sec.partial is not None else (0, 1 << 62)
    if not nul:
        a, b = min(start + lo, end), min(start + hi, end)
        return _Streamed(label + b"{%d}\r\n" % (b - a), _Stream(body.stored.content_id, a, b)) if b > a \
            else label + b"{0}\r\n"
    length = max(0, min(cte.Base64Lines.size(end - start), hi) - lo)
    if not length:
        return label + b"{0}\r\n"
    return _Streamed(label + b"{%d}\r\n" % length,
                     _Stream(body.stored.content_id, start, end, cte.Base64Lines(), lo, length))


def section_span(body: _Body, sec: Section) -> tuple[int, int] | None:
    """The message bytes a section is (RFC 3501 §6.4.5), when it is a plain slice of the stored message:
    not for a part that does not exist, header field selections, or a part sent re-encoded."""
    root = body.root
    target = mime.resolve(root, list(sec.part)) if sec.part else root
    if target is None:
        return None
    if sec.specifier == "MIME":
        return target.hstart, target.bstart
    if sec.specifier in ("HEADER", "TEXT"):
        if sec.part:
            if target.message is None:
                return None
            target = target.message
        if sec.specifier == "TEXT":
            return target.bstart, target.end
        return target.hstart, target.bstart
    if sec.specifier:
        return None
    if not sec.part:
        return 0, root.end
    if (target.encoding or "").lower() == "binary":
        return None  # may hold NUL: see section_bytes
    return target.bstart, target.end


def section_bytes(body: _Body, sec: Section) -> bytes | None:
    """The bytes a section names (RFC 3501 §6.4.5), or None when the part does not exist."""
    span = section_span(body, sec)
    if span is not None:
        return body.range(*span)
    target = mime.resolve(body.root, list(sec.part)) if sec.part else body.root
    if target is None:
        return None
    if sec.specifier:  # HEADER.FIELDS (.NOT), or HEADER/TEXT of a part that is not a message
        if sec.part:
            if target.message is None:
                return b""
            target = target.message
        header = body.range(target.hstart, target.bstart)
        return filter_header(header, set(sec.fields), sec.specifier == "HEADER.FIELDS.NOT")
    data = body.range(target.bstart, target.end)  # a part in Content-Transfer-Encoding binary
    if b"\x00" in data:
        # RFC 3516 §4.2: a binary part cannot go out in a plain literal; send it base64-encoded.
        encoded = base64.b64encode(data)
        data = b"\r\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76)) + b"\r\n"
    return data


def filter_header(header: bytes, names: set[str], exclude: bool) -> bytes:
    """The header fields named (or all but those, for .NOT), followed by the blank line."""
    out = []
    keep = False
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().decode("latin-1").upper()
        keep = (name in names) != exclude and b":" in line
        if keep:
            out.append(line)
    return b"".join(out) + b"\r\n"


def _decoder(encoding: str | None) -> Any:
    d = cte.decoder(encoding)
    if d is None:
        raise No("Unknown Content-Transfer-Encoding", "UNKNOWN-CTE")  # RFC 3516 §4.3
    return d


def _decode(data: bytes, encoding: str | None) -> bytes:
    d = _decoder(encoding)
    try:
        return d.feed(data) + d.end()
    except cte.UndecodableError:
        raise No("Cannot decode the part's content", "UNKNOWN-CTE") from None


def _binary(item: FetchItem, sec: Section, body: _Body) -> _Part:
    root = body.root
    target = mime.resolve(root, list(sec.part)) if sec.part else root
    if target is None:
        return section_label(item.name, sec) + b" NIL"
    if not sec.part:
        start, end, encoding = 0, root.end, None
    else:
        if target.multipart:
            raise No("BINARY of a multipart", "UNKNOWN-CTE")
        start, end, encoding = target.bstart, target.end, target.encoding
    if end - start > STREAM_LITERAL:
        return _binary_streamed(item, sec, body, start, end, encoding)
    data = _decode(body.range(start, end), encoding)
    if item.name == "BINARY.SIZE":
        return b"BINARY.SIZE[%s] %d" % (".".join(str(p) for p in sec.part).encode(), len(data))
    if sec.partial is not None:
        data = data[sec.partial[0] : sec.partial[0] + sec.partial[1]]
    label = section_label("BINARY", sec)
    if b"\x00" in data:
        return label + b" ~{%d}\r\n" % len(data) + data  # RFC 3516 literal8
    return label + b" " + _literal(data)


def _binary_streamed(item: FetchItem, sec: Section, body: _Body, start: int, end: int,
                     encoding: str | None) -> _Part:
    """BINARY of a large part: decoded once piece by piece for its size (and whether the bytes sent hold a
    NUL, which needs literal8), then streamed decoding again; never whole in memory. The first pass runs
    in this batch's snapshot (one read transaction for the time it takes to decode the part)."""
    lo, hi = (sec.partial[0], sec.partial[0] + sec.partial[1]) if sec.partial is not None else (0, 1 << 62)
    d = _decoder(encoding)
    size, nul, pos = 0, False, start
    try:
        while pos < end:
            stop = _piece_end(pos, end)
            out = d.feed(mail.read_message(body.user, body.stored.content_id, pos, stop))
            pos = stop
            if pos >= end:
                out += d.end()
            if not nul and size < hi and size + len(out) > lo:
                nul = b"\x00" in out[max(0, lo - size) : hi - size]
            size += len(out)
    except cte.UndecodableError:
        raise No("Cannot decode the part's content", "UNKNOWN-CTE") from None
    if item.name == "BINARY.SIZE":
        return b"BINARY.SIZE[%s] %d" % (".".join(str(p) for p in sec.part).encode(), size)
    length = max(0, min(size, hi) - lo)
    label = section_label("BINARY", sec)
    if not length:
        return label + b" {0}\r\n"
    head = label + (b" ~{%d}\r\n" if nul else b" {%d}\r\n") % length  # RFC 3516 literal8 for NUL
    return _Streamed(head, _Stream(body.stored.content_id, start, end, _decoder(encoding), lo, length))
