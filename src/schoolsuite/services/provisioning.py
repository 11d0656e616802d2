"""Provisioning: what the school portal asks for, each change one transaction with its audit entry.

The SCIM layer (protocols/http/admin) turns requests into :class:`UserSpec`
and :class:`GroupSpec`; this service applies a whole spec at once, so a
request either changes everything it asks for or nothing. Methods are
synchronous and write: a server runs them on the store writer thread. The
optional ``precondition(current)`` runs inside the transaction (ETag
``If-Match`` checks) and may raise to abort it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..storage import Store, WriteTxn
from ..storage import accounts as directory
from ..storage import admin as records
from ..storage.accounts import Account
from ..storage.admin import ScimUserFacts
from . import audit
from .accounts import AccountError, AccountService, AddressTaken
from .groups import GroupInfo, GroupService


class ProvisioningError(AccountError):
    """A refused change; ``kind`` says which (``invalid``, ``conflict``, ``missing``)."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class UserSpec:
    """Everything the portal sets on a user (a full replacement)."""

    address: str
    display_name: str = ""
    given_name: str = ""
    family_name: str = ""
    external_id: str = ""
    active: bool = True
    aliases: tuple[str, ...] = ()
    quota: int | None = None


@dataclass(frozen=True)
class UserRecord:
    """An account as provisioning sees it."""

    account: Account
    facts: ScimUserFacts


@dataclass(frozen=True)
class GroupSpec:
    """Everything the portal sets on a group."""

    address: str
    display_name: str
    external_id: str = ""
    members: tuple[bytes, ...] = field(default=())


Precondition = Callable[[Any], None] | None


def _existing_group(txn: Any, group_id: bytes, precondition: Precondition) -> Any:
    """The stored group (ProvisioningError "missing" if there is none), after its precondition."""
    old = records.get_group(txn, group_id)
    if old is None:
        raise ProvisioningError("no such group", "missing")
    if precondition is not None:
        precondition(GroupInfo.of(old))
    return old


def _refused(exc: AccountError) -> ProvisioningError:
    return ProvisioningError(str(exc), "conflict" if isinstance(exc, AddressTaken) else "invalid")


def _facts(txn: Any, account: Account) -> ScimUserFacts:
    return records.get_user_facts(txn, account.id) or ScimUserFacts(created=account.created,
                                                                     modified=account.created)


def _changed(old: Account, new: UserSpec, old_facts: ScimUserFacts) -> str:
    """Names of the fields a change touches (for the audit log)."""
    names = []
    if old.address != new.address:
        names.append(f"address (was {old.address})")
    if old.name != new.display_name:
        names.append("name")
    if old.active != new.active:
        names.append(f"active={str(new.active).lower()}")
    if tuple(old.aliases) != tuple(new.aliases):
        names.append("aliases")
    if old.quota != new.quota:
        names.append("quota")
    if (old_facts.external_id, old_facts.given_name, old_facts.family_name) != (
            new.external_id, new.given_name, new.family_name):
        names.append("scim")
    return ", ".join(names)


