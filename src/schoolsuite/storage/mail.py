"""Mailboxes and messages of one account (the IMAP store; RFC 3501 §2.3, RFC 7162).

Record spaces (see spaces.py), all sealed under the account's data key:

==================  ====================================  =====================================
space               key                                   value
==================  ====================================  =====================================
MAIL_STATE 0x10     ``s``                                 next mailbox id, next UIDVALIDITY,
                                                          bytes and messages in use (quota)
                    ``k``                                 keyword table (flag bit → name)
MAILBOX 0x11        mailbox id (4)                        name, UIDVALIDITY, UIDNEXT,
                                                          HIGHESTMODSEQ, special use, counts
MAILBOX_NAME 0x12   name_hash(name)                       mailbox id (4)
MAIL_INDEX 0x13     mailbox id (4) + page (4)             packed (uid, flags, modseq, internal
                                                          date, size) of up to 128 uids
MESSAGE 0x14        mailbox id (4) + uid (4)              content id + parsed MIME structure
MAIL_CHANGES 0x15   mailbox id (4) + modseq (8)           uid (4) + kind (changed / expunged)
SUBSCRIPTION 0x16   name_hash(name)                       the subscribed name
==================  ====================================  =====================================

The index pages are the compact per-mailbox summary: a 100,000-message
mailbox is ~800 small records, so selecting it, mapping sequence numbers,
answering UID ranges or searching by flags opens those pages and nothing
else. The change log keeps exactly one entry per message (keyed by its
current MODSEQ) plus one per expunged uid, so "changed since MODSEQ n"
(CONDSTORE, QRESYNC, IDLE) is one range scan from ``n``.

Flags are a 64-bit mask: five system flags and up to 59 keywords numbered
in the account's keyword table. ``\\Recent`` is session state, not stored.
"""

from __future__ import annotations

import json
import struct
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from . import content, files, mime
from .errors import Conflict, NotFound, StoreError
from .spaces import (
    SPACE_MAIL_CHANGES,
    SPACE_MAIL_INDEX,
    SPACE_MAIL_STATE,
    SPACE_MAILBOX,
    SPACE_MAILBOX_NAME,
    SPACE_MESSAGE,
    SPACE_SUBSCRIPTION,
)
from .store import UserView, UserWrite

DELIMITER = "/"
SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
SEEN, ANSWERED, FLAGGED, DELETED, DRAFT = (1 << i for i in range(5))
_SYSTEM_BY_LOWER = {f.lower(): 1 << i for i, f in enumerate(SYSTEM_FLAGS)}
KEYWORD_BASE = 5
MAX_KEYWORDS = 64 - KEYWORD_BASE

#: RFC 6154 special-use mailboxes every new account gets.
DEFAULT_MAILBOXES = (
    ("INBOX", None),
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)
SPECIAL_USES = frozenset(("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"))

PAGE_SHIFT = 7  # 128 uids per index page: at most 4 KiB, always inline
_ENTRY = struct.Struct(">IQQqI")  # uid, flags, modseq, internal date (s), size
_PAGE_KEY = struct.Struct(">II")
_MSG_KEY = struct.Struct(">II")
_CHANGE_KEY = struct.Struct(">IQ")
_CHANGE_VAL = struct.Struct(">IB")
_STATE = struct.Struct(">IIQQ")  # next mailbox id, next uidvalidity, bytes, messages
_U32 = struct.Struct(">I")
CHANGED, EXPUNGED = 0, 1
MAX_TOMBSTONES = 20_000  # expunge records kept per mailbox for QRESYNC before the oldest half goes
MAX_UID = 0xFFFFFFFF


class MailError(StoreError):
    """Base of the mail store's refusals."""


class MailboxNotFound(MailError, NotFound):
    """No mailbox of that name (IMAP NONEXISTENT / TRYCREATE)."""


class MailboxExists(MailError, Conflict):
    """A mailbox of that name exists already (IMAP ALREADYEXISTS)."""


class QuotaExceeded(MailError):
    """The account's storage quota would be exceeded (IMAP OVERQUOTA, SMTP 552)."""


