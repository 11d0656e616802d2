"""CalDAV/CardDAV collections and items on the sealed store (record spaces 0x20-0x2f).

Every record lives under one account and is sealed with its data key; keys
hold only keyed hashes of collection paths, hrefs and UIDs, never the names.

==============================  =================================  ==============================
space                           key (after the account id)         sealed value
==============================  =================================  ==============================
``SPACE_DAV_COLLECTION`` 0x20   H(collection path)                 :class:`CollectionRecord` JSON
``SPACE_DAV_ITEM`` 0x21         H(path) + H(href)                  :class:`ItemRecord` JSON
``SPACE_DAV_UID`` 0x22          H(path) + H(uid)                   H(href) (the UID index)
``SPACE_DAV_LOG`` 0x23          H(path) + seq (8 bytes, big end)   href (the change log)
``SPACE_DAV_TOMB`` 0x24         H(path) + H(href)                  seq of the deletion
==============================  =================================  ==============================

The change log (RFC 6578): each change of an item takes the next value of the
account's change counter (``bump_change``) and writes one log entry under it;
the item's previous entry is removed, so the log holds one entry per live item
and one per deleted href (a tombstone). "What changed since token N" is then a
range scan from N+1, and the collection's CTag is its last sequence number,
read in O(1). Tombstones beyond :data:`MAX_TOMBSTONES` are trimmed oldest
first; a token older than the trim point is refused and the client resyncs.

A collection created again under the same path gets a new ``incarnation``,
so tokens of the old one are refused too.

The operations take a :class:`~schoolsuite.storage.store.UserView` /
``UserWrite``; :class:`DavStore` wraps them into one transaction each (writes
through an injected runner: the server's store writer thread).
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from .accounts import find_account_id, list_accounts
from .spaces import SPACE_DAV_COLLECTION, SPACE_DAV_ITEM, SPACE_DAV_LOG, SPACE_DAV_TOMB, SPACE_DAV_UID
from .store import Store, UserView, UserWrite, WriteTxn

T = TypeVar("T")

#: Tombstones (deleted hrefs) kept per collection before the oldest are trimmed.
MAX_TOMBSTONES = 5000
_SEQ = struct.Struct(">Q")
_HASH = 16


class DavStoreError(Exception):
    """A refused DAV storage operation (message safe for a log, not for a client)."""


class CollectionMissing(DavStoreError):
    """The collection does not exist."""


class CollectionFull(DavStoreError):
    """The collection holds its maximum number of items."""


@dataclass
class CollectionRecord:
    """One collection of one account: its properties and change state."""

    path: str  # inside the home: "" is the principal, "calendar", "contacts"
    props: dict[str, str] = field(default_factory=dict)
    incarnation: str = field(default_factory=lambda: os.urandom(8).hex())
    last_seq: int = 0  # account change counter at the collection's last change
    min_seq: int = 0  # tokens below this lost their changes to trimming
    count: int = 0
    tombstones: int = 0
    modified: float = field(default_factory=time.time)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "CollectionRecord":
        return cls(**json.loads(raw))


@dataclass
class ItemRecord:
    """One calendar object or vCard with what reports need without parsing it."""

    href: str
    text: str
    etag: str
    uid: str
    name: str  # VCALENDAR or VCARD
    component: str  # VEVENT, VTODO, VJOURNAL, VCARD
    start: int
    end: int
    modified: float = field(default_factory=time.time)
    seq: int = 0

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "ItemRecord":
        return cls(**json.loads(raw))


# -- keys -------------------------------------------------------------------------


def _ckey(view: UserView, path: str) -> bytes:
    return view.name_hash("dav-collection", path)


def _hkey(view: UserView, href: str) -> bytes:
    return view.name_hash("dav-href", href)


def _ukey(view: UserView, uid: str) -> bytes:
    return view.name_hash("dav-uid", uid)


# -- reading ------------------------------------------------------------------------


def get_collection(view: UserView, path: str) -> CollectionRecord | None:
    raw = view.get(SPACE_DAV_COLLECTION, _ckey(view, path))
    return None if raw is None else CollectionRecord.from_bytes(raw)


def list_collections(view: UserView) -> list[CollectionRecord]:
    """Every collection record of the account (a handful; each is decrypted)."""
    return [CollectionRecord.from_bytes(raw) for _, raw in view.scan(SPACE_DAV_COLLECTION)]


def child_collections(view: UserView, parent: str) -> list[CollectionRecord]:
    """The collections directly below ``parent`` ("" = the home), by path."""
    prefix = parent + "/" if parent else ""
    found = [c for c in list_collections(view)
             if c.path and not is_internal(c.path) and c.path.startswith(prefix) and "/" not in c.path[len(prefix):]]
    return sorted(found, key=lambda c: c.path)


def get_item(view: UserView, path: str, href: str) -> ItemRecord | None:
    raw = view.get(SPACE_DAV_ITEM, _ckey(view, path) + _hkey(view, href))
    return None if raw is None else ItemRecord.from_bytes(raw)


def get_items(view: UserView, path: str, hrefs: Iterable[str]) -> list[tuple[str, ItemRecord | None]]:
    ckey = _ckey(view, path)
    out = []
    for href in dict.fromkeys(hrefs):
        raw = view.get(SPACE_DAV_ITEM, ckey + _hkey(view, href))
        out.append((href, None if raw is None else ItemRecord.from_bytes(raw)))
    return out


def all_items(view: UserView, path: str) -> Iterator[ItemRecord]:
    """Every item of the collection (in key order, i.e. no meaningful order)."""
    for _, raw in view.scan(SPACE_DAV_ITEM, _ckey(view, path)):
        yield ItemRecord.from_bytes(raw)


def has_uid(view: UserView, path: str, uid: str) -> bool:
    """Whether an item with ``uid`` exists in the collection (one index lookup)."""
    return view.exists(SPACE_DAV_UID, _ckey(view, path) + _ukey(view, uid))


def changes_since(view: UserView, coll: CollectionRecord, seq: int) -> list[str]:
    """Hrefs changed or deleted after ``seq`` (RFC 6578 §3.2: one range scan)."""
    ckey = _ckey(view, coll.path)
    hrefs = [raw.decode("utf-8") for _, raw in view.scan(SPACE_DAV_LOG, ckey, start=ckey + _SEQ.pack(seq + 1))]
    return list(dict.fromkeys(hrefs))


# -- writing --------------------------------------------------------------------------


def _save_collection(w: UserWrite, coll: CollectionRecord) -> None:
    w.put(SPACE_DAV_COLLECTION, _ckey(w, coll.path), coll.to_bytes())


def _log(w: UserWrite, ckey: bytes, href: str, seq: int) -> None:
    w.put(SPACE_DAV_LOG, ckey + _SEQ.pack(seq), href.encode("utf-8"))


def _wipe_contents(w: UserWrite, ckey: bytes) -> None:
    for space in (SPACE_DAV_ITEM, SPACE_DAV_UID, SPACE_DAV_LOG, SPACE_DAV_TOMB):
        w.delete_prefix(space, ckey)


def create_collection(w: UserWrite, path: str, props: dict[str, str],
                      items: Iterable[ItemRecord] = (), *, replace: bool = True) -> CollectionRecord:
    """Create the collection at ``path`` (replacing one there, with a new incarnation)."""
    ckey = _ckey(w, path)
    old = get_collection(w, path)
    if old is not None:
        if not replace:
            return old
        _wipe_contents(w, ckey)
    coll = CollectionRecord(path=path, props=dict(props))
    coll.last_seq = w.bump_change()
    coll.min_seq = coll.last_seq
    for item in items:
        _put(w, ckey, coll, item)
    _save_collection(w, coll)
    return coll


def set_props(w: UserWrite, path: str, props: dict[str, str]) -> CollectionRecord:
    """Replace the collection's properties (creates a plain collection record if needed)."""
    coll = get_collection(w, path)
    if coll is None:
        coll = CollectionRecord(path=path)
        coll.min_seq = w.change_counter()
    coll.props = dict(props)
    coll.last_seq = w.bump_change()
    coll.modified = time.time()
    _save_collection(w, coll)
    return coll


