"""The file space of an account: a tree of entries, dead properties and locks.

Record spaces (spaces.py, 0x30-0x3f):

=====================  ===========================================  ============================
space                  key                                          value (sealed)
=====================  ===========================================  ============================
``SPACE_FILE_ENTRY``   parent id (16) + keyed hash of the NFC name  the entry (binary record:
                                                                    id, kind, content, size, times,
                                                                    name, type; older ones JSON)
``SPACE_FILE_NODE``    entry id                                     parent id + name hash (where
                                                                    the entry is linked)
``SPACE_FILE_PROP``    entry id + keyed hash of the property name   property name and XML value
``SPACE_FILE_LOCK``    keyed hash of the lock token                 the lock (JSON)
``SPACE_FILE_META``    ``root`` / ``usage``                         the root entry / bytes used
=====================  ===========================================  ============================

Names never appear in keys (only their keyed hash), so listing a directory is
one prefix scan of its id. A collection's members hang off its id, so moving
a collection re-links one entry and its subtree follows. File content lives
in :mod:`content` (sealed chunks, reference-counted): a COPY adds a reference
instead of rewriting the chunks.
"""

from __future__ import annotations

import json
import os
import struct
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from .content import ContentInfo, content_info, ref_content, unref_content
from .errors import Conflict, NotFound
from .spaces import SPACE_FILE_ENTRY, SPACE_FILE_LOCK, SPACE_FILE_META, SPACE_FILE_NODE, SPACE_FILE_PROP
from .store import UserView, UserWrite

ID_SIZE = 16
ROOT_ID = bytes(ID_SIZE)
_U64 = struct.Struct(">Q")
_ROOT_KEY = b"root"
#: Entry records: version byte, then id, parent, flags, size, content id, created, modified, name length.
_ENTRY_V1 = b"\x01"
_ENTRY = struct.Struct(">16s16sBQ16sddH")
_DIR, _HAS_CONTENT = 1, 2
_NO_CONTENT = bytes(16)
_USAGE_KEY = b"usage"


def normalize_name(name: str) -> str:
    """The one spelling of a name: NFC (macOS sends NFD; the same name is the same file)."""
    return unicodedata.normalize("NFC", name)


@dataclass(frozen=True)
class Entry:
    """A file or a collection."""

    id: bytes
    parent: bytes
    name: str
    is_dir: bool
    size: int = 0
    content_id: bytes | None = None
    created: float = 0.0
    modified: float = 0.0
    content_type: str = ""

    @property
    def etag(self) -> str | None:
        """A strong validator: changes with every new content (RFC 9110 §8.8.3)."""
        if self.is_dir:
            return None
        return (self.content_id or b"empty").hex()[:24] + f"-{self.size:x}"

    def to_bytes(self) -> bytes:
        """Binary record (version byte 1): fixed fields, then the UTF-8 name and content type."""
        name = self.name.encode()
        flags = (_DIR if self.is_dir else 0) | (_HAS_CONTENT if self.content_id else 0)
        return _ENTRY_V1 + _ENTRY.pack(self.id, self.parent, flags, self.size, self.content_id or _NO_CONTENT,
                                       self.created, self.modified, len(name)) + name + self.content_type.encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Entry":
        if raw[:1] == _ENTRY_V1:
            ident, parent, flags, size, content, created, modified, length = _ENTRY.unpack_from(raw, 1)
            at = 1 + _ENTRY.size
            return cls(ident, parent, raw[at:at + length].decode(), bool(flags & _DIR), size,
                       content if flags & _HAS_CONTENT else None, created, modified,
                       raw[at + length:].decode())
        d = json.loads(raw)  # entries written before the binary record
        return cls(bytes.fromhex(d["i"]), bytes.fromhex(d["p"]), d["n"], d["d"], d["s"],
                   bytes.fromhex(d["c"]) if d["c"] else None, d["ct"], d["m"], d["t"])


def _link_key(user: UserView, parent: bytes, name: str) -> bytes:
    return parent + user.name_hash("file", normalize_name(name))


# -- the space ----------------------------------------------------------------