class MailboxRefused(MailError):
    """The operation is not allowed on this mailbox (IMAP CANNOT): e.g. deleting INBOX."""


class TooManyKeywords(MailError):
    """The account's keyword table is full (IMAP LIMIT)."""


# -- names -------------------------------------------------------------------


def canonical_name(name: str) -> str:
    """INBOX in any case is INBOX (RFC 3501 §5.1), also as a hierarchy prefix."""
    if name.upper() == "INBOX":
        return "INBOX"
    if name[:6].upper() == "INBOX" + DELIMITER:
        return "INBOX" + name[5:]
    return name


def valid_name(name: str) -> bool:
    parts = name.split(DELIMITER)
    return bool(name) and len(name) <= 512 and all(parts) and not any(c in name for c in "\r\n\x00*%")


def parent_names(name: str) -> list[str]:
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


# -- records -----------------------------------------------------------------


@dataclass
class Mailbox:
    """What the store keeps about one mailbox."""

    id: int
    name: str
    uidvalidity: int
    uidnext: int = 1
    highestmodseq: int = 1
    special_use: str | None = None
    messages: int = 0
    unseen: int = 0
    size: int = 0
    deleted: int = 0  # messages flagged \Deleted
    recent_uid: int = 1  # uids from here on are \Recent to the next session that selects
    noselect: bool = False  # a deleted mailbox kept because it has children (RFC 3501 §6.3.4)
    tombstones: int = 0  # expunged uids still in the change log
    vanished_floor: int = 0  # expunges at or below this MODSEQ were pruned from the change log

    def to_bytes(self) -> bytes:
        return json.dumps([self.name, self.uidvalidity, self.uidnext, self.highestmodseq, self.special_use,
                           self.messages, self.unseen, self.size, self.deleted, self.recent_uid,
                           self.noselect, self.tombstones, self.vanished_floor], separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, mailbox_id: int, raw: bytes) -> "Mailbox":
        return cls(mailbox_id, *json.loads(raw))


@dataclass
class AccountMailState:
    next_mailbox: int = 1
    next_uidvalidity: int = 0
    bytes: int = 0
    messages: int = 0


class IndexEntry(NamedTuple):
    """One message in a mailbox's index page."""

    uid: int
    flags: int
    modseq: int
    date: int
    size: int


@dataclass
class MailboxIndex:
    """A mailbox's summary as parallel arrays, ascending by uid (sequence number - 1 = position)."""

    uids: array = field(default_factory=lambda: array("I"))
    flags: array = field(default_factory=lambda: array("Q"))
    modseqs: array = field(default_factory=lambda: array("Q"))
    dates: array = field(default_factory=lambda: array("q"))
    sizes: array = field(default_factory=lambda: array("I"))


@dataclass
class StoredMessage:
    content_id: bytes
    structure: mime.Entity


@dataclass
class Change:
    modseq: int
    uid: int
    expunged: bool


# -- account state and keywords ---------------------------------------------


def _state(user: UserView) -> AccountMailState:
    raw = user.get(SPACE_MAIL_STATE, b"s")
    if raw is None:
        return AccountMailState(next_uidvalidity=int(time.time()))
    return AccountMailState(*_STATE.unpack(raw))


def _put_state(user: UserWrite, state: AccountMailState) -> None:
    user.put(SPACE_MAIL_STATE, b"s", _STATE.pack(state.next_mailbox, state.next_uidvalidity & 0xFFFFFFFF,
                                                 state.bytes, state.messages))


def usage(user: UserView) -> tuple[int, int]:
    """(bytes, messages) the account's mail uses (RFC 9208 STORAGE and MESSAGE)."""
    state = _state(user)
    return state.bytes, state.messages


def keywords(user: UserView) -> list[str]:
    """The account's keyword table: index i is flag bit KEYWORD_BASE + i."""
    raw = user.get(SPACE_MAIL_STATE, b"k")
    return [] if raw is None else json.loads(raw)


