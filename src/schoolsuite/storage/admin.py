"""Directory records of administration: admin tokens, the audit log, SCIM facts, groups.

Everything here lives in the ``directory`` database under the prefix letter
``X`` (taken by provisioning), sealed with the directory key like the account
records. Layout (after ``X``):

===========================  =====================================  ==========
key                          value (sealed unless noted)            what
===========================  =====================================  ==========
``t`` token id (8 bytes)     JSON label, SHA-256 of secret, times   admin token
``l`` time ns (8) + rand (4) JSON actor, action, target, detail     audit entry
``s`` account id             JSON externalId, given/family name,    SCIM facts
                             created/modified times                 of a user
``g`` group id (16)          JSON address, name, externalId,        a group
                             member account ids, times
``n`` address hash           group id (raw)                         group address
``m`` account id + group id  empty (raw)                            membership
===========================  =====================================  ==========

Addresses are only looked up through the directory's keyed hash; nothing in
a key says who or what, and the values are sealed.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from .errors import Conflict, NotFound
from .store import ReadTxn, WriteTxn

PREFIX = b"X"
_TOKEN = PREFIX + b"t"
_AUDIT = PREFIX + b"l"
_SCIM_USER = PREFIX + b"s"
_GROUP = PREFIX + b"g"
_GROUP_NAME = PREFIX + b"n"
_MEMBER = PREFIX + b"m"
_NS = struct.Struct(">Q")
TOKEN_ID_SIZE = 8
GROUP_ID_SIZE = 16


def _dump(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# -- admin tokens ---------------------------------------------------------------


@dataclass
class AdminToken:
    """A bearer token of the provisioning API: only a hash of its secret is kept."""

    id: bytes
    label: str
    digest: str = field(repr=False)  # hex SHA-256 of the secret part
    created: float = 0.0


def put_token(txn: WriteTxn, token: AdminToken) -> None:
    data = asdict(token)
    data["id"] = token.id.hex()
    txn.directory_put(_TOKEN + token.id, _dump(data))


def get_token(txn: ReadTxn, token_id: bytes) -> AdminToken | None:
    raw = txn.directory_get(_TOKEN + token_id)
    if raw is None:
        return None
    data = json.loads(raw)
    data["id"] = bytes.fromhex(data["id"])
    return AdminToken(**data)


def list_tokens(txn: ReadTxn) -> list[AdminToken]:
    tokens = []
    for key, _ in txn.directory_scan(_TOKEN):
        token = get_token(txn, key[len(_TOKEN):])
        if token is not None:
            tokens.append(token)
    return tokens


def delete_token(txn: WriteTxn, token_id: bytes) -> bool:
    return txn.directory_delete(_TOKEN + token_id)


# -- audit log ------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    """Who did what to which target, when; never content or secrets."""

    time: float
    actor: str
    action: str
    target: str
    detail: str = ""


def append_audit(txn: WriteTxn, entry: AuditEntry) -> None:
    """Append ``entry``; keys sort by time, so the log reads in order."""
    key = _AUDIT + _NS.pack(int(entry.time * 1e9)) + os.urandom(4)
    txn.directory_put(key, _dump(asdict(entry)))


def scan_audit(txn: ReadTxn, since: float = 0.0) -> Iterator[AuditEntry]:
    """Audit entries from ``since`` on, oldest first."""
    start = _AUDIT + _NS.pack(int(since * 1e9))
    for key, _ in txn.directory_scan(_AUDIT):
        if key < start:
            continue
        raw = txn.directory_get(key)
        if raw is not None:
            yield AuditEntry(**json.loads(raw))


def purge_audit(txn: WriteTxn, before: float, limit: int) -> int:
    """Delete the oldest audit entries written before ``before``, at most ``limit``; returns how many."""
    end = _AUDIT + _NS.pack(int(before * 1e9))
    keys = []
    for key, _ in txn.directory_scan(_AUDIT):
        if key >= end or len(keys) >= limit:
            break
        keys.append(key)
    for key in keys:
        txn.directory_delete(key)
    return len(keys)


# -- SCIM facts of a user ---------------------------------------------------------


@dataclass
class ScimUserFacts:
    """What SCIM knows of an account besides the account record."""

    external_id: str = ""
    given_name: str = ""
    family_name: str = ""
    created: float = 0.0
    modified: float = 0.0


def get_user_facts(txn: ReadTxn, account_id: bytes) -> ScimUserFacts | None:
    raw = txn.directory_get(_SCIM_USER + account_id)
    return None if raw is None else ScimUserFacts(**json.loads(raw))


def put_user_facts(txn: WriteTxn, account_id: bytes, facts: ScimUserFacts) -> None:
    txn.directory_put(_SCIM_USER + account_id, _dump(asdict(facts)))


def delete_user_facts(txn: WriteTxn, account_id: bytes) -> None:
    txn.directory_delete(_SCIM_USER + account_id)


# -- groups -------------------------------------------------------------------------


@dataclass
class Group:
    """A mailing-list address and the accounts that are its members."""

    id: bytes
    address: str
    name: str = ""
    external_id: str = ""
    members: list[bytes] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    modified: float = field(default_factory=time.time)

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["id"] = self.id.hex()
        data["members"] = [m.hex() for m in self.members]
        return _dump(data)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Group":
        data = json.loads(raw)
        data["id"] = bytes.fromhex(data["id"])
        data["members"] = [bytes.fromhex(m) for m in data["members"]]
        return cls(**data)


def get_group(txn: ReadTxn, group_id: bytes) -> Group | None:
    raw = txn.directory_get(_GROUP + group_id)
    return None if raw is None else Group.from_bytes(raw)


def find_group_id(txn: ReadTxn, address: str) -> bytes | None:
    """The group whose mailing-list address is ``address`` (normalized), or None."""
    return txn.directory_raw(_GROUP_NAME + txn.address_hash(address))


def list_groups(txn: ReadTxn) -> Iterator[Group]:
    for key, _ in txn.directory_scan(_GROUP):
        group = get_group(txn, key[len(_GROUP):])
        if group is not None:
            yield group


def groups_of(txn: ReadTxn, account_id: bytes) -> list[bytes]:
    """Ids of the groups ``account_id`` is a member of (one index scan, nothing decrypted)."""
    prefix = _MEMBER + account_id
    return [key[len(prefix):] for key, _ in txn.directory_scan(prefix)]


def put_group(txn: WriteTxn, group: Group, *, address_taken: bool) -> None:
    """Create or replace ``group``, keeping the address and membership indexes in step.

    ``address_taken`` says that an account owns the address (the caller checks
    accounts; this layer checks other groups): then :class:`Conflict`.
    """
    old = get_group(txn, group.id)
    owner = find_group_id(txn, group.address)
    if address_taken or (owner is not None and owner != group.id):
        raise Conflict(f"address {group.address} is taken")
    if old is not None and old.address != group.address:
        txn.directory_delete(_GROUP_NAME + txn.address_hash(old.address))
    txn.directory_put_raw(_GROUP_NAME + txn.address_hash(group.address), group.id)
    before = set(old.members) if old is not None else set()
    after = set(group.members)
    for account_id in before - after:
        txn.directory_delete(_MEMBER + account_id + group.id)
    for account_id in after - before:
        txn.directory_put_raw(_MEMBER + account_id + group.id, b"")
    txn.directory_put(_GROUP + group.id, group.to_bytes())


def new_group_id(txn: ReadTxn) -> bytes:
    while True:
        group_id = os.urandom(GROUP_ID_SIZE)
        if txn.directory_raw(_GROUP + group_id) is None:
            return group_id


def delete_group(txn: WriteTxn, group_id: bytes) -> Group:
    group = get_group(txn, group_id)
    if group is None:
        raise NotFound("no such group")
    for account_id in group.members:
        txn.directory_delete(_MEMBER + account_id + group_id)
    txn.directory_delete(_GROUP_NAME + txn.address_hash(group.address))
    txn.directory_delete(_GROUP + group_id)
    return group


def drop_member_everywhere(txn: WriteTxn, account_id: bytes) -> list[bytes]:
    """Remove a (deleted) account from every group; returns the group ids touched."""
    touched = groups_of(txn, account_id)
    for group_id in touched:
        group = get_group(txn, group_id)
        txn.directory_delete(_MEMBER + account_id + group_id)
        if group is not None:
            group.members = [m for m in group.members if m != account_id]
            txn.directory_put(_GROUP + group_id, group.to_bytes())
    return touched