def init_space(user: UserWrite) -> Entry:
    """Create the empty file space of a new account (idempotent)."""
    existing = user.get(SPACE_FILE_META, _ROOT_KEY)
    if existing is not None:
        return Entry.from_bytes(existing)
    now = time.time()
    root = Entry(ROOT_ID, ROOT_ID, "", True, created=now, modified=now)
    user.put(SPACE_FILE_META, _ROOT_KEY, root.to_bytes())
    user.put(SPACE_FILE_META, _USAGE_KEY, _U64.pack(0))
    return root


def root(user: UserView) -> Entry | None:
    raw = user.get(SPACE_FILE_META, _ROOT_KEY)
    return None if raw is None else Entry.from_bytes(raw)


def usage(user: UserView) -> int:
    """Bytes of file content in this account (every file counted, copies too)."""
    raw = user.get(SPACE_FILE_META, _USAGE_KEY)
    return 0 if raw is None else _U64.unpack(raw)[0]


def total_usage(txn: Any) -> int:
    """Bytes of file content over all accounts (for the stored-bytes gauge)."""
    from .accounts import list_accounts

    total = 0
    for account in list_accounts(txn):
        try:
            total += usage(txn.user(account.id))
        except NotFound:
            continue
    return total


def _add_usage(user: UserWrite, delta: int) -> None:
    user.put(SPACE_FILE_META, _USAGE_KEY, _U64.pack(max(0, usage(user) + delta)))


# -- reading --------------------------------------------------------------------

def child(user: UserView, parent: Entry, name: str) -> Entry | None:
    """The member ``name`` of the collection ``parent``, or None."""
    if not parent.is_dir:
        return None
    raw = user.get(SPACE_FILE_ENTRY, _link_key(user, parent.id, name))
    return None if raw is None else Entry.from_bytes(raw)


def lookup(user: UserView, names: list[str]) -> Entry | None:
    """The entry at the path ``names`` below the root (``[]`` is the root)."""
    entry = root(user)
    for name in names:
        if entry is None:
            return None
        entry = child(user, entry, name)
    return entry


def children(user: UserView, parent: Entry) -> Iterator[Entry]:
    """The members of a collection (in hash order, i.e. no order)."""
    for _, raw in user.scan(SPACE_FILE_ENTRY, parent.id):
        yield Entry.from_bytes(raw)


def has_children(user: UserView, parent: Entry) -> bool:
    return next(iter(user.keys(SPACE_FILE_ENTRY, parent.id)), None) is not None


def descendants(user: UserView, parent: Entry) -> Iterator[tuple[list[str], Entry]]:
    """(relative path, entry) of everything below ``parent``, parents before children."""
    stack: list[tuple[list[str], Entry]] = [([], parent)]
    while stack:
        path, entry = stack.pop()
        for member in children(user, entry):
            yield path + [member.name], member
            if member.is_dir:
                stack.append((path + [member.name], member))


# -- writing --------------------------------------------------------------------

def _link(user: UserWrite, entry: Entry) -> None:
    key = _link_key(user, entry.parent, entry.name)
    user.put(SPACE_FILE_ENTRY, key, entry.to_bytes())
    user.put(SPACE_FILE_NODE, entry.id, key)


def _unlink(user: UserWrite, entry: Entry) -> None:
    user.delete(SPACE_FILE_ENTRY, _link_key(user, entry.parent, entry.name))
    user.delete(SPACE_FILE_NODE, entry.id)


def _new_id() -> bytes:
    return os.urandom(ID_SIZE)


def _touch_parent(user: UserWrite, parent_id: bytes, now: float) -> None:
    if parent_id == ROOT_ID:
        raw = user.get(SPACE_FILE_META, _ROOT_KEY)
        if raw is not None:
            user.put(SPACE_FILE_META, _ROOT_KEY, replace(Entry.from_bytes(raw), modified=now).to_bytes())
        return
    key = user.get(SPACE_FILE_NODE, parent_id)
    raw = None if key is None else user.get(SPACE_FILE_ENTRY, key)
    if raw is not None:
        user.put(SPACE_FILE_ENTRY, key, replace(Entry.from_bytes(raw), modified=now).to_bytes())