def flags_to_mask(user: UserView, names: Iterable[str], *, create: bool = False) -> int:
    """The mask of flag names; unknown keywords are added to the table when ``create``."""
    mask = 0
    table: list[str] | None = None
    lower: dict[str, int] | None = None
    added = False
    for name in names:
        bit = _SYSTEM_BY_LOWER.get(name.lower())
        if bit is not None:
            mask |= bit
            continue
        if name.startswith("\\"):
            continue  # \Recent and unknown system flags are not stored
        if table is None:
            table = keywords(user)
            lower = {k.lower(): i for i, k in enumerate(table)}
        assert lower is not None
        index = lower.get(name.lower())
        if index is None:
            if not create:
                continue
            if len(table) >= MAX_KEYWORDS:
                raise TooManyKeywords("too many keywords")
            index = len(table)
            table.append(name)
            lower[name.lower()] = index
            added = True
        mask |= 1 << (KEYWORD_BASE + index)
    if added and table is not None:
        assert isinstance(user, UserWrite)
        user.put(SPACE_MAIL_STATE, b"k", json.dumps(table).encode())
    return mask


def mask_to_flags(mask: int, table: list[str]) -> list[str]:
    out = [f for i, f in enumerate(SYSTEM_FLAGS) if mask & (1 << i)]
    rest = mask >> KEYWORD_BASE
    i = 0
    while rest:
        if rest & 1 and i < len(table):
            out.append(table[i])
        rest >>= 1
        i += 1
    return out


# -- mailboxes -----------------------------------------------------------------


def get_mailbox(user: UserView, mailbox_id: int) -> Mailbox | None:
    raw = user.get(SPACE_MAILBOX, _U32.pack(mailbox_id))
    return None if raw is None else Mailbox.from_bytes(mailbox_id, raw)


def find_mailbox(user: UserView, name: str) -> Mailbox | None:
    """The mailbox named ``name`` (INBOX case-insensitive), or None."""
    raw = user.get(SPACE_MAILBOX_NAME, user.name_hash("mailbox", canonical_name(name)))
    return None if raw is None else get_mailbox(user, _U32.unpack(raw)[0])


def require_mailbox(user: UserView, name: str) -> Mailbox:
    mailbox = find_mailbox(user, name)
    if mailbox is None or mailbox.noselect:
        raise MailboxNotFound(f"no mailbox {name!r}")
    return mailbox


def list_mailboxes(user: UserView) -> list[Mailbox]:
    """Every mailbox of the account, by name."""
    out = [Mailbox.from_bytes(_U32.unpack(key)[0], raw) for key, raw in user.scan(SPACE_MAILBOX)]
    out.sort(key=lambda m: (m.name != "INBOX", m.name))
    return out


def _put_mailbox(user: UserWrite, mailbox: Mailbox) -> None:
    user.put(SPACE_MAILBOX, _U32.pack(mailbox.id), mailbox.to_bytes())


def create_mailbox(user: UserWrite, name: str, special_use: str | None = None) -> Mailbox:
    """Create ``name`` and any missing parents (RFC 3501 §6.3.3)."""
    name = canonical_name(name)
    if not valid_name(name):
        raise MailboxRefused("invalid mailbox name")
    if special_use is not None and special_use not in SPECIAL_USES:
        raise MailboxRefused("unknown special use")
    existing = find_mailbox(user, name)
    if existing is not None and not existing.noselect:
        raise MailboxExists(f"mailbox {name!r} exists")
    for parent in parent_names(name):
        if find_mailbox(user, parent) is None:
            _new_mailbox(user, parent, None)
    if existing is not None:  # a \Noselect placeholder becomes a real mailbox again
        existing.noselect = False
        existing.special_use = special_use
        state = _state(user)
        existing.uidvalidity = _next_uidvalidity(state)
        _put_state(user, state)
        _put_mailbox(user, existing)
        return existing
    return _new_mailbox(user, name, special_use)


def _next_uidvalidity(state: AccountMailState) -> int:
    # Strictly increasing and never reused, even for a name created again (RFC 3501 §2.3.1.1).
    value = max(state.next_uidvalidity, int(time.time()) & 0x7FFFFFFF, 1)
    state.next_uidvalidity = value + 1
    return value