def delete_collection(w: UserWrite, path: str) -> bool:
    """Delete the collection, its items and every collection below it."""
    found = False
    for coll in list_collections(w):
        if coll.path == path or (coll.path.startswith(path + "/") if path else True):
            ckey = _ckey(w, coll.path)
            _wipe_contents(w, ckey)
            w.delete(SPACE_DAV_COLLECTION, ckey)
            found = True
    if found:
        w.bump_change()
    return found


def _put(w: UserWrite, ckey: bytes, coll: CollectionRecord, item: ItemRecord) -> ItemRecord | None:
    """Store ``item`` in the collection; returns the item it replaced."""
    hkey = _hkey(w, item.href)
    raw = w.get(SPACE_DAV_ITEM, ckey + hkey)
    old = None if raw is None else ItemRecord.from_bytes(raw)
    seq = w.bump_change()
    if old is not None:
        w.delete(SPACE_DAV_LOG, ckey + _SEQ.pack(old.seq))
        if old.uid != item.uid and w.get(SPACE_DAV_UID, ckey + _ukey(w, old.uid)) == hkey:
            w.delete(SPACE_DAV_UID, ckey + _ukey(w, old.uid))
    else:
        coll.count += 1
        tomb = w.get(SPACE_DAV_TOMB, ckey + hkey)
        if tomb is not None:
            w.delete(SPACE_DAV_LOG, ckey + tomb)
            w.delete(SPACE_DAV_TOMB, ckey + hkey)
            coll.tombstones -= 1
    item.seq = seq
    item.modified = time.time()
    w.put(SPACE_DAV_ITEM, ckey + hkey, item.to_bytes())
    w.put(SPACE_DAV_UID, ckey + _ukey(w, item.uid), hkey)
    _log(w, ckey, item.href, seq)
    coll.last_seq = seq
    coll.modified = item.modified
    return old


