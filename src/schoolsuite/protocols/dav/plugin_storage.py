"""Radicale storage plugin over the sealed store (``storage/dav.py``).

Radicale calls it from the WSGI threads. Reads open a read transaction each;
writes go through :class:`~schoolsuite.storage.dav.DavStore`, which the
server points at the store writer thread. Radicale's collection paths are
``ADDRESS/NAME``: the first segment names the account, the rest is the
collection's path inside its home.

What is not Radicale's default (and why):
- ``has_uid`` and ``etag`` come from the UID index and the change counter
  (the defaults walk every item);
- ``sync`` answers from the per-collection change log, with tokens that
  survive restarts and are refused (RFC 6578 §3.2 ``valid-sync-token``)
  after the collection was recreated or the log trimmed;
- ``acquire_lock`` locks per user: Radicale's check-then-write sequences of
  one user are serialised, different users never wait for each other, and
  reads need no lock (LMDB snapshots).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ContextManager

from radicale import item as radicale_item
from radicale import pathutils, storage, types
from radicale.item import filter as radicale_filter

from ...services.accounts import AccountError, normalize_address
from ...storage import dav as store_dav
from ...storage.dav import CollectionRecord, DavStore, ItemRecord
from . import metrics as dav_metrics

#: Per request (WSGI thread): the time range of a calendar-query with expand (wsgi.py sets it).
EXPAND_HINT = threading.local()

#: Sync tokens are URIs (RFC 6578 §6.2) that no client resolves (RFC 2606 .invalid).
TOKEN_PREFIX = "https://schoolsuite.invalid/ns/sync/"
#: errno 28 in the message makes Radicale answer 507 Insufficient Storage (RFC 4918 §11.5).
_FULL = "[Errno 28] the collection holds its maximum number of items"


def http_date(ts: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(ts))


def split_path(path: str) -> tuple[str, str]:
    """Radicale path → (owner address, path inside the home)."""
    sane = pathutils.strip_path(path)
    owner, _, rest = sane.partition("/")
    return owner, rest


class Collection(storage.BaseCollection):
    """A collection in a user's home, or the home (principal) itself."""

    def __init__(self, backend: "Storage", account_id: bytes, owner: str, record: CollectionRecord) -> None:
        self._backend = backend
        self._account_id = account_id
        self._owner = owner
        self._record = record

    @property
    def path(self) -> str:
        return f"{self._owner}/{self._record.path}" if self._record.path else self._owner

    @property
    def owner(self) -> str:
        return self._owner

    # -- properties and state --------------------------------------------------

    def get_meta(self, key: str | None = None) -> Any:
        props = self._record.props
        return dict(props) if key is None else props.get(key)

    def set_meta(self, props: Mapping[str, str]) -> None:
        self._record = self._backend.dav.write(self._account_id, store_dav.set_props, self._record.path, dict(props))

    @property
    def etag(self) -> str:
        """The CTag: incarnation and last change, O(1) (not a walk over every item)."""
        return f'"{self._record.incarnation}-{self._record.last_seq}"'

    @property
    def last_modified(self) -> str:
        return http_date(self._record.modified)

    def sync(self, old_token: str = "") -> tuple[str, Iterable[str]]:
        """RFC 6578 §3.2: changes since ``old_token``; ValueError makes it valid-sync-token."""
        rec = self._record
        token = f"{TOKEN_PREFIX}{rec.incarnation}-{rec.last_seq}"
        if not old_token:
            # Lazy: PROPFIND asks only for the token; a full listing reads the items when iterated.
            def every_href() -> Iterator[str]:
                for rec in self._records():
                    yield rec.href

            return token, every_href()
        incarnation, _, seq_text = old_token.removeprefix(TOKEN_PREFIX).rpartition("-")
        if not old_token.startswith(TOKEN_PREFIX) or incarnation != rec.incarnation or not seq_text.isdigit():
            raise ValueError("sync token of another collection or malformed")
        seq = int(seq_text)
        if seq > rec.last_seq or seq < rec.min_seq:
            raise ValueError("sync token too old or from the future")
        if seq == rec.last_seq:
            return token, ()
        return token, self._backend.dav.read(self._account_id, store_dav.changes_since, rec, seq)

    # -- items -------------------------------------------------------------------

    def _item(self, rec: ItemRecord) -> radicale_item.Item:
        return radicale_item.Item(
            collection=self, href=rec.href, last_modified=http_date(rec.modified), text=rec.text,
            etag=rec.etag, uid=rec.uid, name=rec.name, component_name=rec.component,
            time_range=(rec.start, rec.end))

    def _records(self) -> list[ItemRecord]:
        return self._backend.dav.read(self._account_id, lambda v: list(store_dav.all_items(v, self._record.path)))

    def get_multi(self, hrefs: Iterable[str]) -> Iterable[tuple[str, radicale_item.Item | None]]:
        found = self._backend.dav.read(self._account_id, store_dav.get_items, self._record.path, list(hrefs))
        return [(href, None if rec is None else self._item(rec)) for href, rec in found]

    def get_all(self) -> Iterable[radicale_item.Item]:
        return [self._item(rec) for rec in self._records()]

    def get_filtered(self, filters: Iterable[Any]) -> Iterable[tuple[radicale_item.Item, bool]]:
        """Calendars: Radicale's prefilter on the stored time ranges (no parsing of what is out of range).

        Address books: a simple text query (one text-match on a plain text property)
        first drops every card whose raw text cannot contain the needle, so only
        candidates are parsed by Radicale's full filter (RFC 6352 §10.5.4).
        """
        window = getattr(EXPAND_HINT, "window", None)
        if window is not None and self.tag == "VCALENDAR":
            # RFC 4791 §9.6.5 with expand: Radicale drops the time range before retrieval and
            # applies it after expanding every item. An item whose whole span (recurrences
            # included) misses the range yields nothing then, so it is skipped unparsed.
            start, end = window
            # As Radicale's own prefilter: the component tag, and "fully matched" when the
            # remaining filter is that simple (Radicale then parses nothing before expanding).
            tag, fstart, fend, simple = radicale_filter.simplify_prefilters(filters, "VCALENDAR")
            for rec in self._records():
                if (tag is None or rec.component == tag) and rec.start < end and rec.end > start:
                    if rec.start < fend and rec.end > fstart:
                        yield self._item(rec), simple and (fstart <= rec.start or rec.end <= fend)
            return
        needle = card_prefilter(list(filters)) if self.tag == "VADDRESSBOOK" else None
        if needle is None:
            yield from super().get_filtered(filters)
            return
        text, case_sensitive = needle
        for rec in self._records():
            if may_contain(rec.text, text, case_sensitive):
                yield self._item(rec), False

    def get(self, href: str) -> radicale_item.Item | None:
        rec = self._backend.dav.read(self._account_id, store_dav.get_item, self._record.path, href)
        return None if rec is None else self._item(rec)

    def has_uid(self, uid: str) -> bool:
        """One UID-index lookup (RFC 4791 §5.3.2.1 no-uid-conflict)."""
        return self._backend.dav.read(self._account_id, store_dav.has_uid, self._record.path, uid)

    def upload(self, href: str, item: radicale_item.Item) -> tuple[radicale_item.Item, radicale_item.Item | None]:
        if not pathutils.is_safe_path_component(href):
            raise pathutils.UnsafePathError(href)
        rec = record_of(href, item)
        try:
            stored, old = self._backend.dav.write(
                self._account_id, lambda w: store_dav.put_item(w, self._record.path, rec, max_items=self._backend.max_items))
        except store_dav.CollectionFull:
            raise ValueError(_FULL) from None
        except store_dav.CollectionMissing:
            raise ValueError("the collection was deleted") from None
        dav_metrics.ITEMS_WRITTEN.labels(rec.name.lower()).inc()
        self._record.last_seq = stored.seq
        return self._item(stored), None if old is None else self._item(old)

    def delete(self, href: str | None = None) -> None:
        if href is None:
            self._backend.dav.write(self._account_id, store_dav.delete_collection, self._record.path)
            return
        old = self._backend.dav.write(self._account_id, store_dav.delete_item, self._record.path, href)
        if old is None:
            raise storage.ComponentNotFoundError(href)