def _new_mailbox(user: UserWrite, name: str, special_use: str | None) -> Mailbox:
    state = _state(user)
    # A fresh MODSEQ: every later change in the mailbox is strictly greater (RFC 7162 §3.1.1).
    mailbox = Mailbox(state.next_mailbox, name, _next_uidvalidity(state), special_use=special_use,
                      highestmodseq=user.bump_change())
    state.next_mailbox += 1
    _put_state(user, state)
    _put_mailbox(user, mailbox)
    user.put(SPACE_MAILBOX_NAME, user.name_hash("mailbox", name), _U32.pack(mailbox.id))
    return mailbox


def create_default_mailboxes(user: UserWrite) -> None:
    for name, use in DEFAULT_MAILBOXES:
        if find_mailbox(user, name) is None:
            _new_mailbox(user, name, use)
        if name != "INBOX":
            subscribe(user, name)
    subscribe(user, "INBOX")


def children(user: UserView, name: str) -> list[Mailbox]:
    prefix = name + DELIMITER
    return [m for m in list_mailboxes(user) if m.name.startswith(prefix)]


def delete_mailbox(user: UserWrite, name: str) -> None:
    """RFC 3501 §6.3.4: INBOX cannot go; a mailbox with children keeps its name as \\Noselect."""
    name = canonical_name(name)
    mailbox = find_mailbox(user, name)
    if mailbox is None:
        raise MailboxNotFound(f"no mailbox {name!r}")
    if name == "INBOX":
        raise MailboxRefused("INBOX cannot be deleted")
    kids = children(user, name)
    if kids and mailbox.noselect:
        raise MailboxRefused("mailbox has children")
    _drop_messages(user, mailbox)
    if kids:
        fresh = Mailbox(mailbox.id, name, mailbox.uidvalidity, noselect=True)
        _put_mailbox(user, fresh)
        return
    user.delete(SPACE_MAILBOX, _U32.pack(mailbox.id))
    user.delete(SPACE_MAILBOX_NAME, user.name_hash("mailbox", name))


def _drop_messages(user: UserWrite, mailbox: Mailbox) -> None:
    prefix = _U32.pack(mailbox.id)
    freed = 0
    count = 0
    for key, raw in list(user.scan(SPACE_MESSAGE, prefix)):
        content.unref_content(user, raw[:16])
        count += 1
    index = load_index(user, mailbox.id)
    freed = sum(index.sizes)
    user.delete_prefix(SPACE_MESSAGE, prefix)
    user.delete_prefix(SPACE_MAIL_INDEX, prefix)
    user.delete_prefix(SPACE_MAIL_CHANGES, prefix)
    state = _state(user)
    state.bytes = max(0, state.bytes - freed)
    state.messages = max(0, state.messages - count)
    _put_state(user, state)


def rename_mailbox(user: UserWrite, old: str, new: str) -> None:
    """RFC 3501 §6.3.5: children move along; renaming INBOX moves its messages to a new mailbox."""
    old, new = canonical_name(old), canonical_name(new)
    source = find_mailbox(user, old)
    if source is None:
        raise MailboxNotFound(f"no mailbox {old!r}")
    if not valid_name(new):
        raise MailboxRefused("invalid mailbox name")
    target = find_mailbox(user, new)
    if target is not None:
        raise MailboxExists(f"mailbox {new!r} exists")
    if new == old or new.startswith(old + DELIMITER):
        raise MailboxRefused("cannot rename a mailbox into itself")
    for parent in parent_names(new):
        if find_mailbox(user, parent) is None:
            _new_mailbox(user, parent, None)
    if old == "INBOX":
        # The messages go to ``new`` under INBOX's id; INBOX starts afresh.
        user.delete(SPACE_MAILBOX_NAME, user.name_hash("mailbox", "INBOX"))
        source.name = new
        _put_mailbox(user, source)
        user.put(SPACE_MAILBOX_NAME, user.name_hash("mailbox", new), _U32.pack(source.id))
        _new_mailbox(user, "INBOX", None)
        return
    moved = [source, *children(user, old)]
    for mailbox in moved:
        user.delete(SPACE_MAILBOX_NAME, user.name_hash("mailbox", mailbox.name))
    for mailbox in moved:
        mailbox.name = new + mailbox.name[len(old):]
        _put_mailbox(user, mailbox)
        user.put(SPACE_MAILBOX_NAME, user.name_hash("mailbox", mailbox.name), _U32.pack(mailbox.id))


