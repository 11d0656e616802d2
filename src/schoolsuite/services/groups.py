"""Groups: a mailing-list address plus a shared address book of its members.

A group (a subject department, a class's teachers) is created by the school
portal through SCIM. What the protocols use:

- ``expand(address)`` → the member account ids of the group whose list
  address this is, or None when it is not a group address (SMTP delivery).
- ``list_for(account_id)`` → the groups an account belongs to (CardDAV shows
  each as a shared, read-only address book of its members).
- ``members(group_id)`` → (account id, address, name) of every member, for
  that address book's cards.

Reads are cheap (one read transaction, fine on the reactor thread); changes
are transaction-level functions that provisioning combines with its audit
entry in one transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..storage import Store, WriteTxn
from ..storage import accounts as directory
from ..storage import admin as records
from ..storage.accounts import Account
from ..storage.admin import Group
from ..storage.errors import Conflict, NotFound
from .accounts import ACCOUNT_FINALIZERS, ADDRESS_CLAIMS, AccountError, AddressTaken, normalize_address

MAX_MEMBERS = 20_000


class GroupError(AccountError):
    """A refused group operation (address taken, unknown member)."""


@dataclass(frozen=True)
class GroupInfo:
    """A group as the protocols see it."""

    id: bytes
    address: str
    name: str
    external_id: str
    members: tuple[bytes, ...]
    created: float
    modified: float

    @classmethod
    def of(cls, group: Group) -> "GroupInfo":
        return cls(group.id, group.address, group.name, group.external_id, tuple(group.members),
                   group.created, group.modified)


@dataclass(frozen=True)
class Member:
    """One member as a shared address book shows it."""

    account_id: bytes
    address: str
    name: str


class GroupService:
    """Read groups (for delivery and address books) and change them (for provisioning)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # -- what SMTP and CardDAV call ---------------------------------------------

    def expand(self, address: str) -> list[bytes] | None:
        """Member account ids of the group with list address ``address``; None if no such group."""
        try:
            address = normalize_address(address)
        except AccountError:
            return None
        with self._store.read() as txn:
            group_id = records.find_group_id(txn, address)
            group = None if group_id is None else records.get_group(txn, group_id)
        return None if group is None else list(group.members)

    def list_for(self, account_id: bytes) -> list[GroupInfo]:
        """The groups ``account_id`` is a member of, by address."""
        with self._store.read() as txn:
            found = [records.get_group(txn, gid) for gid in records.groups_of(txn, account_id)]
        return sorted((GroupInfo.of(g) for g in found if g is not None), key=lambda g: g.address)

    def members(self, group_id: bytes) -> list[Member]:
        """Every member's id, address and display name (for the shared address book)."""
        with self._store.read() as txn:
            group = records.get_group(txn, group_id)
            if group is None:
                raise NotFound("no such group")
            accounts = [directory.get_account(txn, m) for m in group.members]
        return [Member(a.id, a.address, a.name) for a in accounts if a is not None]

    def get(self, group_id: bytes) -> GroupInfo | None:
        with self._store.read() as txn:
            group = records.get_group(txn, group_id)
        return None if group is None else GroupInfo.of(group)

    def list(self) -> list[GroupInfo]:
        with self._store.read() as txn:
            return sorted((GroupInfo.of(g) for g in records.list_groups(txn)), key=lambda g: g.address)

    # -- changes inside a provisioning transaction ---------------------------------

    def put_in(self, txn: WriteTxn, group_id: bytes | None, address: str, name: str, external_id: str,
               members: list[bytes]) -> GroupInfo:
        """Create (``group_id`` None) or replace a group; every member must be an account."""
        address = normalize_address(address)
        members = list(dict.fromkeys(members))
        if len(members) > MAX_MEMBERS:
            raise GroupError(f"a group has at most {MAX_MEMBERS} members")
        for member in members:
            if directory.get_account(txn, member) is None:
                raise GroupError(f"no such member: {member.hex()}")
        now = time.time()
        if group_id is None:
            group = Group(records.new_group_id(txn), address, name, external_id, members, now, now)
        else:
            old = records.get_group(txn, group_id)
            if old is None:
                raise NotFound("no such group")
            group = Group(group_id, address, name, external_id, members, old.created, now)
        taken = directory.find_account_id(txn, address) is not None
        try:
            records.put_group(txn, group, address_taken=taken)
        except Conflict:
            raise AddressTaken(f"address {address} is taken") from None
        return GroupInfo.of(group)

    def delete_in(self, txn: WriteTxn, group_id: bytes) -> GroupInfo:
        return GroupInfo.of(records.delete_group(txn, group_id))


def _leave_groups(txn: WriteTxn, account: Account) -> None:
    records.drop_member_everywhere(txn, account.id)
    records.delete_user_facts(txn, account.id)


def _is_group_address(txn: object, address: str) -> bool:
    return records.find_group_id(txn, address) is not None  # type: ignore[arg-type]


# A deleted account (SCIM DELETE or ``user del``) leaves every group in the same
# transaction; no account may take a group's list address.
ACCOUNT_FINALIZERS.append(_leave_groups)
ADDRESS_CLAIMS.append(_is_group_address)

__all__ = ["GroupError", "GroupInfo", "GroupService", "Member"]
