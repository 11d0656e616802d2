"""Fixtures of the IMAP and mail store tests: a store with accounts, delivery without threads."""

from __future__ import annotations

import os

import pytest

from schoolsuite.services import Delivery, MailNotifier  # noqa: F401  (registers the mailbox initializer)
from schoolsuite.services.accounts import AccountService
from schoolsuite.storage import Store

from imap_helpers import InlineReactor, InlineWriter

PASSWORD = "correct horse battery"


@pytest.fixture
def notifier() -> MailNotifier:
    return MailNotifier(InlineReactor())


@pytest.fixture
def delivery(store: Store, notifier: MailNotifier) -> Delivery:
    return Delivery(store, InlineWriter(), notifier)


@pytest.fixture
def alice(accounts: AccountService) -> bytes:
    accounts.add("alice@school.example", PASSWORD)
    account_id = accounts.find_id("alice@school.example")
    assert account_id is not None
    return account_id


@pytest.fixture
def bob(accounts: AccountService) -> bytes:
    accounts.add("bob@school.example", PASSWORD, quota=2000)
    account_id = accounts.find_id("bob@school.example")
    assert account_id is not None
    return account_id


@pytest.fixture
def services(store, accounts, notifier, delivery, alice, bob):
    """A Services-like object wired for in-process transcript tests (synchronous writer, fake auth)."""
    from types import SimpleNamespace

    from schoolsuite.services import SessionRegistry

    from imap_helpers import FakeAuth, InlineWriter

    from schoolsuite.services.cred import SchoolsuiteRealm, make_portal

    auth = FakeAuth({"alice@school.example": alice, "bob@school.example": bob}, PASSWORD)
    return SimpleNamespace(store=store, writer=InlineWriter(), notifier=notifier, delivery=delivery,
                           sessions=SessionRegistry(), auth=auth, portal=make_portal(auth, SchoolsuiteRealm()))


@pytest.fixture
def conn(services):
    """A logged-in connection of alice."""
    from imap_helpers import Conn

    c = Conn(services)
    c.login()
    return c


@pytest.fixture(scope="module")
def services_for_fuzz(tmp_path_factory):
    """Services on a module-wide store (hypothesis reuses it across examples)."""
    from types import SimpleNamespace

    from schoolsuite.services import SessionRegistry
    from schoolsuite.services.cred import SchoolsuiteRealm, make_portal

    from imap_helpers import FakeAuth, InlineWriter

    s = Store.open(tmp_path_factory.mktemp("fuzz") / "data", os.urandom(32), map_size=1 << 30)
    accounts = AccountService(s)
    accounts.add("alice@school.example", PASSWORD)
    alice = accounts.find_id("alice@school.example")
    notifier = MailNotifier(InlineReactor())
    auth = FakeAuth({"alice@school.example": alice}, PASSWORD)
    yield SimpleNamespace(store=s, writer=InlineWriter(), notifier=notifier,
                          delivery=Delivery(s, InlineWriter(), notifier), sessions=SessionRegistry(), auth=auth,
                          portal=make_portal(auth, SchoolsuiteRealm()))
    s.close()