# -- subscriptions (RFC 3501 §6.3.6) -------------------------------------------


def subscribe(user: UserWrite, name: str) -> None:
    name = canonical_name(name)
    user.put(SPACE_SUBSCRIPTION, user.name_hash("sub", name), name.encode("utf-8"))


def unsubscribe(user: UserWrite, name: str) -> bool:
    return user.delete(SPACE_SUBSCRIPTION, user.name_hash("sub", canonical_name(name)))


def subscriptions(user: UserView) -> set[str]:
    return {raw.decode("utf-8") for _, raw in user.scan(SPACE_SUBSCRIPTION)}


# -- the index -----------------------------------------------------------------


def _page_key(mailbox_id: int, page: int) -> bytes:
    return _PAGE_KEY.pack(mailbox_id, page)


def load_index(user: UserView, mailbox_id: int, first_uid: int = 1) -> MailboxIndex:
    """The summary of every message with uid >= ``first_uid``."""
    index = MailboxIndex()
    prefix = _U32.pack(mailbox_id)
    start = _page_key(mailbox_id, first_uid >> PAGE_SHIFT)
    uids, flags, modseqs, dates, sizes = index.uids, index.flags, index.modseqs, index.dates, index.sizes
    for _, raw in user.scan(SPACE_MAIL_INDEX, prefix, start=start):
        for uid, fl, ms, dt, sz in _ENTRY.iter_unpack(raw):
            if uid >= first_uid:
                uids.append(uid)
                flags.append(fl)
                modseqs.append(ms)
                dates.append(dt)
                sizes.append(sz)
    return index


def index_entries(user: UserView, mailbox_id: int, uids: Iterable[int]) -> dict[int, IndexEntry]:
    """The summary entries of the given uids (missing ones are left out)."""
    wanted: dict[int, list[int]] = {}
    for uid in uids:
        wanted.setdefault(uid >> PAGE_SHIFT, []).append(uid)
    out: dict[int, IndexEntry] = {}
    for page, members in wanted.items():
        raw = user.get(SPACE_MAIL_INDEX, _page_key(mailbox_id, page))
        if raw is None:
            continue
        if len(members) < 8:  # a few uids: binary search the packed page
            for uid in members:
                offset, found = _Pages._find(raw, uid)
                if found:
                    out[uid] = IndexEntry._make(_ENTRY.unpack_from(raw, offset))
            continue
        want = set(members)
        for entry in _ENTRY.iter_unpack(raw):
            if entry[0] in want:
                out[entry[0]] = IndexEntry._make(entry)
    return out


class _Pages:
    """Index pages being changed within one write; written back by :meth:`flush`.

    A page stays packed (a bytearray of fixed-size entries sorted by uid) and is
    patched in place: a flag change on one message costs one unpack and one
    pack, not a decode and re-encode of 128 entries.
    """

    def __init__(self, user: UserWrite, mailbox_id: int) -> None:
        self.user = user
        self.mailbox_id = mailbox_id
        self.pages: dict[int, bytearray] = {}

    def page(self, uid: int) -> bytearray:
        number = uid >> PAGE_SHIFT
        page = self.pages.get(number)
        if page is None:
            raw = self.user.get(SPACE_MAIL_INDEX, _page_key(self.mailbox_id, number))
            page = bytearray() if raw is None else bytearray(raw)
            self.pages[number] = page
        return page

    @staticmethod
    def _find(page: bytes | bytearray, uid: int) -> tuple[int, bool]:
        """(byte offset of ``uid``'s entry or where it belongs, whether it is there)."""
        size = _ENTRY.size
        lo, hi = 0, len(page) // size
        while lo < hi:
            mid = (lo + hi) // 2
            if _U32.unpack_from(page, mid * size)[0] < uid:
                lo = mid + 1
            else:
                hi = mid
        offset = lo * size
        return offset, offset < len(page) and _U32.unpack_from(page, offset)[0] == uid

    def get(self, uid: int) -> list[int] | None:
        """A copy of ``uid``'s entry (write changes back with :meth:`put`)."""
        page = self.page(uid)
        offset, found = self._find(page, uid)
        return list(_ENTRY.unpack_from(page, offset)) if found else None

    def put(self, entry: list[int]) -> None:
        page = self.page(entry[0])
        offset, found = self._find(page, entry[0])
        if found:
            _ENTRY.pack_into(page, offset, *entry)
        else:
            page[offset:offset] = _ENTRY.pack(*entry)

    def remove(self, uid: int) -> list[int] | None:
        page = self.page(uid)
        offset, found = self._find(page, uid)
        if not found:
            return None
        entry = list(_ENTRY.unpack_from(page, offset))
        del page[offset:offset + _ENTRY.size]
        return entry

    def flush(self) -> None:
        for number, page in self.pages.items():
            key = _page_key(self.mailbox_id, number)
            if page:
                self.user.put(SPACE_MAIL_INDEX, key, bytes(page))
            else:
                self.user.delete(SPACE_MAIL_INDEX, key)
        self.pages.clear()


