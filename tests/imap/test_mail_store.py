"""Mail store: mailboxes, index pages, flags, expunge, copy/move, change log, quota usage."""

from __future__ import annotations

import pytest

from schoolsuite.storage import mail
from schoolsuite.storage.mail import DELETED, SEEN

from imap_helpers import message


def _fill(store, account_id, n, name="INBOX"):
    with store.write() as txn:
        user = txn.user(account_id)
        box = mail.find_mailbox(user, name)
        for i in range(n):
            mail.append(user, box, message(f"m{i}"))
        mail.save_mailbox(user, box)
    return box


def test_index_spans_pages_and_ranges(store, alice):
    """300 messages span three index pages; load_index from a uid reads only the tail."""
    _fill(store, alice, 300)
    with store.read() as txn:
        user = txn.user(alice)
        box = mail.find_mailbox(user, "INBOX")
        assert list(mail.load_index(user, box.id).uids) == list(range(1, 301))
        assert list(mail.load_index(user, box.id, 250).uids) == list(range(250, 301))
        assert set(mail.index_entries(user, box.id, [5, 200, 999])) == {5, 200}


def test_flags_modseq_and_changes_since(store, alice):
    """A flag change gets a new MODSEQ, and changes_since lists exactly the later changes."""
    _fill(store, alice, 5)
    with store.read() as txn:
        box = mail.find_mailbox(txn.user(alice), "INBOX")
    before = box.highestmodseq
    with store.write() as txn:
        user = txn.user(alice)
        box = mail.find_mailbox(user, "INBOX")
        changed, failed = mail.store_flags(user, box, [2, 4], "add", SEEN)
        again, _ = mail.store_flags(user, box, [2], "add", SEEN)
        mail.save_mailbox(user, box)
    assert [e.uid for e in changed] == [2, 4] and again == [] and failed == []
    assert box.unseen == 3 and box.highestmodseq > before
    with store.read() as txn:
        changes = mail.changes_since(txn.user(alice), box.id, before)
    assert [(c.uid, c.expunged) for c in changes] == [(2, False), (4, False)]


def test_unchangedsince_refuses_newer(store, alice):
    """STORE UNCHANGEDSINCE refuses messages modified after the given MODSEQ (RFC 7162 §3.1.3)."""
    _fill(store, alice, 2)
    with store.write() as txn:
        user = txn.user(alice)
        box = mail.find_mailbox(user, "INBOX")
        e1 = mail.index_entries(user, box.id, [1])[1]
        changed, failed = mail.store_flags(user, box, [1, 2], "add", SEEN, unchanged_since=e1.modseq)
    assert [e.uid for e in changed] == [1] and failed == [2]


def test_expunge_logs_vanished_and_frees_quota(store, alice):
    """EXPUNGE removes \\Deleted messages, logs them as expunged and frees their bytes."""
    _fill(store, alice, 4)
    with store.read() as txn:
        used_before = mail.usage(txn.user(alice))
    with store.write() as txn:
        user = txn.user(alice)
        box = mail.find_mailbox(user, "INBOX")
        mark = box.highestmodseq
        mail.store_flags(user, box, [1, 3], "add", DELETED)
        removed = mail.expunge(user, box)
        mail.save_mailbox(user, box)
    assert removed == [1, 3] and box.messages == 2 and box.deleted == 0
    with store.read() as txn:
        user = txn.user(alice)
        assert list(mail.load_index(user, box.id).uids) == [2, 4]
        assert {c.uid for c in mail.changes_since(user, box.id, mark) if c.expunged} == {1, 3}
        assert mail.get_message(user, box.id, 1) is None
        used = mail.usage(user)
    assert used[1] == used_before[1] - 2 and used[0] < used_before[0]


def test_copy_and_move_keep_flags_and_usage(store, alice):
    """COPY shares content and counts usage; MOVE leaves usage unchanged."""
    _fill(store, alice, 3)
    with store.write() as txn:
        user = txn.user(alice)
        inbox = mail.find_mailbox(user, "INBOX")
        archive = mail.find_mailbox(user, "Archive")
        mail.store_flags(user, inbox, [2], "add", SEEN)
        before = mail.usage(user)
        pairs = mail.copy_messages(user, inbox, [2, 3], archive)
        after_copy = mail.usage(user)
        moved = mail.move_messages(user, inbox, [1], archive)
        after_move = mail.usage(user)
        for box in (inbox, archive):
            mail.save_mailbox(user, box)
    assert pairs == [(2, 1), (3, 2)] and moved == [(1, 3)]
    assert after_copy[1] == before[1] + 2 and after_move == after_copy
    with store.read() as txn:
        user = txn.user(alice)
        idx = mail.load_index(user, archive.id)
        assert list(idx.uids) == [1, 2, 3] and idx.flags[0] & SEEN
        assert list(mail.load_index(user, inbox.id).uids) == [2, 3]
        m = mail.get_message(user, archive.id, 3)
        assert mail.read_message(user, m.content_id) == message("m0")


