"""The queue's bookkeeping with a fake clock: backoff, delay warning, expiry, DSN content, sealing."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from schoolsuite.services import Delivery, MailNotifier  # registers the mailbox initializer
from schoolsuite.services.accounts import AccountService
from schoolsuite.services.outbound import Outcome, Route
from schoolsuite.services.queue import OutboundQueue, Schedule, list_queue
from schoolsuite.services.resolver import MailDNS, make_resolver
from schoolsuite.storage import Store
from schoolsuite.storage import queue as records
from schoolsuite.storage.queue import QueueEntry, QueuedRecipient

MESSAGE = b"From: alice@school.example\r\nTo: x@remote.example\r\nSubject: queued\r\n\r\nSecret body text\r\n"


class InlineReactor(Clock):
    def callFromThread(self, fn, *args):  # type: ignore[no-untyped-def]  # noqa: N802
        fn(*args)


@pytest.fixture
def alice(store: Store) -> bytes:
    accounts = AccountService(store)
    accounts.add("alice@school.example", "correct horse battery")
    return accounts.find_id("alice@school.example")  # type: ignore[return-value]


class Now:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def queue(store: Store) -> tuple[OutboundQueue, Now]:
    now = Now()
    reactor = InlineReactor()
    delivery = Delivery(store, None, MailNotifier(reactor))
    q = OutboundQueue(store, None, reactor, route=Route(hostname="mail.school.example"),  # type: ignore[arg-type]
                      dns=MailDNS(make_resolver("127.0.0.1:9")), schedule=Schedule(),
                      delivery=lambda: delivery, clock=now)
    return q, now


def enqueue(store: Store, q: OutboundQueue, alice: bytes, *recipients: QueuedRecipient, ret: str | None = None,
            envid: str | None = None) -> str:
    with store.write() as txn:
        entry = q.enqueue(txn, QueueEntry("", alice, "alice@school.example", list(recipients), ret=ret,
                                          envid=envid, created=q.clock()), MESSAGE)
    return entry.id


def alice_inbox(store: Store, alice: bytes) -> list[bytes]:
    from schoolsuite.storage import mail

    with store.read() as txn:
        user = txn.user(alice)
        box = mail.require_mailbox(user, "INBOX")
        return [mail.read_message(user, mail.get_message(user, box.id, uid).content_id)
                for uid in mail.load_index(user, box.id).uids]


DEFER = Outcome(451, "4.3.0", "451 4.3.0 try later", "mx.remote.example")
REJECT = Outcome(550, "5.1.1", "550 5.1.1 no such user", "mx.remote.example")
OK = Outcome(250, "2.0.0", "250 ok", "mx.remote.example")


def test_backoff_doubles_up_to_the_maximum() -> None:
    """Retry delays are 5, 10, 20, 40, 80, 160 minutes, then every 4 hours."""
    s = Schedule()
    assert [s.next_delay(n) for n in range(1, 9)] == [300, 600, 1200, 2400, 4800, 9600, 14400, 14400]


def test_deferred_then_delivered(store: Store, alice: bytes, queue) -> None:  # type: ignore[no-untyped-def]
    """A 4xx keeps the message with the next attempt scheduled; a later 2xx removes it, no notice."""
    q, now = queue
    qid = enqueue(store, q, alice, QueuedRecipient("x@remote.example"))
    q._record(qid, alice, {"x@remote.example": DEFER})
    with store.read() as txn:
        entry = records.get_entry(txn, alice, qid)
    assert entry.attempts == 1 and entry.next_attempt == now.t + 300 and entry.pending
    assert entry.recipients[0].last_reply == "451 4.3.0 try later"
    now.t += 300
    q._record(qid, alice, {"x@remote.example": OK})
    assert list_queue(store) == [] and alice_inbox(store, alice) == []


def test_permanent_failure_bounces_with_rfc3464_report(store: Store, alice: bytes, queue) -> None:  # type: ignore[no-untyped-def]
    """A 5xx for one recipient bounces it (multipart/report, ORCPT, ENVID, diagnostic) while the other stays queued."""
    q, _ = queue
    qid = enqueue(store, q, alice, QueuedRecipient("x@remote.example", orcpt="rfc822;X@remote.example"),
                  QueuedRecipient("y@remote.example"), envid="env-42")
    q._record(qid, alice, {"x@remote.example": REJECT, "y@remote.example": DEFER})
    [bounce] = alice_inbox(store, alice)
    assert b"report-type=delivery-status" in bounce
    for line in (b"Original-Envelope-Id: env-42", b"Original-Recipient: rfc822; X@remote.example",
                 b"Final-Recipient: rfc822; x@remote.example", b"Action: failed", b"Status: 5.1.1",
                 b"Diagnostic-Code: smtp; 550 5.1.1 no such user", b"Secret body text"):
        assert line in bounce, line
    assert b"y@remote.example" not in bounce
    assert [r.address for r in list_queue(store)[0].pending] == ["y@remote.example"]


def test_ret_hdrs_and_notify_never(store: Store, alice: bytes, queue) -> None:  # type: ignore[no-untyped-def]
    """RET=HDRS returns only the header; NOTIFY=NEVER gets no bounce at all."""
    q, _ = queue
    qid = enqueue(store, q, alice, QueuedRecipient("x@remote.example"), ret="HDRS")
    q._record(qid, alice, {"x@remote.example": REJECT})
    [bounce] = alice_inbox(store, alice)
    assert b"text/rfc822-headers" in bounce and b"Subject: queued" in bounce and b"Secret body text" not in bounce
    qid = enqueue(store, q, alice, QueuedRecipient("z@remote.example", notify=["NEVER"]))
    q._record(qid, alice, {"z@remote.example": REJECT})
    assert len(alice_inbox(store, alice)) == 1 and list_queue(store) == []


def test_delay_warning_once_then_expiry_bounce(store: Store, alice: bytes, queue) -> None:  # type: ignore[no-untyped-def]
    """After 4 hours one delay warning (Will-Retry-Until); after 5 days a 4.4.7 bounce and the message is gone."""
    q, now = queue
    qid = enqueue(store, q, alice, QueuedRecipient("x@remote.example"))
    now.t += 4 * 3600 + 1
    q._record(qid, alice, {"x@remote.example": DEFER})
    [warning] = alice_inbox(store, alice)
    assert b"Action: delayed" in warning and b"Will-Retry-Until:" in warning
    now.t += 3600
    q._record(qid, alice, {"x@remote.example": DEFER})
    assert len(alice_inbox(store, alice)) == 1  # warned once only
    now.t += 5 * 86400
    q._record(qid, alice, {"x@remote.example": DEFER})
    final = alice_inbox(store, alice)[-1]
    assert b"Action: failed" in final and b"Status: 4.4.7" in final
    assert list_queue(store) == []


def test_notify_success_gets_relayed_report_when_next_hop_has_no_dsn(store: Store, alice: bytes, queue) -> None:  # type: ignore[no-untyped-def]
    """NOTIFY=SUCCESS to a server without DSN yields a 'relayed' report (RFC 3461 §6.2.1)."""
    q, _ = queue
    qid = enqueue(store, q, alice, QueuedRecipient("x@remote.example", notify=["SUCCESS"]))
    q._record(qid, alice, {"x@remote.example": OK})
    [report] = alice_inbox(store, alice)
    assert b"Action: relayed" in report


def test_queue_is_sealed_at_rest(store: Store, alice: bytes, queue, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Neither the recipient, the subject nor the body of a queued message appears in the store's file."""
    q, _ = queue
    enqueue(store, q, alice, QueuedRecipient("very-unusual-recipient@remote.example"))
    raw = (tmp_path / "data" / "data.mdb").read_bytes()
    for needle in (b"very-unusual-recipient", b"Secret body text", b"Subject: queued"):
        assert needle not in raw


def test_deleted_owner_drops_orphan_index(store: Store, alice: bytes, queue) -> None:  # type: ignore[no-untyped-def]
    """When the sender's account is deleted its queued mail is unreadable and the worker forgets the index."""
    q, _ = queue
    qid = enqueue(store, q, alice, QueuedRecipient("x@remote.example"))
    AccountService(store).delete("alice@school.example")
    assert q._load(qid, alice) is None
    q._drop_orphan(qid, alice)
    with store.read() as txn:
        assert list(records.scan_index(txn)) == []


def test_long_lines_broken_for_relay() -> None:
    """Lines over 998 octets are broken with CRLF SP before relaying; other messages are untouched."""
    from schoolsuite.services.outbound import limit_line_length

    short = b"Subject: x\r\n\r\nshort\r\n"
    assert limit_line_length(short) is short
    long = b"Subject: x\r\n\r\n" + b"a" * 2500 + b"\r\nend\r\n"
    out = limit_line_length(long)
    assert all(len(line) <= 998 for line in out.split(b"\r\n"))
    assert out.replace(b"\r\n ", b"") == long