def _log_change(user: UserWrite, mailbox_id: int, old_modseq: int | None, modseq: int, uid: int, kind: int) -> None:
    if old_modseq is not None:
        user.delete(SPACE_MAIL_CHANGES, _CHANGE_KEY.pack(mailbox_id, old_modseq))
    user.put(SPACE_MAIL_CHANGES, _CHANGE_KEY.pack(mailbox_id, modseq), _CHANGE_VAL.pack(uid, kind))


def changes_since(user: UserView, mailbox_id: int, modseq: int) -> list[Change]:
    """Changes (flags, new messages, expunges) with MODSEQ > ``modseq``, oldest first (RFC 7162 §3.1.4)."""
    out = []
    start = _CHANGE_KEY.pack(mailbox_id, modseq + 1)
    for key, raw in user.scan(SPACE_MAIL_CHANGES, _U32.pack(mailbox_id), start=start):
        uid, kind = _CHANGE_VAL.unpack(raw)
        out.append(Change(_CHANGE_KEY.unpack(key)[1], uid, kind == EXPUNGED))
    return out


# -- messages ------------------------------------------------------------------


def get_message(user: UserView, mailbox_id: int, uid: int) -> StoredMessage | None:
    raw = user.get(SPACE_MESSAGE, _MSG_KEY.pack(mailbox_id, uid))
    if raw is None:
        return None
    return StoredMessage(raw[:16], mime.Entity.from_bytes(raw[16:]))


def read_message(user: UserView, content_id: bytes, start: int = 0, end: int | None = None, *,
                 size: int | None = None) -> bytes:
    """Bytes ``[start, end)`` of a message's content.

    Given the message's ``size`` (index entry or structure), a whole message of
    one chunk is read as that chunk alone, without opening its content record:
    one sealed record instead of two, which counts when a search reads
    thousands of messages.
    """
    if size is not None and 0 < size <= content.CHUNK_SIZE and start == 0 and (end is None or end >= size):
        return user.blob_chunk(content_id, 0)[:size]
    return b"".join(content.read_content(user, content_id, start, end))


def _check_quota(user: UserView, quota: int | None, add_bytes: int, state: AccountMailState) -> None:
    # One quota for mail and files together (storage/quota.py).
    if quota is not None and state.bytes + files.usage(user) + add_bytes > quota:
        raise QuotaExceeded("over quota")


def append(user: UserWrite, mailbox: Mailbox, data: bytes, *, flags: int = 0, internal_date: float | None = None,
           quota: int | None = None, structure: mime.Entity | None = None) -> int:
    """Store a new message in ``mailbox``; returns its uid. The caller writes ``mailbox`` back."""
    state = _state(user)
    _check_quota(user, quota, len(data), state)
    if structure is None:
        structure = mime.parse(data)
    info = content.put_content(user, data)
    uid = _insert(user, mailbox, info.content_id, structure.to_bytes(), len(data), flags,
                  int(time.time() if internal_date is None else internal_date))
    state.bytes += len(data)
    state.messages += 1
    _put_state(user, state)
    return uid


