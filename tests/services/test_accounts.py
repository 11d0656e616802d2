"""The account service: validation, one transaction per change, app passwords."""

import pytest

from schoolsuite.services import accounts as accounts_mod
from schoolsuite.services.accounts import AccountError, normalize_address
from schoolsuite.services.passwords import PasswordPolicyError, looks_like_app_password
from schoolsuite.storage import accounts as directory

from svc_helpers import PASSWORD


@pytest.mark.parametrize(
    "given,expected",
    [
        ("Ana@School.Example", "ana@school.example"),
        ("  b.c+tag@school.example ", "b.c+tag@school.example"),
        ("jörg@schule.example", "jörg@schule.example"),
        ("x@Bücher.example", "x@xn--bcher-kva.example"),
    ],
)
def test_normalize_address(given, expected):
    """Addresses are compared in one canonical form (NFC, lower case, IDNA domain)."""
    assert normalize_address(given) == expected


@pytest.mark.parametrize("bad", ["", "nobody", "@x.org", "a@", "a@localhost", "a b@x.org", "a..b@x.org",
                                 "a@-x.org", "a@x..org", "<a>@x.org", "a@x.org\n"])
def test_malformed_addresses_refused(bad):
    """Malformed addresses are refused with one line naming the problem."""
    if bad == "a@x.org\n":
        assert normalize_address(bad) == "a@x.org"  # surrounding white space is dropped
        return
    with pytest.raises(AccountError) as e:
        normalize_address(bad)
    assert "\n" not in str(e.value)


def test_add_get_list(accounts):
    """A created account can be shown and listed, without its hashes."""
    info = accounts.add("Ana@school.example", PASSWORD, name="Ana B", quota=5 << 30)
    assert info.address == "ana@school.example" and info.quota == 5 << 30
    assert accounts.get("ANA@school.example").name == "Ana B"
    assert [a.address for a in accounts.list()] == ["ana@school.example"]
    assert "argon2" not in repr(accounts.get("ana@school.example"))


def test_duplicate_refused(accounts):
    """An address can be taken only once."""
    accounts.add("ana@school.example", PASSWORD)
    with pytest.raises(AccountError, match="exists"):
        accounts.add("ANA@school.example", PASSWORD)


@pytest.mark.parametrize("bad", ["", "short", "ana@school.example", "aaaaaaaaaaaa", "x" * 2000, "new\nline12345"])
def test_weak_passwords_refused(accounts, bad):
    """Empty, short, guessable and over-long passwords are refused, and no account is made."""
    with pytest.raises(PasswordPolicyError):
        accounts.add("ana@school.example", bad)
    assert accounts.list() == []


def test_initializer_failure_leaves_no_account(accounts, monkeypatch):
    """If setting up an account fails half-way, nothing of it remains."""
    def init(txn, account):
        txn.user(account.id).put(0x10, b"inbox", b"x")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(accounts_mod, "ACCOUNT_INITIALIZERS", [init])
    with pytest.raises(RuntimeError):
        accounts.add("ana@school.example", PASSWORD)
    assert accounts.list() == [] and accounts.find_id("ana@school.example") is None


def test_initializers_run_in_the_creating_transaction(accounts, store, monkeypatch):
    """Initializers see the new account and write into its records."""
    monkeypatch.setattr(accounts_mod, "ACCOUNT_INITIALIZERS",
                        [lambda txn, account: txn.user(account.id).put(0x10, b"inbox", b"made")])
    accounts.add("ana@school.example", PASSWORD)
    with store.read() as txn:
        assert txn.user(accounts.find_id("ana@school.example")).get(0x10, b"inbox") == b"made"


def test_set_password_and_delete(accounts, store):
    """A new password replaces the old hash; delete removes the account and its key."""
    accounts.add("ana@school.example", PASSWORD)
    account_id = accounts.find_id("ana@school.example")
    with store.read() as txn:
        before = directory.get_account(txn, account_id).password_hash
    accounts.set_password("ana@school.example", "another good password")
    with store.read() as txn:
        assert directory.get_account(txn, account_id).password_hash != before
    accounts.delete("ana@school.example")
    assert accounts.find_id("ana@school.example") is None
    with pytest.raises(AccountError, match="no such user"):
        accounts.delete("ana@school.example")


def test_unknown_user(accounts):
    """Operations on an unknown address say so."""
    for op in (lambda: accounts.get("x@school.example"), lambda: accounts.set_password("x@school.example", PASSWORD),
               lambda: accounts.add_app_password("x@school.example", "phone")):
        with pytest.raises(AccountError, match="no such user"):
            op()


def test_app_passwords(accounts):
    """App passwords are generated, listed by label, unique per label, and deletable."""
    accounts.add("ana@school.example", PASSWORD)
    secret = accounts.add_app_password("ana@school.example", "phone")
    assert looks_like_app_password(secret)
    with pytest.raises(AccountError, match="exists"):
        accounts.add_app_password("ana@school.example", "phone")
    with pytest.raises(AccountError, match="label"):
        accounts.add_app_password("ana@school.example", "bad/label")
    assert [label for label, _ in accounts.list_app_passwords("ana@school.example")] == ["phone"]
    accounts.delete_app_password("ana@school.example", "phone")
    assert accounts.list_app_passwords("ana@school.example") == []
    with pytest.raises(AccountError):
        accounts.delete_app_password("ana@school.example", "phone")


def test_change_events_after_commit(store):
    """Change events are told after the commit, never for a failed change."""
    events = []
    service = accounts_mod.AccountService(store, lambda event, account_id: events.append(event))
    service.add("ana@school.example", PASSWORD)
    with pytest.raises(AccountError):
        service.add("ana@school.example", PASSWORD)
    service.add_app_password("ana@school.example", "phone")
    service.delete("ana@school.example")
    assert events == ["created", "changed", "deleted"]
