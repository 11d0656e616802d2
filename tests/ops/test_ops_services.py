"""Services of issue 7 without a server: account changes, sessions, tokens, audit, groups, SCIM grammar."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schoolsuite.config import Config
from schoolsuite.protocols.http.admin import grammar, resources
from schoolsuite.protocols.http.admin.errors import ScimError
from schoolsuite.services import Services, audit
from schoolsuite.services.accounts import AccountError, AddressTaken, AccountService
from schoolsuite.services.admin_tokens import AdminTokens, TokenError
from schoolsuite.services.groups import GroupService
from schoolsuite.services.provisioning import GroupSpec, ProvisioningError, ProvisioningService, UserSpec
from schoolsuite.storage import Store

PASSWORD = "correct horse battery"


class ImmediateReactor:
    """Just enough reactor for Services.build: callFromThread runs at once."""

    def callFromThread(self, fn: Any, *args: Any) -> None:  # noqa: N802
        fn(*args)

    def seconds(self) -> float:
        return 0.0

    def getThreadPool(self) -> Any:  # noqa: N802
        raise AssertionError("not used here")


@pytest.fixture
def services(store: Store) -> Iterator[Services]:
    svc = Services.build(Config(), store, ImmediateReactor())
    yield svc
    svc.writer.abandon()


def test_rename_keeps_old_address_as_alias(store: Store) -> None:
    """rename() makes the new address primary and keeps the old one as an alias that still resolves."""
    accounts = AccountService(store)
    accounts.add("old@school.example", PASSWORD)
    info = accounts.rename("old@school.example", "New@School.Example")
    assert info.address == "new@school.example" and info.aliases == ("old@school.example",)
    assert accounts.find_id("old@school.example") == accounts.find_id("new@school.example") is not None
    # Renaming back to the alias swaps them instead of duplicating.
    info = accounts.rename("new@school.example", "old@school.example")
    assert info.address == "old@school.example" and info.aliases == ("new@school.example",)


def test_aliases_quota_and_conflicts(store: Store) -> None:
    """set_aliases/set_quota change the record; a taken alias or a bad quota changes nothing."""
    accounts = AccountService(store)
    accounts.add("a@school.example", PASSWORD)
    accounts.add("b@school.example", PASSWORD)
    assert accounts.set_aliases("a@school.example", ["x@school.example"]).aliases == ("x@school.example",)
    with pytest.raises(AddressTaken):
        accounts.set_aliases("a@school.example", ["b@school.example"])
    with pytest.raises(AccountError):
        accounts.set_quota("a@school.example", -1)
    assert accounts.set_quota("a@school.example", 1 << 30).quota == 1 << 30
    info = accounts.get("a@school.example")
    assert info.aliases == ("x@school.example",) and info.quota == 1 << 30


def test_disable_closes_open_sessions_and_keeps_data(services: Services) -> None:
    """set_active(False) closes the account's registered sessions at once; the account stays."""
    services.accounts.add("t@school.example", PASSWORD)
    account_id = services.accounts.find_id("t@school.example")
    closed: list[str] = []
    services.sessions.add(account_id, lambda: closed.append("imap"))
    services.sessions.add(account_id, lambda: closed.append("dav"))
    services.accounts.set_active("t@school.example", False)
    assert sorted(closed) == ["dav", "imap"]
    assert services.sessions.count(account_id) == 0
    assert services.accounts.get("t@school.example").active is False


def test_admin_tokens(store: Store) -> None:
    """A token checks until revoked; a tampered secret, a bad shape or a reused label are refused."""
    tokens = AdminTokens(store)
    token = tokens.add("portal", "cli:test")
    assert token.startswith("sst_") and tokens.check(token) == "portal"
    assert tokens.check(token[:-1] + ("a" if token[-1] != "a" else "b")) is None
    assert tokens.check("garbage") is None and tokens.check("") is None
    with pytest.raises(TokenError):
        tokens.add("portal", "cli:test")
    assert [t.label for t in tokens.list()] == ["portal"]
    tokens.delete("portal", "cli:test")
    assert tokens.check(token) is None
    with pytest.raises(TokenError):
        tokens.delete("portal", "cli:test")
    actions = [(e.actor, e.action, e.target) for e in audit.entries(store)]
    assert actions == [("cli:test", "token.add", "token:portal"), ("cli:test", "token.del", "token:portal")]


