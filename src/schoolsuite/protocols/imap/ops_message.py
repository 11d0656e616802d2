"""STORE, COPY, MOVE (RFC 3501 §6.4.6-7, RFC 6851 MOVE, RFC 4315 COPYUID, RFC 7162 §3.1.3 UNCHANGEDSINCE)."""

from __future__ import annotations

from typing import Any

from ...storage import accounts as directory
from ...storage import mail
from . import render
from .errors import Bad, No
from .grammar import Copy, Store
from .ops_mailbox import _refusal, _refused
from .session import Session

_SYSTEM = {f.lower() for f in mail.SYSTEM_FLAGS}


def do_store(s: Session, cmd: Store) -> Any:
    view = s.require_selected()
    if view.readonly:
        raise No("Mailbox is read-only", "READ-ONLY")
    for flag in cmd.flags:
        if flag.startswith("\\") and flag.lower() not in _SYSTEM and flag.lower() != "\\recent":
            raise Bad("Invalid system flag")
    uids = view.resolve(cmd.sequence, cmd.uid)
    if cmd.unchanged_since is not None:
        s.condstore = True

    seen_modseq = view.modseq

    def run(user: Any, txn: Any) -> tuple[list[mail.IndexEntry], list[int], dict[int, mail.IndexEntry], list[str], int]:
        box = mail.get_mailbox(user, view.id)
        if box is None:
            return [], [], {}, [], 0
        # Nothing else changed this mailbox since the session last looked: then the
        # view is current up to our own changes and the refresh after this has nothing to read.
        caught_up = box.highestmodseq if box.highestmodseq <= seen_modseq else 0
        mask = mail.flags_to_mask(user, cmd.flags, create=cmd.mode != "remove")
        changed, failed = mail.store_flags(user, box, uids, cmd.mode, mask, unchanged_since=cmd.unchanged_since)
        if changed:
            mail.save_mailbox(user, box)
            s.notify(txn, (box.id,))
            if caught_up:
                caught_up = box.highestmodseq
        entries = mail.index_entries(user, box.id, uids)
        return changed, failed, entries, mail.keywords(user), caught_up

    def done(result: Any) -> str:
        changed, failed, entries, table, caught_up = result
        if caught_up and view.modseq == seen_modseq:
            view.modseq = caught_up  # our own changes are all there is to report
        else:
            view.own.update((entry.uid, entry.modseq) for entry in changed)
        changed_uids = {e.uid for e in changed}
        failed_set = set(failed)
        s.announce_keywords(table)
        for uid in uids:
            entry = entries.get(uid)
            seq = view.seq_of(uid)
            if entry is None or seq is None or uid in failed_set:
                continue
            if cmd.silent and not (s.condstore and uid in changed_uids and cmd.unchanged_since is not None):
                continue
            s.send(s.flags_response(seq, entry, table, with_uid=cmd.uid))
        if failed:
            seqs = failed if cmd.uid else [view.seq_of(u) for u in failed if view.seq_of(u)]
            return f"[MODIFIED {render.sequence_set(sorted(seqs)).decode()}] Conditional STORE failed"
        return "STORE completed"

    return s.write(run, durable=False).addCallbacks(done, _refused)


def do_copy(s: Session, cmd: Copy) -> Any:
    view = s.require_selected()
    move = cmd.name == "MOVE"
    if move and view.readonly:
        raise No("Mailbox is read-only", "READ-ONLY")
    uids = view.resolve(cmd.sequence, cmd.uid)
    account_id = s.account_id

    def run(user: Any, txn: Any) -> tuple[int, list[tuple[int, int]]]:
        source = mail.get_mailbox(user, view.id)
        target = mail.find_mailbox(user, cmd.mailbox)
        if target is None or target.noselect:
            raise mail.MailboxNotFound("no such mailbox")
        if source is None:
            return target.uidvalidity, []
        if target.id == source.id:
            target = source
        if move:
            pairs = mail.move_messages(user, source, uids, target)
        else:
            account = directory.get_account(txn, account_id)
            pairs = mail.copy_messages(user, source, uids, target, quota=None if account is None else account.quota)
        mail.save_mailbox(user, target)
        if target is not source:
            mail.save_mailbox(user, source)
        s.notify(txn, {source.id, target.id})
        return target.uidvalidity, pairs

    def refused(failure: Any) -> Any:
        failure.trap(mail.MailError)
        if failure.check(mail.MailboxNotFound):
            raise No("Mailbox does not exist", "TRYCREATE")  # RFC 3501 §6.4.7
        raise _refusal(failure.value)

    def done(result: tuple[int, list[tuple[int, int]]]) -> str:
        uidvalidity, pairs = result
        code = ""
        if pairs:
            code = (f"[COPYUID {uidvalidity} {render.sequence_set([p[0] for p in pairs]).decode()} "
                    f"{render.sequence_set([p[1] for p in pairs]).decode()}] ")
            if not all(pairs[i][0] < pairs[i + 1][0] for i in range(len(pairs) - 1)):
                code = ""
        if move:
            if code:
                s.send(b"* OK " + code.strip().encode() + b" Moved\r\n")  # RFC 6851 §4.3
            if s.selected is view:
                view.pending_expunge.update(p[0] for p in pairs)
                s.refresh(expunge=True)
            return f"{cmd.name} completed"
        return f"{code}{cmd.name} completed"

    return s.write(run).addCallbacks(done, refused)
