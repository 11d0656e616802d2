"""Accounts: creating, changing and destroying them, with their app passwords.

Every operation is one store transaction, so a failure leaves no half-made
account. The methods are synchronous (the CLI calls them directly); a server
runs them on the writer thread (:class:`schoolsuite.services.writer.StoreWriter`).

Other areas add what a new account needs (mailboxes, a calendar, an address
book, a file space) by appending to :data:`ACCOUNT_INITIALIZERS`; they run
inside the creating transaction.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..storage import NotFound, Store, WriteTxn
from ..storage import accounts as directory
from ..storage.accounts import Account, AppPassword
from ..storage.errors import Conflict
from . import passwords

#: Called as ``init(txn, account)`` inside the transaction that creates an account.
ACCOUNT_INITIALIZERS: list[Callable[[WriteTxn, Account], None]] = []
#: Called as ``fin(txn, account)`` inside the transaction that deletes an account,
#: before its key and records go (e.g. to drop it from groups).
ACCOUNT_FINALIZERS: list[Callable[[WriteTxn, Account], None]] = []
#: Called as ``taken(txn, address)`` before an address is given to an account:
#: True when something else (a group's list address) owns it.
ADDRESS_CLAIMS: list[Callable[[Any, str], bool]] = []
MAX_ALIASES = 100
_UNSET: Any = object()

MAX_APP_PASSWORDS = 50
_LABEL = re.compile(r"^[\w.@+ -]{1,64}$")
# RFC 5321 §4.1.2 dot-atom local part (ASCII or UTF-8 per RFC 6531), a dotted domain.
_LOCAL = re.compile(r"^[^\s\"(),:;<>@\[\\\]]+$")
_LABEL_DNS = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class AccountError(UserError):
    """A refused account operation (malformed address, unknown user, taken address)."""


class AddressTaken(AccountError):
    """The address (or alias) belongs to another account or a group."""


def normalize_address(address: str) -> str:
    """Canonical form of a mail address: NFC, lower case, IDNA domain; :class:`AccountError` if malformed."""
    address = unicodedata.normalize("NFC", address.strip())
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or len(address) > 254 or len(local) > 64:
        raise AccountError(f"malformed address {address!r}: expected name@domain")
    if not _LOCAL.match(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        raise AccountError(f"malformed address {address!r}: bad local part")
    try:
        domain = domain.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise AccountError(f"malformed address {address!r}: bad domain") from None
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL_DNS.match(label) for label in labels):
        raise AccountError(f"malformed address {address!r}: bad domain")
    return f"{local.lower()}@{domain}"


@dataclass(frozen=True)
class AccountInfo:
    """What ``user show`` and ``user list`` tell; no hashes."""

    address: str
    name: str
    quota: int | None
    created: float
    active: bool
    aliases: tuple[str, ...]
    app_passwords: tuple[tuple[str, float], ...]

    @classmethod
    def of(cls, account: Account) -> "AccountInfo":
        return cls(
            address=account.address,
            name=account.name,
            quota=account.quota,
            created=account.created,
            active=account.active,
            aliases=tuple(account.aliases),
            app_passwords=tuple((a.label, a.created) for a in account.app_passwords),
        )


def _check_claims(txn: Any, addresses: list[str]) -> None:
    for address in addresses:
        if any(taken(txn, address) for taken in ADDRESS_CLAIMS):
            raise AddressTaken(f"address {address} is taken")


class AccountService:
    """Typed account operations over the store."""

    def __init__(self, store: Store, on_change: Callable[[str, bytes], None] | None = None, *,
                 actor: str | None = None) -> None:
        self._store = store
        # Who acts (e.g. "cli:root"): the public operations then write an audit entry in
        # their transaction. Provisioning audits the *_in operations itself.
        self._actor = actor
        # Told ("created" | "changed" | "deleted", account id) after commit, e.g. to
        # drop cached credentials or close a deleted user's sessions.
        self._on_change = on_change or (lambda event, account_id: None)

    def _require(self, txn, address: str) -> Account:  # type: ignore[no-untyped-def]
        account = directory.find_account(txn, normalize_address(address))
        if account is None:
            raise AccountError(f"no such user: {address}")
        return account

    def _audit(self, txn: WriteTxn, action: str, target: str, detail: str = "") -> None:
        if self._actor is not None:
            from . import audit

            audit.record(txn, self._actor, action, target, detail)

    def _notify(self, txn: WriteTxn, event: str, account_id: bytes) -> None:
        txn.after_commit(lambda: self._on_change(event, account_id))

    def add(self, address: str, password: str, *, name: str = "", quota: int | None = None) -> AccountInfo:
        """Create an account with everything a new teacher needs."""
        address = normalize_address(address)
        passwords.check_password_policy(password, address)
        if quota is not None and quota <= 0:
            raise AccountError("the quota must be positive")
        password_hash = passwords.hash_secret(password)
        with self._store.write() as txn:
            _check_claims(txn, [address])
            try:
                account = directory.create_account(
                    txn, address, name=name.strip(), quota=quota, password_hash=password_hash
                )
            except Conflict:
                raise AddressTaken(f"user exists already: {address}") from None
            for init in ACCOUNT_INITIALIZERS:
                init(txn, account)
            self._notify(txn, "created", account.id)
            self._audit(txn, "user.create", address, "password")
        return AccountInfo.of(account)

    def set_password(self, address: str, password: str) -> None:
        """Replace the password (app passwords stay)."""
        normalized = normalize_address(address)
        passwords.check_password_policy(password, normalized)
        password_hash = passwords.hash_secret(password)
        with self._store.write() as txn:
            account = self._require(txn, normalized)
            account.password_hash = password_hash
            directory.update_account(txn, account)
            self._notify(txn, "changed", account.id)
            self._audit(txn, "user.passwd", account.address)

    def delete(self, address: str) -> None:
        """Destroy the account's data key and every record of it."""
        with self._store.write() as txn:
            account = self._require(txn, address)
            self.delete_in(txn, account)
            self._audit(txn, "user.delete", account.address, "data key destroyed")

    # -- transaction-level operations (provisioning combines several in one txn) --

    def create_in(self, txn: WriteTxn, address: str, *, password_hash: str = "", name: str = "",
                  quota: int | None = None, aliases: list[str] | None = None, active: bool = True) -> Account:
        """Create an account inside ``txn`` (no password hash: no password login until one is set)."""
        address = normalize_address(address)
        if quota is not None and quota <= 0:
            raise AccountError("the quota must be positive")
        _check_claims(txn, [address])
        try:
            account = directory.create_account(txn, address, name=name.strip(), quota=quota,
                                               password_hash=password_hash)
        except Conflict:
            raise AddressTaken(f"user exists already: {address}") from None
        for init in ACCOUNT_INITIALIZERS:
            init(txn, account)
        if aliases or not active:
            account = self.modify_in(txn, account, aliases=aliases or [], active=active, notify=False)
        self._notify(txn, "created", account.id)
        return account

    def modify_in(self, txn: WriteTxn, account: Account, *, address: str | None = None, name: str | None = None,
                  quota: Any = _UNSET, active: bool | None = None, aliases: list[str] | None = None,
                  notify: bool = True) -> Account:
        """Change an account inside ``txn``; every check happens before anything is written.

        A new ``address`` becomes the primary address and the old one stays as
        an alias (mail sent to it still arrives); ``aliases`` replaces the list.
        """
        primary = account.address if address is None else normalize_address(address)
        wanted = list(account.aliases) if aliases is None else [normalize_address(a) for a in aliases]
        if primary != account.address and account.address not in wanted:
            wanted.append(account.address)
        wanted = [a for a in dict.fromkeys(wanted) if a != primary]
        if len(wanted) > MAX_ALIASES:
            raise AccountError(f"an account has at most {MAX_ALIASES} aliases")
        if quota is not _UNSET and quota is not None and quota <= 0:
            raise AccountError("the quota must be positive")
        _check_claims(txn, [a for a in (primary, *wanted) if a not in account.addresses])
        account.address, account.aliases = primary, wanted
        if name is not None:
            account.name = name.strip()
        if quota is not _UNSET:
            account.quota = quota
        if active is not None:
            account.active = active
        try:
            directory.update_account(txn, account)
        except Conflict as exc:
            raise AddressTaken(str(exc)) from None
        if notify:
            self._notify(txn, "changed", account.id)
        return account

    def delete_in(self, txn: WriteTxn, account: Account) -> None:
        """Crypto-shred ``account`` inside ``txn`` (finalizers run first)."""
        for fin in ACCOUNT_FINALIZERS:
            fin(txn, account)
        directory.delete_account(txn, account.id)
        self._notify(txn, "deleted", account.id)

    def _modify(self, current: str, /, **changes: Any) -> AccountInfo:
        with self._store.write() as txn:
            account = self._require(txn, current)
            before = account.address
            account = self.modify_in(txn, account, **changes)
            self._audit(txn, "user.change", before, ", ".join(f"{k}={v}" if k in ("address", "active", "quota")
                                                             else k for k, v in changes.items()))
        return AccountInfo.of(account)

    def rename(self, address: str, new_address: str) -> AccountInfo:
        """Give the account a new primary address; the old one stays as an alias."""
        return self._modify(address, address=new_address)

    def set_active(self, address: str, active: bool) -> AccountInfo:
        """Disable (every login refused, open sessions closed; data and delivery kept) or enable."""
        return self._modify(address, active=active)

    def set_quota(self, address: str, quota: int | None) -> AccountInfo:
        return self._modify(address, quota=quota)

    def set_aliases(self, address: str, aliases: list[str]) -> AccountInfo:
        return self._modify(address, aliases=aliases)

    def get(self, address: str) -> AccountInfo:
        with self._store.read() as txn:
            return AccountInfo.of(self._require(txn, address))

    def list(self) -> list[AccountInfo]:
        """Every account, by address."""
        with self._store.read() as txn:
            return sorted((AccountInfo.of(a) for a in directory.list_accounts(txn)), key=lambda a: a.address)

    def count(self) -> int:
        with self._store.read() as txn:
            return directory.count_accounts(txn)

    def add_app_password(self, address: str, label: str) -> str:
        """Generate a per-device password; returns it (shown once, stored hashed)."""
        label = label.strip()
        if not _LABEL.match(label):
            raise AccountError("an app password label has 1 to 64 letters, digits, spaces or . _ @ + -")
        with self._store.read() as txn:
            taken = {a.label for a in self._require(txn, address).app_passwords}
        if label in taken:
            raise AccountError(f"app password {label!r} exists already")
        while True:
            secret = passwords.generate_app_password()
            prefix = passwords.app_password_id(secret)
            with self._store.read() as txn:
                ids = {passwords.app_password_id_of(a) for a in self._require(txn, address).app_passwords}
            if prefix not in ids:
                break
        entry = AppPassword(label=label, hash=f"{prefix}${passwords.hash_secret(secret)}", created=time.time())
        with self._store.write() as txn:
            account = self._require(txn, address)
            if any(a.label == label for a in account.app_passwords):
                raise AccountError(f"app password {label!r} exists already")
            if len(account.app_passwords) >= MAX_APP_PASSWORDS:
                raise AccountError(f"an account has at most {MAX_APP_PASSWORDS} app passwords")
            account.app_passwords.append(entry)
            directory.update_account(txn, account)
            self._notify(txn, "changed", account.id)
            self._audit(txn, "app-password.add", account.address, label)
        return secret

    def list_app_passwords(self, address: str) -> list[tuple[str, float]]:
        return list(self.get(address).app_passwords)

    def delete_app_password(self, address: str, label: str) -> None:
        with self._store.write() as txn:
            account = self._require(txn, address)
            kept = [a for a in account.app_passwords if a.label != label]
            if len(kept) == len(account.app_passwords):
                raise AccountError(f"no app password {label!r} for {account.address}")
            account.app_passwords = kept
            directory.update_account(txn, account)
            self._notify(txn, "changed", account.id)
            self._audit(txn, "app-password.del", account.address, label)

    def find_id(self, address: str) -> bytes | None:
        """The account id for an address or alias (None if unknown or malformed)."""
        try:
            normalized = normalize_address(address)
        except AccountError:
            return None
        with self._store.read() as txn:
            return directory.find_account_id(txn, normalized)


__all__ = ["ACCOUNT_FINALIZERS", "ADDRESS_CLAIMS", "ACCOUNT_INITIALIZERS", "AccountError", "AddressTaken", "AccountInfo", "AccountService", "NotFound", "normalize_address"]