def make_collection(user: UserWrite, parent: Entry, name: str) -> Entry:
    """Create an empty collection ``name`` in ``parent``; Conflict if the name is taken."""
    name = normalize_name(name)
    if child(user, parent, name) is not None:
        raise Conflict("name taken")
    now = time.time()
    entry = Entry(_new_id(), parent.id, name, True, created=now, modified=now)
    _link(user, entry)
    _touch_parent(user, parent.id, now)
    user.bump_change()
    return entry


def put_file(user: UserWrite, parent: Entry, name: str, content: ContentInfo | None,
             content_type: str = "", modified: float | None = None) -> tuple[Entry, bool]:
    """Create or replace the file ``name`` with ``content`` (whose one reference it takes).

    Returns (entry, created). The old content loses its reference.
    """
    entry, old = replace_file(user, parent, name, content, content_type, modified)
    return entry, old is None


def replace_file(user: UserWrite, parent: Entry, name: str, content: ContentInfo | None,
                 content_type: str = "", modified: float | None = None) -> tuple[Entry, Entry | None]:
    """:func:`put_file`, returning (entry, the entry it replaced or None)."""
    name = normalize_name(name)
    now = time.time()
    key = _link_key(user, parent.id, name)
    raw = user.get(SPACE_FILE_ENTRY, key) if parent.is_dir else None
    old = None if raw is None else Entry.from_bytes(raw)
    if old is not None and old.is_dir:
        raise Conflict("a collection has that name")
    size = content.size if content is not None else 0
    entry = Entry(old.id if old else _new_id(), parent.id, name, False, size,
                  content.content_id if content is not None else None,
                  old.created if old else now, modified if modified is not None else now,
                  content_type or (old.content_type if old else ""))
    if old is not None and old.content_id is not None:
        unref_content(user, old.content_id)
    _add_usage(user, size - (old.size if old else 0))
    user.put(SPACE_FILE_ENTRY, key, entry.to_bytes())
    if old is None:
        user.put(SPACE_FILE_NODE, entry.id, key)  # a replaced file keeps its id and place
    _touch_parent(user, parent.id, now)
    user.bump_change()
    return entry, old


def exists(user: UserView, entry_id: bytes) -> bool:
    """Whether the entry ``entry_id`` is still linked somewhere in the tree (nothing is decrypted)."""
    return entry_id == ROOT_ID or user.exists(SPACE_FILE_NODE, entry_id)


def set_modified(user: UserWrite, entry: Entry, modified: float) -> Entry:
    updated = replace(entry, modified=modified)
    _link(user, updated)
    return updated


def delete_tree(user: UserWrite, entry: Entry) -> int:
    """Delete an entry and everything below it (content loses references). Returns entries removed."""
    if entry.id == ROOT_ID:
        raise Conflict("the root cannot be deleted")
    doomed = [entry] + [e for _, e in descendants(user, entry)] if entry.is_dir else [entry]
    freed = 0
    for item in doomed:
        if item.content_id is not None:
            unref_content(user, item.content_id)
        freed += item.size
        user.delete_prefix(SPACE_FILE_PROP, item.id)
        _unlink(user, item)
    _add_usage(user, -freed)
    _touch_parent(user, entry.parent, time.time())
    user.bump_change()
    return len(doomed)


def move(user: UserWrite, entry: Entry, new_parent: Entry, new_name: str) -> Entry:
    """Re-link ``entry`` as ``new_name`` in ``new_parent`` (its subtree and content follow unchanged)."""
    new_name = normalize_name(new_name)
    if child(user, new_parent, new_name) is not None:
        raise Conflict("destination exists")
    _unlink(user, entry)
    moved = replace(entry, parent=new_parent.id, name=new_name)
    _link(user, moved)
    now = time.time()
    _touch_parent(user, entry.parent, now)
    _touch_parent(user, new_parent.id, now)
    user.bump_change()
    return moved