class RootCollection(storage.BaseCollection):
    """``/dav/`` itself: no properties, no items."""

    @property
    def path(self) -> str:
        return ""

    def get_meta(self, key: str | None = None) -> Any:
        return {} if key is None else None

    def get_all(self) -> Iterable[radicale_item.Item]:
        return []

    def get_multi(self, hrefs: Iterable[str]) -> Iterable[tuple[str, radicale_item.Item | None]]:
        return [(href, None) for href in hrefs]

    @property
    def etag(self) -> str:
        return '"root"'

    @property
    def last_modified(self) -> str:
        return http_date(0)


def record_of(href: str, item: radicale_item.Item) -> ItemRecord:
    """What the store keeps of an item, computed once (reports never reparse)."""
    start, end = item.time_range
    return ItemRecord(href=href, text=item.serialize(), etag=item.etag, uid=item.uid, name=item.name,
                      component=item.component_name, start=start, end=end)


#: vCard properties whose parsed value is their unescaped text (structured ones like N are not).
_PLAIN_CARD_PROPS = frozenset({"FN", "EMAIL", "TEL", "UID", "NOTE", "TITLE", "URL", "NICKNAME", "ROLE"})
_CR = "{urn:ietf:params:xml:ns:carddav}"


def card_prefilter(filters: list[Any]) -> tuple[str, bool] | None:
    """(needle, case sensitive) when the query is one positive text-match on a plain property."""
    if len(filters) != 1 or len(filters[0]) != 1:
        return None
    prop = filters[0][0]
    if prop.tag != _CR + "prop-filter" or prop.get("name", "").upper() not in _PLAIN_CARD_PROPS or len(prop) != 1:
        return None
    match = prop[0]
    if match.tag != _CR + "text-match" or match.get("negate-condition") == "yes":
        return None
    case_sensitive = match.get("collation") == "i;octet"
    text = next(match.itertext(), "")
    return (text if case_sensitive else text.lower()), case_sensitive


