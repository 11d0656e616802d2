"""Per-connection IMAP state: who is logged in and the selected mailbox's view.

The store speaks UIDs; sequence numbers live here (RFC 3501 §2.3.1.2): the
view keeps the ascending uid array the client knows. Changes made by other
sessions are read from the store's change log since the last MODSEQ this
session reported, and turned into EXISTS / FETCH / EXPUNGE (or VANISHED
under QRESYNC) only when :meth:`Session.refresh` is allowed to (RFC 3501
§7.4.1: no EXPUNGE during FETCH, STORE or SEARCH by sequence number).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from ...storage import UserView, UserWrite
from ...storage import mail
from . import render
from .errors import Bad, Bye
from .grammar import SAVED, SeqSet
from .uidlist import UidList

log = Logger()

#: account id -> its last flag change answered before its commit (see Session.write).
_UNSETTLED: dict[bytes, defer.Deferred[None]] = {}


@dataclass
class SelectedMailbox:
    """What the client knows of its selected mailbox."""

    id: int
    name: str
    uidvalidity: int
    readonly: bool
    uids: UidList = field(default_factory=UidList)
    modseq: int = 0  # changes up to here have been reported
    uidnext: int = 1
    recent: set[int] = field(default_factory=set)
    pending_expunge: set[int] = field(default_factory=set)
    own: set[tuple[int, int]] = field(default_factory=set)  # (uid, modseq) this session reported itself
    saved: set[int] = field(default_factory=set)  # SEARCH RETURN (SAVE) result, as uids (RFC 5182)
    keywords: int = 0  # keywords of the account's table announced in FLAGS
    claim: bool = False  # new messages were taken as \Recent; the store must learn it

    def seq_of(self, uid: int) -> int | None:
        i = self.uids.position(uid)
        return None if i is None else i + 1

    def resolve(self, sequence: SeqSet, uid: bool) -> list[int]:
        """The uids a sequence set names (RFC 3501 §9 ``sequence-set``); ascending, unique."""
        uids = self.uids
        if sequence == SAVED:  # RFC 5182 §2.1: the same messages whether used with UID or not
            return [u for u in sorted(self.saved) if self.seq_of(u) is not None]
        out: set[int] = set()
        if uid:
            largest = uids[-1] if uids else 0
            for a, b in sequence:
                lo = largest if a is None else a
                hi = largest if b is None else b
                if lo > hi:
                    lo, hi = hi, lo
                out.update(uids.between(uids.bisect_left(lo), uids.bisect_right(hi)))
            return sorted(out)
        count = len(uids)
        if count == 0 and all(a is None or b is None for a, b in sequence):
            return []  # "1:*" in an empty mailbox names nothing; clients send it routinely
        for a, b in sequence:
            lo = count if a is None else a
            hi = count if b is None else b
            if lo > hi:
                lo, hi = hi, lo
            if hi > count or lo < 1:
                raise Bad("Invalid message sequence number")
            out.update(uids.between(lo - 1, hi))
        return sorted(out)


class Session:
    """The state of one IMAP connection above the wire."""

    def __init__(self, services: Any, send: Callable[[bytes], None], *, client_address: str = "",
                 tls: bool = False, limits: Any = None) -> None:
        self.services = services
        self.send = send
        self.client_address = client_address
        self.tls = tls
        self.limits = limits
        self.account_id: bytes | None = None
        self.address: str | None = None
        self.selected: SelectedMailbox | None = None
        self.enabled: set[str] = set()
        self._condstore = False  # CONDSTORE enabled (ENABLE, SELECT (CONDSTORE), FETCH MODSEQ, ...)
        self.idling = False
        self.client_id: dict[str, str | None] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._unregister: Callable[[], None] | None = None
        self.on_change: Callable[[], None] | None = None
        #: Set by the protocol: runs a long response one step per reactor turn (see :meth:`in_turns`).
        self.pacer: Callable[[Callable[[], bool]], defer.Deferred[None]] | None = None
        #: A response is partly written (a FETCH streaming a large literal): until it is finished no other
        #: byte may go out, or the client would read it as part of the literal (see ops_fetch.STREAM_LITERAL).
        self.open_response = False

    # -- state -------------------------------------------------------------

    @property
    def condstore(self) -> bool:
        return self._condstore

    @condstore.setter
    def condstore(self, value: bool) -> None:
        """RFC 7162 §3.1: the first CONDSTORE-enabling command reports HIGHESTMODSEQ of the selected mailbox."""
        if value and not self._condstore and self.selected is not None:
            self.send(b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % self.selected.modseq)
        self._condstore = value

    def announce_keywords(self, table: list[str]) -> None:
        """New keywords in the account's table: FLAGS and PERMANENTFLAGS again (RFC 3501 §7.2.6)."""
        view = self.selected
        if view is None or len(table) <= view.keywords:
            return
        view.keywords = len(table)
        flags = "\\Seen \\Answered \\Flagged \\Deleted \\Draft" + "".join(" " + k for k in table)
        self.send(b"* FLAGS (%s)\r\n" % flags.encode("utf-8"))
        if not view.readonly:
            self.send(b"* OK [PERMANENTFLAGS (%s \\*)] Flags permitted\r\n" % flags.encode("utf-8"))

    def claim_recent(self) -> defer.Deferred[Any] | None:
        """Record in the store that this session took the new messages as \\Recent (RFC 3501 §2.3.2)."""
        view = self.selected
        if view is None or not view.claim:
            return None
        view.claim = False
        mailbox_id, upto = view.id, view.uidnext

        def run(user: Any, txn: Any) -> tuple[int, int]:
            box = mail.get_mailbox(user, mailbox_id)
            if box is None or box.recent_uid >= upto:
                return upto, upto
            first = box.recent_uid
            box.recent_uid = upto
            mail.save_mailbox(user, box)
            return first, upto

        def claimed(span: tuple[int, int]) -> None:
            # Only what this session claimed first is \Recent here; then RECENT (RFC 3501 §7.3.2).
            first, last = span
            if self.selected is view and not self.rev2:
                view.recent.update(u for u in view.uids.between(view.uids.bisect_left(first), len(view.uids))
                                   if u < last)
                self.send(b"* %d RECENT\r\n" % len(view.recent))

        return self.write(run, durable=False).addCallback(claimed)

    @property
    def authenticated(self) -> bool:
        return self.account_id is not None

    @property
    def rev2(self) -> bool:
        """IMAP4rev2 enabled (RFC 9051 via ENABLE): no \\Recent, ESEARCH for SEARCH, UTF-8 names."""
        return "IMAP4REV2" in self.enabled

    @property
    def utf8(self) -> bool:
        return "UTF8=ACCEPT" in self.enabled or self.rev2

    @property
    def qresync(self) -> bool:
        return "QRESYNC" in self.enabled

    def logged_in(self, account_id: bytes, address: str, close: Callable[[], None]) -> None:
        self.account_id = account_id
        self.address = address
        self._unregister = self.services.sessions.add(account_id, close)
        notifier = getattr(self.services, "notifier", None)
        if notifier is not None:
            self._unsubscribe = notifier.subscribe(account_id, self._changed)

    def close(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        if self._unregister:
            self._unregister()
            self._unregister = None

    def _changed(self, mailbox_ids: frozenset[int]) -> None:
        if self.selected is not None and self.selected.id in mailbox_ids and self.on_change is not None:
            self.on_change()

    def in_turns(self, step: Callable[[], bool]) -> defer.Deferred[None]:
        """Call ``step()`` until it returns True, one call per reactor turn so that the other sessions are
        served in between (a long FETCH); paced by the connection's write buffer. Fires after the last step
        (with the failure a step raised). Without a protocol (in-process callers) every step runs now."""
        if self.pacer is not None:
            return self.pacer(step)
        try:
            while not step():
                pass
        except Exception:  # noqa: BLE001 - handed to the caller like the protocol's pacer does
            return defer.fail()
        return defer.succeed(None)

    # -- store access --------------------------------------------------------

    def read(self) -> Any:
        return self.services.store.read()

    def user(self, txn: Any) -> UserView:
        assert self.account_id is not None
        return txn.user(self.account_id)

    def write(self, fn: Callable[..., Any], *args: Any, durable: bool = True) -> defer.Deferred[Any]:
        """Run ``fn(user, txn, *args)`` in a write transaction on the writer thread.

        Durable writes (APPEND, COPY, MOVE, EXPUNGE, mailbox changes) answer
        after the transaction is on disk. ``durable=False`` is for flag changes
        and \\Recent claims, which Dovecot does not sync either: the answer is
        sent as soon as the transaction has computed it, while the commit runs;
        no session of the account starts another command before that commit
        (:meth:`unsettled`), so every session reads what was answered; the change
        is on disk within ``store.FLUSH_DELAY``. A commit that fails after the
        answer is logged.
        """
        store = self.services.store
        account_id = self.account_id

        if durable:
            def run() -> Any:
                with store.write() as txn:
                    user: UserWrite = txn.user(account_id)
                    return fn(user, txn, *args)

            return self.services.writer.run(run)

        def run_early(tell: Callable[[Any], None]) -> None:
            with store.write(durable=False) as txn:
                user: UserWrite = txn.user(account_id)
                tell(fn(user, txn, *args))

        answer, settled = self.services.writer.run_early(run_early)
        settled.addErrback(lambda failure: log.failure("IMAP flag change answered but not committed", failure))
        assert account_id is not None
        _UNSETTLED[account_id] = settled

        def settle(_: Any) -> None:
            if _UNSETTLED.get(account_id) is settled:
                del _UNSETTLED[account_id]

        settled.addBoth(settle)
        return answer

    def unsettled(self) -> defer.Deferred[None] | None:
        """The account's last early-answered write if it has not committed yet (the writer is FIFO)."""
        if self.account_id is None:
            return None
        d = _UNSETTLED.get(self.account_id)
        return d if d is not None and not d.called else None

    def notify(self, txn: Any, mailbox_ids: Iterable[int]) -> None:
        """Tell other sessions (after commit) that these mailboxes changed."""
        notifier = getattr(self.services, "notifier", None)
        if notifier is not None and self.account_id is not None:
            notifier.after_commit(txn, self.account_id, mailbox_ids)

    # -- the selected mailbox ------------------------------------------------

    def require_selected(self) -> SelectedMailbox:
        if self.selected is None:
            raise Bad("No mailbox selected")
        return self.selected

    def refresh(self, *, expunge: bool) -> None:
        """Report other sessions' changes to the selected mailbox (RFC 3501 §5.2, §7.3.1, §7.4.1)."""
        view = self.selected
        if view is None:
            return
        with self.read() as txn:
            user = self.user(txn)
            mailbox = mail.get_mailbox(user, view.id)
            if mailbox is None or mailbox.noselect or mailbox.uidvalidity != view.uidvalidity:
                self.selected = None
                raise Bye("Selected mailbox was deleted")
            table = mail.keywords(user)
            self.announce_keywords(table)
            if mailbox.highestmodseq <= view.modseq and not (expunge and view.pending_expunge):
                return
            changes = mail.changes_since(user, view.id, view.modseq)
            if view.modseq < mailbox.vanished_floor:
                # Expunge records this session had not seen were pruned: compare with the index.
                present = set(mail.load_index(user, view.id).uids)
                view.pending_expunge.update(u for u in view.uids if u not in present)
            new: list[int] = []
            flagged: list[int] = []
            for change in changes:
                if change.expunged:
                    if view.seq_of(change.uid) is not None:
                        view.pending_expunge.add(change.uid)
                elif change.uid >= view.uidnext:
                    new.append(change.uid)
                elif (change.uid, change.modseq) not in view.own and change.uid not in view.pending_expunge:
                    flagged.append(change.uid)
            entries = mail.index_entries(user, view.id, flagged) if flagged else {}
        view.own.clear()
        if expunge and view.pending_expunge:
            self.announce_expunged(sorted(view.pending_expunge))
            view.pending_expunge.clear()
        if new:
            new.sort()
            view.uids.extend(u for u in new if u >= view.uidnext)
            view.uidnext = new[-1] + 1
            if not view.readonly and new[-1] >= mailbox.recent_uid:
                view.claim = True  # claim_recent() decides which are \Recent to this session
            self.send(b"* %d EXISTS\r\n" % len(view.uids))
            if not view.claim and not self.rev2:
                self.send(b"* %d RECENT\r\n" % len(view.recent))
        for uid in sorted(entries):
            seq = view.seq_of(uid)
            if seq is None:
                continue
            entry = entries[uid]
            self.send(self.flags_response(seq, entry, table, with_uid=self.condstore or self.qresync or self.rev2))
        view.modseq = max(view.modseq, mailbox.highestmodseq)

    def flags_response(self, seq: int, entry: mail.IndexEntry, table: list[str], *, with_uid: bool) -> bytes:
        view = self.selected
        flags = mail.mask_to_flags(entry.flags, table)
        if view is not None and entry.uid in view.recent:
            flags.append("\\Recent")
        parts = [b"FLAGS (" + " ".join(flags).encode("utf-8") + b")"]
        if with_uid:
            parts.append(b"UID %d" % entry.uid)
        if self.condstore:
            parts.append(b"MODSEQ (%d)" % entry.modseq)
        return b"* %d FETCH (%s)\r\n" % (seq, b" ".join(parts))

    def announce_expunged(self, uids: list[int]) -> None:
        """Drop ``uids`` from the view: EXPUNGE per message, or one VANISHED under QRESYNC (RFC 7162 §3.2.10)."""
        view = self.selected
        assert view is not None
        if self.qresync:
            present = [u for u in uids if view.seq_of(u) is not None]
            if present:
                self.send(b"* VANISHED " + render.sequence_set(present) + b"\r\n")
            for uid in present:
                del view.uids[view.seq_of(uid) - 1]  # type: ignore[operator]
                view.recent.discard(uid)
            return
        for uid in sorted(uids, reverse=True):
            seq = view.seq_of(uid)
            if seq is None:
                continue
            del view.uids[seq - 1]
            view.recent.discard(uid)
            self.send(b"* %d EXPUNGE\r\n" % seq)
