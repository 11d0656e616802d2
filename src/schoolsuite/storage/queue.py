"""The outbound mail queue and mail-transport records, sealed.

A queued message belongs to the account that submitted it: its entry
(envelope, per-recipient state, schedule) is a record in that account's space
:data:`SPACE_QUEUE` and its bytes are content of that account, both sealed
with the account's key. Deleting the account crypto-shreds its queue too.

The worker must find due entries without opening every account, so each
entry also has a directory index record ``Q`` + queue id (sealed with the
directory key) holding the owner's account id and the next attempt time.

DKIM signing keys are per domain, not per user: directory records ``K`` +
keyed hash of the domain, sealed with the directory key.

Directory prefix letters used here: ``Q`` (queue index), ``K`` (DKIM keys).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from .content import put_content, read_all, unref_content
from .errors import CorruptRecord, NotFound
from .spaces import SPACE_QUEUE
from .store import ReadTxn, WriteTxn

_INDEX = b"Q"
_DKIM = b"K"
_INDEX_VALUE = struct.Struct(">16sdd")  # owner account id, next attempt, created (unix time)
QUEUE_ID_BYTES = 8


def new_queue_id() -> str:
    return os.urandom(QUEUE_ID_BYTES).hex()


@dataclass
class QueuedRecipient:
    """One envelope recipient and how its delivery stands."""

    address: str
    status: str = "queued"  # queued, sent, failed
    notify: list[str] = field(default_factory=list)  # RFC 3461 NOTIFY (empty: not given)
    orcpt: str | None = None
    attempts: int = 0
    last_reply: str = ""  # last answer from a remote server (or the local error)
    remote: str = ""  # the host that answered
    enhanced: str = ""  # RFC 3463 status for the DSN


@dataclass
class QueueEntry:
    """A message waiting for delivery to remote recipients."""

    id: str
    account_id: bytes
    sender: str
    recipients: list[QueuedRecipient]
    content_id: bytes = b""
    size: int = 0
    created: float = 0.0
    next_attempt: float = 0.0
    attempts: int = 0
    warned: bool = False
    envid: str | None = None
    ret: str | None = None
    smtputf8: bool = False
    body: str | None = None

    @property
    def pending(self) -> list[QueuedRecipient]:
        return [r for r in self.recipients if r.status == "queued"]

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["account_id"] = self.account_id.hex()
        data["content_id"] = self.content_id.hex()
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "QueueEntry":
        data = json.loads(raw)
        data["account_id"] = bytes.fromhex(data["account_id"])
        data["content_id"] = bytes.fromhex(data["content_id"])
        data["recipients"] = [QueuedRecipient(**r) for r in data["recipients"]]
        return cls(**data)


@dataclass(frozen=True)
class IndexEntry:
    queue_id: str
    account_id: bytes
    next_attempt: float
    created: float


def add_entry(txn: WriteTxn, entry: QueueEntry, message: bytes) -> QueueEntry:
    """Queue ``message`` under its owner's key (content + entry + index) in ``txn``."""
    user = txn.user(entry.account_id)
    info = put_content(user, message)
    entry.content_id, entry.size = info.content_id, info.size
    save_entry(txn, entry)
    return entry


def save_entry(txn: WriteTxn, entry: QueueEntry) -> None:
    """Store a changed entry and its index record."""
    txn.user(entry.account_id).put(SPACE_QUEUE, bytes.fromhex(entry.id), entry.to_bytes())
    txn.directory_put(_INDEX + bytes.fromhex(entry.id), _INDEX_VALUE.pack(entry.account_id, entry.next_attempt,
                                                                            entry.created))


def get_entry(txn: ReadTxn, account_id: bytes, queue_id: str) -> QueueEntry | None:
    try:
        raw = txn.user(account_id).get(SPACE_QUEUE, bytes.fromhex(queue_id))
    except NotFound:
        return None
    return None if raw is None else QueueEntry.from_bytes(raw)


def read_message(txn: ReadTxn, entry: QueueEntry) -> bytes:
    return read_all(txn.user(entry.account_id), entry.content_id)


def delete_entry(txn: WriteTxn, account_id: bytes, queue_id: str) -> bool:
    """Remove an entry, its content reference and its index record; True if it existed."""
    key = bytes.fromhex(queue_id)
    existed = txn.directory_delete(_INDEX + key)
    try:
        user = txn.user(account_id)
    except NotFound:
        return existed  # the owner is gone, and the entry with its key
    raw = user.get(SPACE_QUEUE, key)
    if raw is None:
        return existed
    entry = QueueEntry.from_bytes(raw)
    try:
        unref_content(user, entry.content_id)
    except NotFound:
        pass
    user.delete(SPACE_QUEUE, key)
    return True


def scan_index(txn: ReadTxn) -> Iterator[IndexEntry]:
    """Every queued message's id, owner and next attempt time."""
    for key, _ in txn.directory_scan(_INDEX):
        raw = txn.directory_get(key)
        if raw is None:
            continue
        account_id, when, created = _INDEX_VALUE.unpack(raw)
        yield IndexEntry(key[len(_INDEX) :].hex(), account_id, when, created)


def find_index(txn: ReadTxn, queue_id: str) -> IndexEntry | None:
    try:
        key = _INDEX + bytes.fromhex(queue_id)
    except ValueError:
        return None
    if len(key) != 1 + QUEUE_ID_BYTES:
        return None
    raw = txn.directory_get(key)
    if raw is None:
        return None
    account_id, when, created = _INDEX_VALUE.unpack(raw)
    return IndexEntry(queue_id, account_id, when, created)


def drop_orphan_index(txn: WriteTxn, queue_id: str) -> None:
    """Forget an index record whose entry no longer exists (owner deleted)."""
    txn.directory_delete(_INDEX + bytes.fromhex(queue_id))


# -- DKIM keys ----------------------------------------------------------------


@dataclass
class DkimKey:
    """A domain's DKIM signing key (private key PEM; never printed)."""

    domain: str
    selector: str
    private_pem: str = field(repr=False)
    created: float = 0.0


def _dkim_key(txn: ReadTxn, domain: str) -> bytes:
    return _DKIM + txn.address_hash("dkim-domain:" + domain.lower())


def put_dkim_key(txn: WriteTxn, key: DkimKey) -> None:
    txn.directory_put(_dkim_key(txn, key.domain), json.dumps(asdict(key)).encode())


def get_dkim_key(txn: ReadTxn, domain: str) -> DkimKey | None:
    raw = txn.directory_get(_dkim_key(txn, domain))
    return None if raw is None else DkimKey(**json.loads(raw))


def list_dkim_keys(txn: ReadTxn) -> list[DkimKey]:
    keys = []
    for key, _ in txn.directory_scan(_DKIM):
        raw = txn.directory_get(key)
        if raw is not None:
            keys.append(DkimKey(**json.loads(raw)))
    return keys


__all__ = [
    "CorruptRecord", "DkimKey", "IndexEntry", "QueueEntry", "QueuedRecipient", "add_entry", "delete_entry",
    "find_index", "get_dkim_key", "get_entry", "list_dkim_keys", "new_queue_id", "put_dkim_key",
    "read_message", "save_entry", "scan_index",
]
