"""SELECT EXAMINE CLOSE UNSELECT EXPUNGE CHECK (RFC 3501 §6.3.1-2, §6.4.1-3; RFC 3691; RFC 4315 §2.1;
RFC 7162 §3.1.2 and §3.2.5 for CONDSTORE and QRESYNC)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ...storage import mail
from . import render
from .errors import Bad, No
from .grammar import Select, SeqSet, UidExpunge
from .session import SelectedMailbox, Session
from .uidlist import UidList

PERMANENT = "\\Seen \\Answered \\Flagged \\Deleted \\Draft"


def deselect(s: Session) -> None:
    if s.selected is not None and (s.qresync or s.rev2):
        s.send(b"* OK [CLOSED] Previous mailbox closed\r\n")  # RFC 7162 §3.2.11, RFC 9051 §7.1
    s.selected = None


def do_select(s: Session, cmd: Select) -> Any:
    if cmd.qresync is not None and not s.qresync:
        raise Bad("QRESYNC must be enabled first")
    deselect(s)
    readonly = cmd.name == "EXAMINE"
    if cmd.condstore or cmd.qresync is not None:
        s.condstore = True
    with s.read() as txn:
        user = s.user(txn)
        box = mail.find_mailbox(user, cmd.mailbox)
        if box is None or box.noselect:
            raise No("Mailbox does not exist", "NONEXISTENT")
        index = mail.load_index(user, box.id)
        table = mail.keywords(user)
    view = SelectedMailbox(box.id, box.name, box.uidvalidity, readonly, UidList(index.uids), box.highestmodseq,
                           box.uidnext)
    if readonly or box.recent_uid >= box.uidnext:
        # EXAMINE shows unclaimed messages as \Recent without claiming them.
        return _opened(s, cmd, box, view, index, table, box.recent_uid if readonly else box.uidnext)

    def claim(user: Any, txn: Any) -> int:
        current = mail.get_mailbox(user, box.id)
        if current is None:
            return box.uidnext
        return mail.claim_recent(user, current)

    return s.write(claim, durable=False).addCallback(lambda first: _opened(s, cmd, box, view, index, table, first))


def _opened(s: Session, cmd: Select, box: mail.Mailbox, view: SelectedMailbox, index: mail.MailboxIndex,
            table: list[str], first_recent: int) -> str:
    view.recent = set() if s.rev2 else {u for u in view.uids if u >= first_recent}
    view.keywords = len(table)
    flags = PERMANENT + "".join(" " + k for k in table)
    s.send(b"* FLAGS (%s)\r\n" % flags.encode("utf-8"))
    permanent = flags + " \\*" if not view.readonly else ""
    s.send(b"* OK [PERMANENTFLAGS (%s)] Flags permitted\r\n" % permanent.encode("utf-8"))
    s.send(b"* %d EXISTS\r\n" % len(view.uids))
    if s.rev2:  # RFC 9051 §6.3.2: LIST with the name instead of RECENT
        s.send(b'* LIST () "/" %s\r\n' % render.mailbox_name(box.name, True))
    else:
        s.send(b"* %d RECENT\r\n" % len(view.recent))
    for seq, fl in enumerate(index.flags, 1):
        if s.rev2:
            break  # RFC 9051 dropped the UNSEEN response code
        if not fl & mail.SEEN:
            s.send(b"* OK [UNSEEN %d] First unseen\r\n" % seq)
            break
    s.send(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % box.uidvalidity)
    s.send(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % box.uidnext)
    s.send(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % box.highestmodseq)
    s.selected = view
    if cmd.qresync is not None:
        _qresync(s, cmd, view, table)
    return f"[{'READ-ONLY' if view.readonly else 'READ-WRITE'}] {cmd.name} completed"


def _qresync(s: Session, cmd: Select, view: SelectedMailbox, table: list[str]) -> None:
    """RFC 7162 §3.2.5.1: VANISHED (EARLIER) and FETCH for what changed since the client's MODSEQ; the
    known UIDs and the sequence match data (§3.2.5.2) narrow the VANISHED set."""
    assert cmd.qresync is not None
    uidvalidity, modseq, known, seqmatch = cmd.qresync
    if uidvalidity != view.uidvalidity:
        return
    floor = _known_expunges_up_to(view, seqmatch) if seqmatch is not None else 0
    with s.read() as txn:
        user = s.user(txn)
        box = mail.get_mailbox(user, view.id)
        changes = mail.changes_since(user, view.id, modseq)
        changed = sorted({c.uid for c in changes if not c.expunged})
        vanished = mail.vanished_since(user, box, modseq, lo=floor + 1) if box is not None else []
        entries = mail.index_entries(user, view.id, changed)
    if known is not None:
        allowed = set()
        for a, b in known:
            lo, hi = (a or 0xFFFFFFFF), (b or 0xFFFFFFFF)
            if lo > hi:
                lo, hi = hi, lo
            allowed.update(u for u in vanished if lo <= u <= hi)
        vanished = sorted(allowed)
    if vanished:
        s.send(b"* VANISHED (EARLIER) " + render.sequence_set(vanished) + b"\r\n")
    for uid in changed:
        seq = view.seq_of(uid)
        if seq is not None and uid in entries:
            s.send(s.flags_response(seq, entries[uid], table, with_uid=True))


def _known_expunges_up_to(view: SelectedMailbox, seqmatch: tuple[SeqSet, SeqSet]) -> int:
    """RFC 7162 §3.2.5.2: the client's (message number, UID) pairs are compared with the mailbox in order;
    while they match, the client knows of every expunge up to that UID, so VANISHED (EARLIER) starts above
    the UID of the last matching pair before the first mismatch (0: nothing known)."""
    seqs, uids = seqmatch
    count = len(view.uids)
    known = 0
    for seq, uid in zip(_numbers(seqs), _numbers(uids)):
        if seq > count or view.uids[seq - 1] != uid:
            break
        known = uid
    return known


def _numbers(sequence: SeqSet) -> Iterator[int]:
    for a, b in sequence:
        lo, hi = sorted((a or 0, b or 0))
        yield from range(lo, hi + 1)


def do_close(s: Session, cmd: Any) -> Any:
    """RFC 3501 §6.4.2: expunge silently (unless read-only), then deselect."""
    view = s.require_selected()
    s.selected = None
    if view.readonly:
        return "CLOSE completed"

    def run(user: Any, txn: Any) -> None:
        box = mail.get_mailbox(user, view.id)
        if box is None:
            return
        if mail.expunge(user, box, list(view.uids)):
            mail.save_mailbox(user, box)
            s.notify(txn, (box.id,))

    return s.write(run).addCallback(lambda _: "CLOSE completed")


def do_unselect(s: Session, cmd: Any) -> Any:
    """RFC 3691: deselect without expunging."""
    s.require_selected()
    s.selected = None
    return "UNSELECT completed"


def do_expunge(s: Session, cmd: Any) -> Any:
    view = s.require_selected()
    if view.readonly:
        raise No("Mailbox is read-only", "READ-ONLY")
    only = None
    if isinstance(cmd, UidExpunge):  # RFC 4315 §2.1
        only = view.resolve(cmd.sequence, True)
    targets = list(view.uids) if only is None else only

    def run(user: Any, txn: Any) -> list[int]:
        box = mail.get_mailbox(user, view.id)
        if box is None:
            return []
        removed = mail.expunge(user, box, targets)
        if removed:
            mail.save_mailbox(user, box)
            s.notify(txn, (box.id,))
        return removed

    def done(removed: list[int]) -> str:
        if s.selected is view:
            view.pending_expunge.update(removed)
            s.refresh(expunge=True)
        return "EXPUNGE completed"

    return s.write(run).addCallback(done)


def do_check(s: Session, cmd: Any) -> Any:
    s.require_selected()
    return "CHECK completed"

