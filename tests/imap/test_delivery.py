"""Delivery service: the interface SMTP calls (deliver_sync, deliver, deliver_many)."""

from __future__ import annotations

import pytest

from schoolsuite.services.delivery import Delivery, MailboxNotFound, QuotaExceeded
from schoolsuite.storage import mail
from schoolsuite.storage.mail import SEEN

from imap_helpers import message, result_of


def _inbox(store, account_id, name="INBOX"):
    with store.read() as txn:
        user = txn.user(account_id)
        box = mail.find_mailbox(user, name)
        return box, mail.load_index(user, box.id)


def test_new_account_has_special_use_mailboxes(store, alice):
    """A new account has INBOX, Drafts, Sent, Trash, Junk, Archive with RFC 6154 attributes."""
    with store.read() as txn:
        boxes = {m.name: m.special_use for m in mail.list_mailboxes(txn.user(alice))}
    assert boxes == {"INBOX": None, "Drafts": "\\Drafts", "Sent": "\\Sent", "Trash": "\\Trash",
                     "Junk": "\\Junk", "Archive": "\\Archive"}


def test_deliver_sync_inside_callers_txn(store, delivery, alice):
    """deliver_sync stores the message in the caller's transaction and returns uid 1, then 2."""
    with store.write() as txn:
        first = delivery.deliver_sync(txn, alice, message("one"))
        second = delivery.deliver_sync(txn, alice, message("two"), flags=["\\Seen", "$Important"])
    assert (first, second) == (1, 2)
    box, index = _inbox(store, alice)
    assert list(index.uids) == [1, 2]
    assert box.messages == 2 and box.unseen == 1 and box.uidnext == 3
    with store.read() as txn:
        user = txn.user(alice)
        table = mail.keywords(user)
        assert mail.mask_to_flags(index.flags[1], table) == ["\\Seen", "$Important"]
        stored = mail.get_message(user, box.id, 2)
        assert mail.read_message(user, stored.content_id) == message("two")
        assert stored.structure.envelope[1] == "two"


def test_deliver_sync_aborts_with_callers_txn(store, delivery, alice):
    """A delivery inside a transaction that fails leaves nothing behind."""
    with pytest.raises(RuntimeError):
        with store.write() as txn:
            delivery.deliver_sync(txn, alice, message())
            raise RuntimeError("caller failed")
    box, index = _inbox(store, alice)
    assert box.messages == 0 and len(index.uids) == 0


def test_deliver_unknown_mailbox(store, delivery, alice):
    """An unknown mailbox is MailboxNotFound and nothing is written."""
    with pytest.raises(MailboxNotFound):
        result_of(delivery.deliver(alice, message(), mailbox="Nope"))
    with pytest.raises(MailboxNotFound):
        result_of(delivery.deliver(b"\x00" * 16, message()))


def test_deliver_into_named_mailbox_with_internal_date(store, delivery, alice):
    """deliver() puts the message in the named mailbox with the given internal date."""
    uid = result_of(delivery.deliver(alice, message(), mailbox="Sent", flags=["\\Seen"], internal_date=1_000_000))
    box, index = _inbox(store, alice, "Sent")
    assert uid == 1 and list(index.dates) == [1_000_000] and index.flags[0] & SEEN


def test_quota_refuses_delivery(store, delivery, bob):
    """Bob's 2000-byte quota refuses the message that would exceed it."""
    result_of(delivery.deliver(bob, message(body="x" * 1000)))
    with pytest.raises(QuotaExceeded):
        result_of(delivery.deliver(bob, message(body="y" * 1000)))
    box, _ = _inbox(store, bob)
    assert box.messages == 1


def test_deliver_many_one_txn_per_recipient_results(store, delivery, alice, bob):
    """deliver_many reports per recipient: uids for the delivered, errors for the refused."""
    result_of(delivery.deliver(bob, message(body="x" * 1500)))
    big = message(body="z" * 800)
    results = result_of(delivery.deliver_many([(alice, "INBOX"), (bob, "INBOX"), (b"\x01" * 16, "INBOX")], big))
    assert results[alice] == 1
    assert isinstance(results[bob], QuotaExceeded)
    assert isinstance(results[b"\x01" * 16], MailboxNotFound)
    _, index = _inbox(store, alice)
    assert list(index.uids) == [1]


def test_deliver_many_seals_each_copy_with_its_recipients_key(store, delivery, alice, accounts):
    """Each recipient's copy is its own content, readable only through that account."""
    accounts.add("dave@school.example", "another good password")
    dave = accounts.find_id("dave@school.example")
    results = result_of(delivery.deliver_many([(alice, "INBOX"), (dave, "Archive")], message("shared")))
    assert results == {alice: 1, dave: 1}
    with store.read() as txn:
        a = mail.get_message(txn.user(alice), mail.find_mailbox(txn.user(alice), "INBOX").id, 1)
        d = mail.get_message(txn.user(dave), mail.find_mailbox(txn.user(dave), "Archive").id, 1)
        assert mail.read_message(txn.user(alice), a.content_id) == message("shared")
        assert mail.read_message(txn.user(dave), d.content_id) == message("shared")
        with pytest.raises(Exception):
            mail.read_message(txn.user(dave), a.content_id)


def test_delivery_notifies_after_commit(store, delivery, notifier, alice):
    """Listeners of the account hear of the mailbox only after the commit."""
    heard = []
    notifier.subscribe(alice, lambda ids: heard.append(ids))
    with store.write() as txn:
        delivery.deliver_sync(txn, alice, message())
        assert heard == []
    box, _ = _inbox(store, alice)
    assert heard == [frozenset({box.id})]


def test_services_has_delivery(tmp_path):
    """Services.build attaches a Delivery as services.delivery."""
    from schoolsuite.services import Services

    assert "delivery" in Services.__dataclass_fields__
    assert Delivery.deliver_many