class ProvisioningService:
    """Users and groups for the portal; every change is audited in its own transaction."""

    def __init__(self, store: Store, accounts: AccountService, groups: GroupService) -> None:
        self._store = store
        self._accounts = accounts
        self._groups = groups

    # -- users ----------------------------------------------------------------

    def get_user(self, account_id: bytes) -> UserRecord | None:
        with self._store.read() as txn:
            account = directory.get_account(txn, account_id)
            return None if account is None else UserRecord(account, _facts(txn, account))

    def find_user(self, address: str) -> UserRecord | None:
        """By primary address or alias."""
        with self._store.read() as txn:
            account_id = directory.find_account_id(txn, address)
            account = None if account_id is None else directory.get_account(txn, account_id)
            return None if account is None else UserRecord(account, _facts(txn, account))

    def list_users(self) -> list[UserRecord]:
        """Every account, by address."""
        with self._store.read() as txn:
            found = [UserRecord(a, _facts(txn, a)) for a in directory.list_accounts(txn)]
        return sorted(found, key=lambda r: r.account.address)

    def create_user(self, spec: UserSpec, password_hash: str, actor: str) -> UserRecord:
        """A new account (with mailboxes etc. from the account initializers)."""
        with self._store.write() as txn:
            try:
                account = self._accounts.create_in(
                    txn, spec.address, password_hash=password_hash, name=spec.display_name, quota=spec.quota,
                    aliases=list(spec.aliases), active=spec.active)
            except AccountError as exc:
                raise _refused(exc) from None
            now = time.time()
            facts = ScimUserFacts(spec.external_id, spec.given_name, spec.family_name, now, now)
            records.put_user_facts(txn, account.id, facts)
            audit.record(txn, actor, "user.create", account.address,
                         "password" if password_hash else "no password")
        return UserRecord(account, facts)

    def replace_user(self, account_id: bytes, spec: UserSpec, password_hash: str | None, actor: str,
                     action: str = "user.replace", precondition: Precondition = None) -> UserRecord:
        """Set every field of ``spec`` (and the password when given) in one transaction."""
        with self._store.write() as txn:
            account = self._require(txn, account_id)
            facts = _facts(txn, account)
            if precondition is not None:
                precondition(UserRecord(account, facts))
            detail = _changed(account, spec, facts)
            old_address = account.address
            try:
                account = self._accounts.modify_in(
                    txn, account, address=spec.address, name=spec.display_name, quota=spec.quota,
                    active=spec.active, aliases=list(spec.aliases))
            except AccountError as exc:
                raise _refused(exc) from None
            if password_hash is not None:
                account.password_hash = password_hash
                directory.update_account(txn, account)
                detail = ", ".join(filter(None, [detail, "password"]))
            facts = ScimUserFacts(spec.external_id, spec.given_name, spec.family_name, facts.created, time.time())
            records.put_user_facts(txn, account.id, facts)
            audit.record(txn, actor, action, old_address, detail or "no change")
        return UserRecord(account, facts)

    def delete_user(self, account_id: bytes, actor: str, precondition: Precondition = None) -> None:
        """Crypto-shred the account (as ``user del``); it leaves its groups."""
        with self._store.write() as txn:
            account = self._require(txn, account_id)
            if precondition is not None:
                precondition(UserRecord(account, _facts(txn, account)))
            self._accounts.delete_in(txn, account)
            audit.record(txn, actor, "user.delete", account.address, "data key destroyed")

    @staticmethod
    def _require(txn: WriteTxn, account_id: bytes) -> Account:
        account = directory.get_account(txn, account_id)
        if account is None:
            raise ProvisioningError("no such user", "missing")
        return account

    # -- groups ---------------------------------------------------------------

    def create_group(self, spec: GroupSpec, actor: str) -> GroupInfo:
        with self._store.write() as txn:
            info = self._put_group(txn, None, spec)
            audit.record(txn, actor, "group.create", info.address, f"{len(info.members)} members")
        return info

    def replace_group(self, group_id: bytes, spec: GroupSpec, actor: str, action: str = "group.replace",
                      precondition: Precondition = None) -> GroupInfo:
        with self._store.write() as txn:
            old = _existing_group(txn, group_id, precondition)
            info = self._put_group(txn, group_id, spec)
            added = len(set(info.members) - set(old.members))
            removed = len(set(old.members) - set(info.members))
            audit.record(txn, actor, action, old.address, f"+{added} -{removed} members"
                         + ("" if old.address == info.address else f", address now {info.address}"))
        return info

    def delete_group(self, group_id: bytes, actor: str, precondition: Precondition = None) -> None:
        with self._store.write() as txn:
            old = _existing_group(txn, group_id, precondition)
            self._groups.delete_in(txn, group_id)
            audit.record(txn, actor, "group.delete", old.address)

    def _put_group(self, txn: WriteTxn, group_id: bytes | None, spec: GroupSpec) -> GroupInfo:
        try:
            return self._groups.put_in(txn, group_id, spec.address, spec.display_name, spec.external_id,
                                       list(spec.members))
        except AccountError as exc:
            raise _refused(exc) from None


__all__ = ["GroupSpec", "ProvisioningError", "ProvisioningService", "UserRecord", "UserSpec"]