def may_contain(raw: str, needle: str, case_sensitive: bool) -> bool:
    """False only when no property value of the card can contain ``needle`` (every match type needs it)."""
    if "ENCODING=" in raw.upper():
        return True  # encoded values are decoded by the parser: let the full filter decide
    text = raw.replace("\r\n ", "").replace("\r\n\t", "").replace("\n ", "").replace("\n\t", "")
    text = (text.replace("\\\\", "\x00").replace("\\,", ",").replace("\\;", ";")
            .replace("\\n", "\n").replace("\\N", "\n").replace("\x00", "\\"))
    return needle in (text if case_sensitive else text.lower())


def _null_context(path: str, href: str | None) -> ContextManager[None]:
    return contextlib.nullcontext()


class Storage(storage.BaseStorage):
    """The one storage object Radicale's app and sharing module share."""

    _is_collision_free = True
    _supports_unicode = True  # names are hashed: any href is fine
    _supports_trailing_whitespace = True
    _supports_problematic_chars = True

    def __init__(self, configuration: Any, dav: DavStore, *, max_items: int = 0,
                 virtual: Mapping[str, Callable[["Storage", bytes, str], storage.BaseCollection]] | None = None,
                 dynamic: Iterable[Any] = ()) -> None:
        super().__init__(configuration)
        self.dav = dav
        self.max_items = max_items
        # Read-only collections generated per home (the school directory): name → factory.
        self.virtual = dict(virtual or {})
        # Generated collections whose names vary per user (group books, groupbooks.py): providers
        # with is_reserved(name), lookup(storage, account_id, owner, name) and all(storage, account_id, owner).
        self.dynamic = list(dynamic)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- lookups -------------------------------------------------------------------

    def _account(self, owner: str) -> bytes | None:
        try:
            address = normalize_address(owner)
        except AccountError:
            return None
        if address != owner:
            return None  # one spelling per home: the normalised address
        return self.dav.account_id(address)

    def _collection(self, account_id: bytes, owner: str, rel: str) -> storage.BaseCollection | None:
        if rel in self.virtual:
            return self.virtual[rel](self, account_id, owner)
        for provider in self.dynamic:
            if provider.is_reserved(rel):
                return provider.lookup(self, account_id, owner, rel)
        if store_dav.is_internal(rel):
            return None
        rec = self.dav.read(account_id, store_dav.get_collection, rel)
        if rec is None:
            if rel:
                return None
            rec = CollectionRecord(path="", incarnation="home")  # the home exists with the account
        return Collection(self, account_id, owner, rec)

    def discover(self, path: str, depth: str = "0",
                 child_context_manager: Callable[[str, str | None], ContextManager[None]] | None = None,
                 user_groups: set[str] = set()) -> Iterator[types.CollectionOrItem]:
        context = child_context_manager or _null_context
        owner, rel = split_path(path)
        if not owner:
            yield RootCollection()
            return  # never enumerate the accounts
        account_id = self._account(owner)
        if account_id is None:
            return
        coll = self._collection(account_id, owner, rel)
        if coll is None:
            parent, _, href = rel.rpartition("/")
            holder = self._collection(account_id, owner, parent) if parent else None
            if holder is not None and holder.tag:
                found = holder.get(href)  # type: ignore[attr-defined]
                if found is not None:
                    yield found
            return
        yield coll
        if depth == "0":
            return
        sane = pathutils.strip_path(path)
        if coll.tag:
            for item in coll.get_all():
                with context(sane, item.href):
                    yield item
            return
        children = self.dav.read(account_id, store_dav.child_collections, rel)
        for rec in children:
            with context(f"{owner}/{rec.path}", None):
                yield Collection(self, account_id, owner, rec)
        if not rel:
            for name, factory in self.virtual.items():
                with context(f"{owner}/{name}", None):
                    yield factory(self, account_id, owner)
            for provider in self.dynamic:
                for generated in provider.all(self, account_id, owner):
                    with context(f"{owner}/{generated.path.partition('/')[2]}", None):
                        yield generated

    def create_collection(self, href: str, items: Iterable[radicale_item.Item] | None = None,
                          props: Mapping[str, str] | None = None
                          ) -> tuple[storage.BaseCollection, dict[str, radicale_item.Item], list[str]]:
        owner, rel = split_path(href)
        account_id = self._account(owner)
        if account_id is None:
            raise ValueError("no such home")
        if rel in self.virtual or store_dav.is_internal(rel) or any(p.is_reserved(rel) for p in self.dynamic):
            raise ValueError("reserved collection name")
        if not props:
            if rel:  # a plain collection (MKCOL without a type)
                rec = self.dav.write(account_id, store_dav.create_collection, rel, {}, (), replace=False)
            else:
                rec = CollectionRecord(path="", incarnation="home")
            return Collection(self, account_id, owner, rec), {}, []
        tag = props.get("tag")
        suffix = ".ics" if tag == "VCALENDAR" else ".vcf" if tag == "VADDRESSBOOK" else ""
        records: list[ItemRecord] = []
        if tag and items is not None:
            taken: set[str] = set()
            for item in items:
                records.append(record_of(_free_href(item.uid, suffix, taken), item))
        old = self.dav.read(account_id, lambda v: {r.href: r for r in store_dav.all_items(v, rel)})
        rec = self.dav.write(account_id, store_dav.create_collection, rel, dict(props), records)
        coll = Collection(self, account_id, owner, rec)
        replaced = {r.href: coll._item(old[r.href]) for r in records if r.href in old}
        return coll, replaced, [r.href for r in records if r.href not in old]

    def move(self, item: radicale_item.Item, to_collection: storage.BaseCollection, to_href: str) -> None:
        source = item.collection
        if not isinstance(source, Collection) or not isinstance(to_collection, Collection):
            raise ValueError("cannot move into or out of a generated collection")
        if source._account_id != to_collection._account_id:
            raise ValueError("items move only within one home")
        if not pathutils.is_safe_path_component(to_href):
            raise pathutils.UnsafePathError(to_href)
        assert item.href
        self.dav.write(source._account_id, store_dav.move_item, source._record.path, item.href,
                       to_collection._record.path, to_href)

    @types.contextmanager
    def acquire_lock(self, mode: str, user: str = "", *args: Any, **kwargs: Any) -> Iterator[None]:
        """Exclusive per user for "w"; nothing for "r" (each read is a snapshot)."""
        if mode != "w":
            yield
            return
        with self._locks_guard:
            lock = self._locks.setdefault(user, threading.Lock())
        with lock:
            yield

    def verify(self) -> bool:
        return True


def _free_href(uid: str, suffix: str, taken: set[str]) -> str:
    """The href of an item of a whole-collection PUT: its UID where that is a safe name."""
    candidates = [uid if uid.lower().endswith(suffix) else uid + suffix,
                  radicale_item.get_etag(uid).strip('"') + suffix]
    for href in candidates:
        if pathutils.is_safe_path_component(href) and href not in taken:
            taken.add(href)
            return href
    href = radicale_item.find_available_uid(lambda h: h in taken, suffix)
    taken.add(href)
    return href