def test_provisioning_is_atomic_and_audited(store: Store) -> None:
    """A refused replace (alias taken) writes neither the account nor an audit entry."""
    accounts = AccountService(store)
    prov = ProvisioningService(store, accounts, GroupService(store))
    one = prov.create_user(UserSpec("one@school.example", display_name="One"), "", "token:t")
    prov.create_user(UserSpec("two@school.example"), "", "token:t")
    before = len(audit.entries(store))
    with pytest.raises(ProvisioningError) as info:
        prov.replace_user(one.account.id, UserSpec("one@school.example", display_name="Changed",
                                                   aliases=("two@school.example",)), None, "token:t")
    assert info.value.kind == "conflict"
    assert prov.get_user(one.account.id).account.name == "One"
    assert len(audit.entries(store)) == before
    assert one.account.password_hash == ""  # no password given: no argon2 hash computed


def test_cli_user_del_leaves_groups(store: Store) -> None:
    """Deleting through AccountService (as `user del` does) drops the account from its groups."""
    accounts = AccountService(store)
    groups = GroupService(store)
    prov = ProvisioningService(store, accounts, groups)
    a = prov.create_user(UserSpec("m1@school.example"), "", "t").account.id
    b = prov.create_user(UserSpec("m2@school.example"), "", "t").account.id
    prov.create_group(GroupSpec("list@school.example", "List", members=(a, b)), "t")
    accounts.delete("m1@school.example")
    assert groups.expand("list@school.example") == [b]
    assert groups.list_for(a) == []
    with pytest.raises(AccountError):
        accounts.add("list@school.example", PASSWORD)


@pytest.mark.parametrize("text", [
    'userName eq "a@b.c"',
    'userName eq "x@b.c" or (active eq true and not (displayName co "zz"))',
    'emails[type eq "work" and value ew "@b.c"]',
    'urn:ietf:params:scim:schemas:core:2.0:User:userName sw "A"',
    'name.givenName pr',
])
def test_filters_that_match(text: str) -> None:
    """Filters of RFC 7644 §3.4.2.2 (eq/co/sw/ew/pr, and/or/not, value paths, full urns) match this user."""
    doc = {"userName": "a@b.c", "active": True, "displayName": "Ann", "name": {"givenName": "Ann"},
           "emails": [{"value": "a@b.c", "type": "work"}]}
    assert grammar.evaluate(grammar.parse_filter(text), doc, (resources.USER.lower(),))


@pytest.mark.parametrize("text", ['userName eq', 'userName xx "a"', '(userName eq "a"', 'userName eq "a" junk',
                                  'emails[type eq "w"', '"a" eq userName'])
def test_bad_filters(text: str) -> None:
    """Malformed filters raise a 400 invalidFilter."""
    with pytest.raises(ScimError) as info:
        grammar.parse_filter(text)
    assert info.value.status == 400 and info.value.scim_type == "invalidFilter"


def test_patch_paths_apply_in_memory() -> None:
    """apply_patch handles value paths with sub-attributes and leaves the input untouched."""
    doc = {"schemas": [resources.USER], "userName": "a@b.c", "emails": [{"value": "a@b.c", "type": "work"}],
           "meta": {"version": "x"}}
    ops = resources.parse_patch({"schemas": [resources.PATCH_OP], "Operations": [
        {"op": "replace", "path": 'emails[type eq "home"].value', "value": "h@b.c"},
        {"op": "replace", "path": "name.familyName", "value": "Doe"}]})
    out = resources.apply_patch(doc, ops, resources.USER_ATTRS, resources.USER)
    assert {"type": "home", "value": "h@b.c"} in out["emails"] and out["name"] == {"familyName": "Doe"}
    assert "meta" in doc and len(doc["emails"]) == 1
    spec, password = resources.user_spec(out)
    assert spec.aliases == ("h@b.c",) and spec.family_name == "Doe" and password is None


def test_cli_account_actions_are_audited(tmp_path: Path) -> None:
    """`schoolsuite user add/passwd/del` and app-password add/del write audit entries naming the Unix user."""
    from ops_helpers import new_instance
    from ops_helpers import cli

    inst = new_instance(tmp_path)
    assert cli(inst, "user", "add", "op@school.example", "--password-stdin", stdin=PASSWORD).returncode == 0
    assert cli(inst, "user", "passwd", "op@school.example", "--password-stdin", stdin=PASSWORD + "!").returncode == 0
    assert cli(inst, "app-password", "add", "op@school.example", "phone").returncode == 0
    assert cli(inst, "app-password", "del", "op@school.example", "phone").returncode == 0
    assert cli(inst, "user", "del", "op@school.example").returncode == 0
    lines = [line.split("\t") for line in cli(inst, "audit").stdout.splitlines()]
    assert [(x[2], x[3]) for x in lines] == [
        ("user.create", "op@school.example"), ("user.passwd", "op@school.example"),
        ("app-password.add", "op@school.example"), ("app-password.del", "op@school.example"),
        ("user.delete", "op@school.example")]
    assert all(x[1].startswith("cli:") for x in lines)
    assert PASSWORD not in cli(inst, "audit").stdout
