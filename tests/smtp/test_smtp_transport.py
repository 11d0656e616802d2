"""MailTransport.submit: local copies, queue entry and bounces committed together."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from schoolsuite.config import Config
from schoolsuite.services import Delivery, MailNotifier  # registers the mailbox initializer
from schoolsuite.services.accounts import AccountService
from schoolsuite.services.queue import list_queue
from schoolsuite.services.transport import MailTransport, Recipient
from schoolsuite.storage import Store
from schoolsuite.storage import mail

MESSAGE = b"From: alice@school.example\r\nSubject: class trip\r\n\r\nBring a packed lunch.\r\n" + b"." * 3000 + b"\r\n"


class InlineWriter:
    def run(self, fn, *args, **kw):  # type: ignore[no-untyped-def]
        return defer.maybeDeferred(fn, *args, **kw)


class InlineReactor(Clock):
    def callFromThread(self, fn, *args):  # type: ignore[no-untyped-def]  # noqa: N802
        pass  # the queue worker is not started here


def fired(d: defer.Deferred) -> object:  # type: ignore[type-arg]
    box: list = []
    d.addBoth(box.append)
    assert box
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[MailTransport, Store, dict[str, bytes]]]:
    store = Store.open(tmp_path / "data", os.urandom(32), map_size=1 << 30)
    accounts = AccountService(store)
    ids = {}
    for name, quota in (("alice", None), ("bob", None), ("carol", 1024)):
        accounts.add(f"{name}@school.example", "correct horse battery", quota=quota)
        ids[name] = accounts.find_id(f"{name}@school.example")
    reactor = InlineReactor()
    services = SimpleNamespace(store=store, writer=InlineWriter(), reactor=reactor, accounts=accounts,
                               delivery=Delivery(store, InlineWriter(), MailNotifier(reactor)))
    config = Config()
    config.smtp.dns_servers = "127.0.0.1:9"  # never asked here; never the system resolver
    transport = MailTransport(services, config)  # type: ignore[arg-type]
    transport.in_thread = lambda fn, *args: defer.maybeDeferred(fn, *args)  # type: ignore[method-assign]
    yield transport, store, ids
    store.close()


def messages(store: Store, account_id: bytes) -> list[bytes]:
    with store.read() as txn:
        user = txn.user(account_id)
        box = mail.require_mailbox(user, "INBOX")
        return [mail.read_message(user, mail.get_message(user, box.id, uid).content_id)
                for uid in mail.load_index(user, box.id).uids]


def test_submit_local_remote_and_quota_bounce(setup) -> None:  # type: ignore[no-untyped-def]
    """One submit: bob gets a copy, the remote recipient is queued, carol (over quota) is bounced to alice."""
    transport, store, ids = setup
    recipients = [Recipient("bob@school.example", ids["bob"]), Recipient("carol@school.example", ids["carol"]),
                  Recipient("friend@remote.example", None, ("FAILURE",), "rfc822;friend@remote.example")]
    result = fired(transport.submit(ids["alice"], "alice@school.example", recipients, MESSAGE, envid="e1"))
    assert result.delivered == ["bob@school.example"] and result.refused == {"carol@school.example": "mailbox full"}
    assert result.queue_id
    assert messages(store, ids["bob"]) == [MESSAGE] and messages(store, ids["carol"]) == []
    [bounce] = messages(store, ids["alice"])
    assert b"Final-Recipient: rfc822; carol@school.example" in bounce and b"Status: 5.2.2" in bounce
    [entry] = list_queue(store)
    assert entry.account_id == ids["alice"] and [r.address for r in entry.recipients] == ["friend@remote.example"]
    assert entry.recipients[0].notify == ["FAILURE"] and entry.envid == "e1"


def test_submit_to_self_and_alias_is_one_copy(setup) -> None:  # type: ignore[no-untyped-def]
    """Two recipients that are the same account get one copy and nothing is queued."""
    transport, store, ids = setup
    result = fired(transport.submit(ids["alice"], "alice@school.example",
                                    [Recipient("alice@school.example", ids["alice"]),
                                     Recipient("Alice@school.example", ids["alice"])], MESSAGE))
    assert result.queue_id is None and len(messages(store, ids["alice"])) == 1 and list_queue(store) == []


def test_receive_group_commit_results(setup) -> None:  # type: ignore[no-untyped-def]
    """receive() answers per account: a uid for bob, QuotaExceeded for carol; bob's copy is committed."""
    transport, store, ids = setup
    results = fired(transport.receive([Recipient("bob@school.example", ids["bob"]),
                                       Recipient("carol@school.example", ids["carol"])], MESSAGE,
                                      sender="someone@school.example"))
    assert isinstance(results[ids["bob"]], int) and type(results[ids["carol"]]).__name__ == "QuotaExceeded"
    assert messages(store, ids["bob"]) == [MESSAGE]
    assert list_queue(store) == []  # the sender's domain is local: no DSN queued back to ourselves


def test_notify_success_local_gets_delivered_report(setup) -> None:  # type: ignore[no-untyped-def]
    """NOTIFY=SUCCESS for a local recipient puts a 'delivered' report (RFC 3464) into the sender's INBOX."""
    transport, store, ids = setup
    fired(transport.submit(ids["alice"], "alice@school.example",
                           [Recipient("bob@school.example", ids["bob"], ("SUCCESS",))], MESSAGE, ret="HDRS"))
    [report] = messages(store, ids["alice"])
    assert b"Action: delivered" in report and b"Status: 2.0.0" in report and b"text/rfc822-headers" in report


def test_postmaster_routed_to_configured_account(tmp_path: Path) -> None:
    """postmaster@ any local domain reaches the account named by [smtp] postmaster (RFC 5321 §4.5.1)."""
    store = Store.open(tmp_path / "pm", os.urandom(32), map_size=1 << 30)
    try:
        accounts = AccountService(store)
        accounts.add("it@school.example", "correct horse battery")
        config = Config()
        config.smtp.dns_servers, config.smtp.postmaster = "127.0.0.1:9", "it@school.example"
        services = SimpleNamespace(store=store, writer=InlineWriter(), reactor=InlineReactor(), accounts=accounts)
        transport = MailTransport(services, config)  # type: ignore[arg-type]
        assert transport.find_account("PostMaster@school.example") == accounts.find_id("it@school.example")
        assert transport.find_account("nobody@school.example") is None
    finally:
        store.close()


def test_receive_into_missing_junk_falls_back_to_inbox(setup) -> None:  # type: ignore[no-untyped-def]
    """Quarantined mail for an account without a Junk mailbox lands in INBOX rather than being refused."""
    transport, store, ids = setup
    with store.write() as txn:
        mail.delete_mailbox(txn.user(ids["bob"]), "Junk")
    results = fired(transport.receive([Recipient("bob@school.example", ids["bob"])], MESSAGE, mailbox="Junk"))
    assert isinstance(results[ids["bob"]], int) and messages(store, ids["bob"]) == [MESSAGE]