def put_item(w: UserWrite, path: str, item: ItemRecord, *, max_items: int = 0) -> tuple[ItemRecord, ItemRecord | None]:
    """Create or replace one item; returns (stored item, replaced item or None)."""
    coll = get_collection(w, path)
    if coll is None:
        raise CollectionMissing(path)
    ckey = _ckey(w, path)
    if max_items and coll.count >= max_items and not w.exists(SPACE_DAV_ITEM, ckey + _hkey(w, item.href)):
        raise CollectionFull(path)
    old = _put(w, ckey, coll, item)
    _save_collection(w, coll)
    return item, old


def _remove(w: UserWrite, ckey: bytes, coll: CollectionRecord, href: str) -> ItemRecord | None:
    hkey = _hkey(w, href)
    raw = w.get(SPACE_DAV_ITEM, ckey + hkey)
    if raw is None:
        return None
    old = ItemRecord.from_bytes(raw)
    seq = w.bump_change()
    w.delete(SPACE_DAV_ITEM, ckey + hkey)
    if w.get(SPACE_DAV_UID, ckey + _ukey(w, old.uid)) == hkey:  # the index names this href
        w.delete(SPACE_DAV_UID, ckey + _ukey(w, old.uid))
    w.delete(SPACE_DAV_LOG, ckey + _SEQ.pack(old.seq))
    _log(w, ckey, href, seq)
    w.put(SPACE_DAV_TOMB, ckey + hkey, _SEQ.pack(seq))
    coll.count -= 1
    coll.tombstones += 1
    coll.last_seq = seq
    coll.modified = time.time()
    if coll.tombstones > MAX_TOMBSTONES:
        _trim_tombstones(w, ckey, coll)
    return old


