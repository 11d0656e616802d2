"""Group address books: every group a user belongs to, as a read-only address book in their home.

``/dav/ADDRESS/group-<group id hex>/`` is generated on each read from the
groups service (``services/groups.py``: ``list_for``, ``get``, ``members``),
as the school directory is from the accounts (``directory.py``): nothing is
stored, so the book appears when the user joins, disappears when they leave,
and follows renames at once. Its display name is the group's name.

Cards (vCard 3.0, RFC 2426, like the directory):

- one per member: FN, N, EMAIL; UID ``schoolsuite-group-<group>-<account>``,
  stable per member and distinct from the member's card in other books
  (clients that key contacts by UID across books do not merge them);
- one for the list address itself (href ``list.vcf``): FN and ORG the group's
  name, EMAIL the list address, ``X-ABShowAs:COMPANY`` (macOS/iOS show it as
  an organisation, not a person). It is a plain card on purpose, not a
  ``KIND:group`` (vCard 4, RFC 6350 §6.1.4; we serve 3.0) nor an Apple
  ``X-ADDRESSBOOKSERVER-KIND:group`` card: iOS/macOS Contacts turn that into a
  contact group without an address of its own (Mail then writes to every
  member one by one), and DAVx5 into an Android contact group (a label) — the
  list address, which is what the school wants people to write to, would be
  lost either way.

CTag and sync token are a hash of the cards, so they change with membership
and with a member's name or address; incremental sync works from the states
this process handed out (``GeneratedBook.sync``).

Isolation: only a member gets the book; for anyone else the name does not
exist in their home (404), and another user's home is 403 (rights).
"""

from __future__ import annotations

import re
from typing import Any

from radicale import storage

from ...storage.errors import NotFound
from .directory import GeneratedBook, _escape, vcard

PREFIX = "group-"
LIST_HREF = "list.vcf"
_NAME = re.compile(r"group-([0-9a-f]{2,64})")


def book_name(group_id: bytes) -> str:
    return f"{PREFIX}{group_id.hex()}"


def is_reserved(rel: str) -> bool:
    """Names of the form ``group-…`` in a home belong to group books (no stored collection may take one)."""
    return rel.startswith(PREFIX) and "/" not in rel


def list_card(group_id: bytes, address: str, name: str) -> str:
    """The list address as a card an address picker offers (see the module docstring)."""
    display = name.strip() or address
    lines = [
        "BEGIN:VCARD",
        "VERSION:3.0",
        f"UID:schoolsuite-group-{group_id.hex()}",
        f"FN:{_escape(display)}",
        "N:;;;;",
        f"ORG:{_escape(display)}",
        "X-ABShowAs:COMPANY",
        f"EMAIL;TYPE=INTERNET,WORK:{_escape(address)}",
        "NOTE:Mailing list: mail to this address reaches every member.",
        "END:VCARD",
    ]
    return "\r\n".join(lines) + "\r\n"


class GroupBook(GeneratedBook):
    """One group's book, as its member ``account_id`` sees it."""

    refusal = "a group's address book is read-only (it follows the group's membership)"

    def __init__(self, backend: Any, account_id: bytes, owner: str, group: Any, groups: Any) -> None:
        super().__init__(backend, account_id, owner)
        self._group = group
        self._groups = groups
        self.name = book_name(group.id)
        self.props = {
            "tag": "VADDRESSBOOK",
            "D:displayname": group.name.strip() or group.address,
            "CR:addressbook-description": f"Members of {group.address} (read-only)",
        }

    def cards(self) -> list[tuple[str, str, str, float]]:
        group = self._group
        try:
            members = self._groups.members(group.id)
        except NotFound:  # deleted since it was listed
            members = []
        found = [(LIST_HREF, f"schoolsuite-group-{group.id.hex()}",
                  list_card(group.id, group.address, group.name), group.modified)]
        for m in sorted(members, key=lambda m: m.address):
            uid = f"schoolsuite-group-{group.id.hex()}-{m.account_id.hex()}"
            found.append((f"{m.account_id.hex()}.vcf", uid, vcard(m.account_id, m.address, m.name, uid=uid),
                          group.modified))
        return found


class GroupBooks:
    """The provider the storage plugin asks for ``group-…`` names (``Storage(dynamic=…)``)."""

    def __init__(self, groups: Any) -> None:
        self._groups = groups

    is_reserved = staticmethod(is_reserved)

    def lookup(self, backend: Any, account_id: bytes, owner: str, rel: str) -> storage.BaseCollection | None:
        """The book named ``rel`` if ``account_id`` is a member of that group now, else None."""
        match = _NAME.fullmatch(rel)
        if match is None or len(match.group(1)) % 2:
            return None
        group = self._groups.get(bytes.fromhex(match.group(1)))
        if group is None or account_id not in group.members:
            return None
        return GroupBook(backend, account_id, owner, group, self._groups)

    def all(self, backend: Any, account_id: bytes, owner: str) -> list[storage.BaseCollection]:
        """Every book of ``account_id``'s groups (for a Depth-1 PROPFIND of the home)."""
        return [GroupBook(backend, account_id, owner, g, self._groups) for g in self._groups.list_for(account_id)]