def _insert(user: UserWrite, mailbox: Mailbox, content_id: bytes, structure: bytes, size: int, flags: int,
            date: int, pages: _Pages | None = None) -> int:
    if mailbox.uidnext > MAX_UID:
        raise MailboxRefused("mailbox uid space exhausted")
    uid = mailbox.uidnext
    modseq = user.bump_change()
    user.put(SPACE_MESSAGE, _MSG_KEY.pack(mailbox.id, uid), content_id + structure)
    own = pages is None
    pages = pages or _Pages(user, mailbox.id)
    pages.put([uid, flags, modseq, date, size])
    if own:
        pages.flush()
    _log_change(user, mailbox.id, None, modseq, uid, CHANGED)
    mailbox.uidnext = uid + 1
    mailbox.highestmodseq = max(mailbox.highestmodseq, modseq)
    mailbox.messages += 1
    mailbox.size += size
    if not flags & SEEN:
        mailbox.unseen += 1
    if flags & DELETED:
        mailbox.deleted += 1
    return uid


def save_mailbox(user: UserWrite, mailbox: Mailbox) -> None:
    _put_mailbox(user, mailbox)


def _count_flags(mailbox: Mailbox, old: int, new: int) -> None:
    if (old ^ new) & SEEN:
        mailbox.unseen += -1 if new & SEEN else 1
    if (old ^ new) & DELETED:
        mailbox.deleted += 1 if new & DELETED else -1


def store_flags(user: UserWrite, mailbox: Mailbox, uids: Iterable[int], mode: str, mask: int, *,
                unchanged_since: int | None = None) -> tuple[list[IndexEntry], list[int]]:
    """Set (``mode`` "set"), add ("add") or remove ("remove") flags (RFC 3501 §6.4.6).

    Returns (entries whose flags changed, with their new MODSEQ; uids refused
    by UNCHANGEDSINCE, RFC 7162 §3.1.3). Unchanged messages keep their MODSEQ.
    """
    pages = _Pages(user, mailbox.id)
    changed: list[IndexEntry] = []
    failed: list[int] = []
    for uid in uids:
        entry = pages.get(uid)
        if entry is None:
            continue
        if unchanged_since is not None and entry[2] > unchanged_since:
            failed.append(uid)
            continue
        old = entry[1]
        if mode == "set":
            new = mask
        elif mode == "add":
            new = old | mask
        else:
            new = old & ~mask
        if new == old and unchanged_since is None:
            continue
        modseq = user.bump_change()
        _log_change(user, mailbox.id, entry[2], modseq, uid, CHANGED)
        entry[1] = new
        entry[2] = modseq
        pages.put(entry)
        _count_flags(mailbox, old, new)
        mailbox.highestmodseq = modseq
        changed.append(IndexEntry(*entry))
    pages.flush()
    return changed, failed


def expunge(user: UserWrite, mailbox: Mailbox, uids: Iterable[int] | None = None) -> list[int]:
    """Remove the messages flagged \\Deleted (only those in ``uids`` when given, RFC 4315 §2.1)."""
    if uids is None:
        index = load_index(user, mailbox.id)
        targets = [u for u, f in zip(index.uids, index.flags) if f & DELETED]
    else:
        entries = index_entries(user, mailbox.id, uids)
        targets = sorted(u for u, e in entries.items() if e.flags & DELETED)
    return remove_messages(user, mailbox, targets)


def remove_messages(user: UserWrite, mailbox: Mailbox, uids: list[int]) -> list[int]:
    """Remove ``uids`` from ``mailbox`` whatever their flags; returns the uids removed."""
    pages = _Pages(user, mailbox.id)
    removed = []
    freed = 0
    for uid in uids:
        entry = pages.remove(uid)
        if entry is None:
            continue
        key = _MSG_KEY.pack(mailbox.id, uid)
        raw = user.get(SPACE_MESSAGE, key)
        if raw is not None:
            content.unref_content(user, raw[:16])
            user.delete(SPACE_MESSAGE, key)
        modseq = user.bump_change()
        _log_change(user, mailbox.id, entry[2], modseq, uid, EXPUNGED)
        mailbox.highestmodseq = modseq
        mailbox.messages -= 1
        mailbox.size -= entry[4]
        _count_flags(mailbox, entry[1], SEEN)
        freed += entry[4]
        removed.append(uid)
    pages.flush()
    if removed:
        state = _state(user)
        state.bytes = max(0, state.bytes - freed)
        state.messages = max(0, state.messages - len(removed))
        _put_state(user, state)
        mailbox.tombstones += len(removed)
        if mailbox.tombstones > MAX_TOMBSTONES:
            _prune_tombstones(user, mailbox)
    return removed