def _trim_tombstones(w: UserWrite, ckey: bytes, coll: CollectionRecord) -> None:
    """Drop the oldest half of the tombstones; tokens before them become invalid."""
    tombs = {seq for _, seq in w.scan(SPACE_DAV_TOMB, ckey)}
    drop = sorted(tombs)[: len(tombs) // 2]
    dropped = set(drop)
    for hkey_full in list(w.keys(SPACE_DAV_TOMB, ckey)):
        if w.get(SPACE_DAV_TOMB, hkey_full) in dropped:
            w.delete(SPACE_DAV_TOMB, hkey_full)
    for seq in drop:
        w.delete(SPACE_DAV_LOG, ckey + seq)
    coll.tombstones -= len(drop)
    coll.min_seq = max(coll.min_seq, _SEQ.unpack(drop[-1])[0]) if drop else coll.min_seq


def delete_item(w: UserWrite, path: str, href: str) -> ItemRecord | None:
    """Delete one item (leaving a tombstone for sync); returns it, or None if absent."""
    coll = get_collection(w, path)
    if coll is None:
        return None
    old = _remove(w, _ckey(w, path), coll, href)
    if old is not None:
        _save_collection(w, coll)
    return old


def move_item(w: UserWrite, path: str, href: str, to_path: str, to_href: str) -> ItemRecord:
    """Move one item to another collection or href (RFC 4918 §9.9), in one transaction."""
    src, dst = get_collection(w, path), get_collection(w, to_path)
    if src is None or dst is None:
        raise CollectionMissing(path if src is None else to_path)
    old = _remove(w, _ckey(w, path), src, href)
    if old is None:
        raise DavStoreError("no such item")
    _save_collection(w, src)
    if to_path == path:
        dst = src
    old.href = to_href
    _put(w, _ckey(w, to_path), dst, old)
    _save_collection(w, dst)
    return old


# -- one transaction per operation --------------------------------------------------


class DavStore:
    """DAV operations on the store, each one transaction.

    ``run_write(fn)`` runs ``fn()`` (which opens its own write transaction) and
    returns its result: the server passes a runner that hops onto the store
    writer thread; tests and the CLI run it inline.
    """

    def __init__(self, store: Store, run_write: Callable[[Callable[[], Any]], Any] | None = None) -> None:
        self.store = store
        self._run_write = run_write or (lambda fn: fn())

    def account_id(self, address: str) -> bytes | None:
        with self.store.read() as txn:
            return find_account_id(txn, address)

    def read(self, account_id: bytes, fn: Callable[..., T], *args: Any) -> T:
        """``fn(view, *args)`` in one read transaction of the account."""
        with self.store.read() as txn:
            return fn(txn.user(account_id), *args)

    def write(self, account_id: bytes, fn: Callable[..., T], *args: Any) -> T:
        """``fn(user_write, *args)`` in one write transaction, on the writer."""

        def run() -> T:
            with self.store.write() as txn:
                return fn(txn.user(account_id), *args)

        return self._run_write(run)

    def directory_entries(self) -> list[tuple[bytes, str, str, float]]:
        """(account id, address, display name, created) of every active account."""
        with self.store.read() as txn:
            return [(a.id, a.address, a.name, a.created) for a in list_accounts(txn) if a.active]


DEFAULT_CALENDAR = "calendar"
DEFAULT_ADDRESSBOOK = "contacts"
#: Marks an account whose default collections were made (so deleting them sticks).
_DEFAULTS_MARK = "\x00defaults"


def make_default_collections(w: UserWrite) -> bool:
    """A calendar for events and tasks and an address book, once per account."""
    if get_collection(w, _DEFAULTS_MARK) is not None:
        return False
    create_collection(w, DEFAULT_CALENDAR, {
        "tag": "VCALENDAR", "D:displayname": "Calendar",
        "C:supported-calendar-component-set": "VEVENT,VTODO"}, replace=False)
    create_collection(w, DEFAULT_ADDRESSBOOK, {"tag": "VADDRESSBOOK", "D:displayname": "Contacts"}, replace=False)
    _save_collection(w, CollectionRecord(path=_DEFAULTS_MARK))
    return True


def is_internal(path: str) -> bool:
    """Records that are not collections a client may see."""
    return path.startswith("\x00")


def init_account(txn: WriteTxn, account: Any) -> None:
    """ACCOUNT_INITIALIZERS hook: default collections inside the creating transaction."""
    make_default_collections(txn.user(account.id))
