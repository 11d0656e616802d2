"""Account records in the directory.

An account record (address, display name, quota, password and app-password
hashes, aliases, active flag) is sealed with the directory key, which the
master key derives. Addresses and aliases are found through a keyed hash
(``N`` entries), so the bytes of the store hold no address in clear.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from .errors import Conflict, NotFound
from .store import ReadTxn, WriteTxn

_RECORD = b"A"
_NAME = b"N"


@dataclass
class AppPassword:
    """A per-device password: only its argon2id hash is kept."""

    label: str
    hash: str
    created: float

    def __repr__(self) -> str:
        return f"AppPassword(label={self.label!r}, created={self.created!r}, hash=<hidden>)"


@dataclass
class Account:
    """One user's entry in the directory."""

    id: bytes
    address: str
    name: str = ""
    quota: int | None = None
    created: float = field(default_factory=time.time)
    active: bool = True
    password_hash: str = field(default="", repr=False)
    app_passwords: list[AppPassword] = field(default_factory=list, repr=False)
    aliases: list[str] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        """The primary address followed by the aliases."""
        return [self.address, *self.aliases]

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["id"] = self.id.hex()
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Account":
        data = json.loads(raw)
        data["id"] = bytes.fromhex(data["id"])
        data["app_passwords"] = [AppPassword(**a) for a in data.get("app_passwords", [])]
        return cls(**data)


def find_account_id(txn: ReadTxn, address: str) -> bytes | None:
    """The id of the account owning ``address`` (primary or alias), or None."""
    return txn.directory_raw(_NAME + txn.address_hash(address))


def get_account(txn: ReadTxn, account_id: bytes) -> Account | None:
    raw = txn.directory_get(_RECORD + account_id)
    return None if raw is None else Account.from_bytes(raw)


def find_account(txn: ReadTxn, address: str) -> Account | None:
    account_id = find_account_id(txn, address)
    return None if account_id is None else get_account(txn, account_id)


def list_accounts(txn: ReadTxn) -> Iterator[Account]:
    """Every account, in id order (not address order: ids are random)."""
    for key, _ in txn.directory_scan(_RECORD):
        account = get_account(txn, key[len(_RECORD) :])
        if account is not None:
            yield account


def count_accounts(txn: ReadTxn) -> int:
    return sum(1 for _ in txn.directory_scan(_RECORD))


def create_account(
    txn: WriteTxn, address: str, *, name: str = "", quota: int | None = None, password_hash: str = ""
) -> Account:
    """Create an account with a fresh data key; :class:`Conflict` if the address is taken."""
    if find_account_id(txn, address) is not None:
        raise Conflict(f"address {address} is taken")
    account = Account(
        id=txn.create_user_key(), address=address, name=name, quota=quota, password_hash=password_hash
    )
    txn.directory_put(_RECORD + account.id, account.to_bytes())
    txn.directory_put_raw(_NAME + txn.address_hash(address), account.id)
    return account


def update_account(txn: WriteTxn, account: Account) -> None:
    """Store changed fields; re-indexes the addresses if they changed."""
    old = get_account(txn, account.id)
    if old is None:
        raise NotFound("no such account")
    for address in set(account.addresses) - set(old.addresses):
        owner = find_account_id(txn, address)
        if owner is not None and owner != account.id:
            raise Conflict(f"address {address} is taken")
        txn.directory_put_raw(_NAME + txn.address_hash(address), account.id)
    for address in set(old.addresses) - set(account.addresses):
        txn.directory_delete(_NAME + txn.address_hash(address))
    txn.directory_put(_RECORD + account.id, account.to_bytes())


def delete_account(txn: WriteTxn, account_id: bytes) -> Account:
    """Crypto-shred the account and remove it from the directory."""
    account = get_account(txn, account_id)
    if account is None:
        raise NotFound("no such account")
    txn.destroy_user(account_id)
    for address in account.addresses:
        txn.directory_delete(_NAME + txn.address_hash(address))
    txn.directory_delete(_RECORD + account_id)
    return account