def test_create_rename_delete_hierarchy(store, alice):
    """CREATE makes parents, RENAME moves children, DELETE of a parent keeps it \\Noselect."""
    with store.write() as txn:
        user = txn.user(alice)
        mail.create_mailbox(user, "School/Class 5a/Trips")
        with pytest.raises(mail.MailboxExists):
            mail.create_mailbox(user, "School")
        mail.rename_mailbox(user, "School", "Work")
        mail.delete_mailbox(user, "Work/Class 5a")
        with pytest.raises(mail.MailboxRefused):
            mail.delete_mailbox(user, "inbox")
    with store.read() as txn:
        user = txn.user(alice)
        names = {m.name: m.noselect for m in mail.list_mailboxes(user)}
    assert names["Work"] is False and names["Work/Class 5a"] is True and "Work/Class 5a/Trips" in names
    assert not any(n.startswith("School") for n in names)


def test_rename_inbox_moves_messages(store, alice):
    """RENAME INBOX moves its messages to the new name and leaves an empty INBOX (RFC 3501 §6.3.5)."""
    _fill(store, alice, 2)
    with store.write() as txn:
        mail.rename_mailbox(txn.user(alice), "INBOX", "Old")
    with store.read() as txn:
        user = txn.user(alice)
        old = mail.find_mailbox(user, "Old")
        inbox = mail.find_mailbox(user, "INBOX")
        assert old.messages == 2 and inbox.messages == 0 and inbox.uidvalidity != old.uidvalidity


def test_uidvalidity_changes_when_name_reused(store, alice):
    """A mailbox deleted and created again gets a new UIDVALIDITY."""
    with store.write() as txn:
        user = txn.user(alice)
        first = mail.create_mailbox(user, "Temp").uidvalidity
        mail.delete_mailbox(user, "Temp")
        second = mail.create_mailbox(user, "Temp").uidvalidity
    assert second > first


def test_mailbox_names_are_not_stored_in_clear(store, alice, tmp_path):
    """A folder name never appears in the store file."""
    with store.write() as txn:
        mail.create_mailbox(txn.user(alice), "Geheimprojekt")
    data = (tmp_path / "data" / "data.mdb").read_bytes()
    assert b"Geheimprojekt" not in data


def test_keyword_limit(store, alice):
    """More keywords than the table holds is TooManyKeywords."""
    with store.write() as txn:
        user = txn.user(alice)
        mail.flags_to_mask(user, [f"k{i}" for i in range(mail.MAX_KEYWORDS)], create=True)
        with pytest.raises(mail.TooManyKeywords):
            mail.flags_to_mask(user, ["one-too-many"], create=True)


def test_tombstones_pruned_and_vanished_superset(store, alice, monkeypatch):
    """Beyond MAX_TOMBSTONES the oldest expunge records go; vanished_since then answers a superset."""
    monkeypatch.setattr(mail, "MAX_TOMBSTONES", 10)
    _fill(store, alice, 30)
    with store.write() as txn:
        user = txn.user(alice)
        box = mail.find_mailbox(user, "INBOX")
        start = box.highestmodseq
        for uid in range(1, 25):
            mail.remove_messages(user, box, [uid])
        mail.save_mailbox(user, box)
    assert box.tombstones <= 10 and box.vanished_floor > start
    with store.read() as txn:
        user = txn.user(alice)
        log = [c for c in mail.changes_since(user, box.id, 0) if c.expunged]
        assert len(log) == box.tombstones
        assert mail.vanished_since(user, box, start) == list(range(1, 25))  # superset path, exact here
        recent = mail.vanished_since(user, box, box.vanished_floor)
        assert recent == sorted(c.uid for c in log)


def test_read_message_with_size_skips_the_content_record(store, alice, monkeypatch):
    """Given its size, a one-chunk message is read from its chunk alone; larger ones and ranges as before."""
    from schoolsuite.storage import content
    from schoolsuite.storage.store import CHUNK_SIZE

    small = message("small", "x" * 1000)
    large = message("large", "y" * (CHUNK_SIZE + 5000))
    with store.write() as txn:
        user = txn.user(alice)
        box = mail.find_mailbox(user, "INBOX")
        uids = [mail.append(user, box, data) for data in (small, large)]
        mail.save_mailbox(user, box)
    with store.read() as txn:
        user = txn.user(alice)
        ids = [mail.get_message(user, box.id, uid).content_id for uid in uids]
        assert mail.read_message(user, ids[1], size=len(large)) == large
        assert mail.read_message(user, ids[0], 10, 50, size=len(small)) == small[10:50]
        monkeypatch.setattr(content, "read_content", None)  # the content record path is not taken
        assert mail.read_message(user, ids[0], size=len(small)) == small