def copy_entry(user: UserWrite, entry: Entry, new_parent: Entry, new_name: str) -> Entry:
    """Copy one entry (not its members) as ``new_name``: content shared by reference, dead properties copied.

    An existing destination of the same kind is overwritten in place (its
    members, for a collection, are left to the caller: RFC 4918 §9.8.4).
    """
    new_name = normalize_name(new_name)
    existing = child(user, new_parent, new_name)
    if existing is not None and existing.is_dir != entry.is_dir:
        raise Conflict("destination is of another kind")
    now = time.time()
    if entry.content_id is not None:
        ref_content(user, entry.content_id)
    if existing is not None:
        if existing.content_id is not None:
            unref_content(user, existing.content_id)
        user.delete_prefix(SPACE_FILE_PROP, existing.id)
        copy = replace(entry, id=existing.id, parent=new_parent.id, name=new_name, created=existing.created,
                       modified=now if entry.is_dir else entry.modified)
        _add_usage(user, entry.size - existing.size)
    else:
        copy = replace(entry, id=_new_id(), parent=new_parent.id, name=new_name, created=now)
        _add_usage(user, entry.size)
    _link(user, copy)
    for key, value in list(user.scan(SPACE_FILE_PROP, entry.id)):
        user.put(SPACE_FILE_PROP, copy.id + key[ID_SIZE:], value)
    _touch_parent(user, new_parent.id, now)
    user.bump_change()
    return copy


def content_of(user: UserView, entry: Entry) -> ContentInfo | None:
    return None if entry.content_id is None else content_info(user, entry.content_id)


# -- dead properties (RFC 4918 §4.2) ----------------------------------------------

def get_props(user: UserView, entry_id: bytes) -> dict[str, bytes]:
    """Every dead property of an entry: Clark name → XML value."""
    out = {}
    for _, raw in user.scan(SPACE_FILE_PROP, entry_id):
        name, value = _split_prop(raw)
        out[name] = value
    return out


def get_prop(user: UserView, entry_id: bytes, name: str) -> bytes | None:
    raw = user.get(SPACE_FILE_PROP, entry_id + user.name_hash("prop", name))
    return None if raw is None else _split_prop(raw)[1]


def set_prop(user: UserWrite, entry_id: bytes, name: str, value: bytes) -> None:
    encoded = name.encode()
    user.put(SPACE_FILE_PROP, entry_id + user.name_hash("prop", name), _U64.pack(len(encoded)) + encoded + value)


def remove_prop(user: UserWrite, entry_id: bytes, name: str) -> bool:
    return user.delete(SPACE_FILE_PROP, entry_id + user.name_hash("prop", name))


def remove_props(user: UserWrite, entry_id: bytes) -> None:
    user.delete_prefix(SPACE_FILE_PROP, entry_id)


def _split_prop(raw: bytes) -> tuple[str, bytes]:
    n = _U64.unpack(raw[:8])[0]
    return raw[8:8 + n].decode(), raw[8 + n:]


# -- locks (RFC 4918 §6, §9.10) ----------------------------------------------------

def put_lock(user: UserWrite, token: str, lock: dict[str, object]) -> None:
    user.put(SPACE_FILE_LOCK, user.name_hash("lock", token), json.dumps(lock).encode())


def get_lock(user: UserView, token: str) -> dict[str, object] | None:
    raw = user.get(SPACE_FILE_LOCK, user.name_hash("lock", token))
    return None if raw is None else json.loads(raw)


def delete_lock(user: UserWrite, token: str) -> bool:
    return user.delete(SPACE_FILE_LOCK, user.name_hash("lock", token))


def has_locks(user: UserView) -> bool:
    """Whether the account holds any lock (nothing is decrypted)."""
    return next(iter(user.keys(SPACE_FILE_LOCK)), None) is not None


def all_locks(user: UserView) -> Iterator[dict[str, object]]:
    for _, raw in user.scan(SPACE_FILE_LOCK):
        yield json.loads(raw)


__all__ = [
    "Conflict", "Entry", "NotFound", "ROOT_ID", "children", "content_of", "copy_entry", "delete_tree",
    "descendants", "get_prop", "get_props", "init_space", "lookup", "make_collection", "move", "put_file",
    "replace_file", "exists",
    "remove_prop", "remove_props", "set_prop", "usage",
]


def init_account(txn: Any, account: Any) -> None:
    """ACCOUNT_INITIALIZERS hook: the empty file space, inside the creating transaction."""
    init_space(txn.user(account.id))