def _prune_tombstones(user: UserWrite, mailbox: Mailbox) -> None:
    """Drop the oldest half of the expunge records; older expunges are then reported as a superset
    (RFC 7162 §3.2.5.2 allows VANISHED to name uids the client never saw)."""
    target = MAX_TOMBSTONES // 2
    doomed = []
    for key, raw in user.scan(SPACE_MAIL_CHANGES, _U32.pack(mailbox.id)):
        if mailbox.tombstones - len(doomed) <= target:
            break
        if _CHANGE_VAL.unpack(raw)[1] == EXPUNGED:
            doomed.append(key)
    for key in doomed:
        user.delete(SPACE_MAIL_CHANGES, key)
        mailbox.vanished_floor = max(mailbox.vanished_floor, _CHANGE_KEY.unpack(key)[1])
    mailbox.tombstones -= len(doomed)


def vanished_since(user: UserView, mailbox: Mailbox, modseq: int, lo: int = 1, hi: int = MAX_UID) -> list[int]:
    """Uids in [lo, hi] expunged after ``modseq``; a superset when the log was pruned past it."""
    if modseq >= mailbox.vanished_floor:
        return sorted({c.uid for c in changes_since(user, mailbox.id, modseq) if c.expunged and lo <= c.uid <= hi})
    present = set(load_index(user, mailbox.id).uids)
    return [u for u in range(max(lo, 1), min(hi, mailbox.uidnext - 1) + 1) if u not in present]


def copy_messages(user: UserWrite, source: Mailbox, uids: list[int], target: Mailbox, *,
                  quota: int | None = None, count_usage: bool = True) -> list[tuple[int, int]]:
    """Copy messages sharing their content (RFC 3501 §6.4.7); returns (source uid, new uid) pairs."""
    entries = index_entries(user, source.id, uids)
    todo = [entries[u] for u in sorted(entries)]
    state = _state(user)
    added = sum(e.size for e in todo)
    if count_usage:
        _check_quota(user, quota, added, state)
    pages = _Pages(user, target.id)
    pairs = []
    for entry in todo:
        raw = user.get(SPACE_MESSAGE, _MSG_KEY.pack(source.id, entry.uid))
        if raw is None:
            continue
        content.ref_content(user, raw[:16])
        new_uid = _insert(user, target, raw[:16], raw[16:], entry.size, entry.flags, entry.date, pages)
        pairs.append((entry.uid, new_uid))
    pages.flush()
    if count_usage and pairs:
        state.bytes += added
        state.messages += len(pairs)
        _put_state(user, state)
    return pairs


def move_messages(user: UserWrite, source: Mailbox, uids: list[int], target: Mailbox) -> list[tuple[int, int]]:
    """RFC 6851: copy then expunge from the source, in one transaction; usage is unchanged."""
    pairs = copy_messages(user, source, uids, target, count_usage=False)
    before = _state(user)
    remove_messages(user, source, [s for s, _ in pairs])
    _put_state(user, before)  # a move neither frees nor takes space
    return pairs


def claim_recent(user: UserWrite, mailbox: Mailbox) -> int:
    """The first uid that is \\Recent to this session; later sessions see none of them (RFC 3501 §2.3.2)."""
    first = mailbox.recent_uid
    if first < mailbox.uidnext:
        mailbox.recent_uid = mailbox.uidnext
        _put_mailbox(user, mailbox)
    return first


def iter_messages(user: UserView, mailbox_id: int, uids: Iterable[int]) -> Iterator[tuple[int, StoredMessage]]:
    for uid in uids:
        message = get_message(user, mailbox_id, uid)
        if message is not None:
            yield uid, message
