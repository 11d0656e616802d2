"""Large mailboxes: selecting, UID ranges and changes since a MODSEQ open a bounded number of records."""

from __future__ import annotations

import pytest

from schoolsuite.storage import mail, store as store_module

N = 6000


@pytest.fixture
def big(store, alice):
    """INBOX with N small messages."""
    body = b"Subject: s\r\n\r\nx\r\n"
    with store.write() as txn:
        user = txn.user(alice)
        box = mail.find_mailbox(user, "INBOX")
        for _ in range(N):
            mail.append(user, box, body)
        mail.save_mailbox(user, box)
    return box


@pytest.fixture
def opened(monkeypatch):
    """Counts sealed records opened (decrypted)."""
    counter = {"n": 0}
    original = store_module.UserView._open

    def counting(self, full, sealed):
        counter["n"] += 1
        return original(self, full, sealed)

    monkeypatch.setattr(store_module.UserView, "_open", counting)
    return counter


def test_select_reads_index_pages_only(store, alice, big, opened):
    """Loading the index of N messages opens about N/128 page records, not N message records."""
    with store.read() as txn:
        index = mail.load_index(txn.user(alice), big.id)
    assert len(index.uids) == N
    assert opened["n"] <= N // (1 << mail.PAGE_SHIFT) + 2


def test_uid_range_and_flag_change_touch_one_page(store, alice, big, opened):
    """Reading a few uids or changing one message's flags opens a handful of records."""
    with store.write() as txn:
        user = txn.user(alice)
        box = mail.get_mailbox(user, big.id)
        opened["n"] = 0
        assert set(mail.index_entries(user, box.id, [4000, 4001])) == {4000, 4001}
        mail.store_flags(user, box, [4000], "add", mail.SEEN)
        assert opened["n"] <= 8


def test_changes_since_is_a_range_scan(store, alice, big, opened):
    """changes_since a recent MODSEQ opens only the newer change records."""
    with store.write() as txn:
        user = txn.user(alice)
        box = mail.get_mailbox(user, big.id)
        mark = box.highestmodseq
        mail.store_flags(user, box, [10, 20, 30], "add", mail.FLAGGED)
        mail.save_mailbox(user, box)
    opened["n"] = 0
    with store.read() as txn:
        changes = mail.changes_since(txn.user(alice), big.id, mark)
    assert [c.uid for c in changes] == [10, 20, 30]
    assert opened["n"] == 3
