"""The school directory: a read-only address book in every home, made from the accounts.

``/dav/ADDRESS/school-directory/`` lists every active account as a vCard 3.0
(RFC 2426: FN, N, EMAIL, UID), so a teacher's phone finds every colleague
without anyone typing an address. Nothing is stored: the cards are generated
from the account directory on each read, so they follow account changes at
once. The CTag and sync token are a hash of the cards; the process keeps the
last states it handed out, so a sync from one of them lists what changed; an
older token (or one from before a restart) gets ``valid-sync-token`` (RFC 6578
§3.2) and the client lists the book again by ETag.

:class:`GeneratedBook` is that machinery for any generated read-only book;
the group books (``groupbooks.py``) use it too.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from radicale import item as radicale_item
from radicale import storage

from .plugin_storage import TOKEN_PREFIX, http_date

NAME = "school-directory"
#: Per generated book name (the same for every home that has it): its states by sync token,
#: newest last; kept in memory only, a few per book so one busy book does not evict another's.
_STATES: dict[str, OrderedDict[str, dict[str, str]]] = {}
_STATES_MAX = 16
_STATES_LOCK = threading.Lock()
PROPS = {
    "tag": "VADDRESSBOOK",
    "D:displayname": "School directory",
    "CR:addressbook-description": "Everyone at school (read-only)",
}


def _escape(text: str) -> str:
    """RFC 2426 §4: escape backslash, comma, semicolon and newline in text values."""
    return (text.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;")
            .replace("\r\n", "\\n").replace("\n", "\\n"))


def vcard(account_id: bytes, address: str, name: str, uid: str | None = None) -> str:
    """One account's card (vCard 3.0, RFC 2426)."""
    display = name.strip() or address
    parts = display.rsplit(" ", 1) if name.strip() else [display]
    family, given = (parts[1], parts[0]) if len(parts) == 2 else (parts[0], "")
    lines = [
        "BEGIN:VCARD",
        "VERSION:3.0",
        f"UID:{uid or f'schoolsuite-directory-{account_id.hex()}'}",
        f"FN:{_escape(display)}",
        f"N:{_escape(family)};{_escape(given)};;;",
        f"EMAIL;TYPE=INTERNET,WORK:{_escape(address)}",
        "END:VCARD",
    ]
    return "\r\n".join(lines) + "\r\n"


class GeneratedBook(storage.BaseCollection):
    """A read-only address book made on each read (rights give "r" only).

    Subclasses give ``name`` (the collection's name in the home), ``props`` and
    ``cards()`` → (href, uid, vCard text, created) of every card.
    """

    name = ""
    props: dict[str, str] = {}
    refusal = "this address book is read-only"

    def __init__(self, backend: Any, account_id: bytes, owner: str) -> None:
        self._backend = backend
        self._account_id = account_id
        self._owner = owner
        self._items: list[radicale_item.Item] | None = None

    @property
    def path(self) -> str:
        return f"{self._owner}/{self.name}"

    @property
    def owner(self) -> str:
        return self._owner

    def cards(self) -> list[tuple[str, str, str, float]]:
        raise NotImplementedError

    def _all(self) -> list[radicale_item.Item]:
        if self._items is None:
            self._items = [radicale_item.Item(
                collection=self, href=href, text=text, etag=radicale_item.get_etag(text), uid=uid,
                name="VCARD", component_name="VCARD", time_range=(0, 2**62), last_modified=http_date(created))
                for href, uid, text, created in self.cards()]
        return self._items

    def get_meta(self, key: str | None = None) -> Any:
        return dict(self.props) if key is None else self.props.get(key)

    def set_meta(self, props: Any) -> None:
        raise ValueError(self.refusal)

    @property
    def etag(self) -> str:
        """The CTag: a hash of every card's href and ETag (changes with any card)."""
        digest = hashlib.sha256()
        for item in self._all():
            digest.update(f"{item.href}/{item.etag}\n".encode())
        return f'"{digest.hexdigest()[:32]}"'

    @property
    def last_modified(self) -> str:
        return http_date(time.time())

    def sync(self, old_token: str = "") -> tuple[str, Iterable[str]]:
        """RFC 6578 against the states this process handed out; unknown tokens resync."""
        state = {item.href: item.etag for item in self._all() if item.href}
        prefix = f"{TOKEN_PREFIX}{self.token_name}-"
        token = prefix + self.etag.strip(chr(34))
        with _STATES_LOCK:
            states = _STATES.setdefault(self.token_name, OrderedDict())
            states[token] = state
            states.move_to_end(token)
            while len(states) > _STATES_MAX:
                states.popitem(last=False)
            # A token of another generated book is refused, not compared (RFC 6578 §3.2).
            old = states.get(old_token) if old_token.startswith(prefix) else None
        if not old_token:
            return token, list(state)
        if old is None:
            raise ValueError("unknown token of a generated book (e.g. from before a restart); list it again")
        return token, [h for h in state if old.get(h) != state[h]] + [h for h in old if h not in state]

    @property
    def token_name(self) -> str:
        return self.name

    def get_all(self) -> Iterable[radicale_item.Item]:
        return list(self._all())

    def get(self, href: str) -> radicale_item.Item | None:
        return next((item for item in self._all() if item.href == href), None)

    def get_multi(self, hrefs: Iterable[str]) -> Iterable[tuple[str, radicale_item.Item | None]]:
        by_href = {item.href: item for item in self._all()}
        return [(href, by_href.get(href)) for href in dict.fromkeys(hrefs)]

    def has_uid(self, uid: str) -> bool:
        return any(item.uid == uid for item in self._all())

    def upload(self, href: str, item: Any) -> Any:
        raise ValueError(self.refusal)

    def delete(self, href: str | None = None) -> None:
        raise ValueError(self.refusal)


class DirectoryCollection(GeneratedBook):
    """The school directory: every active account."""

    name = NAME
    props = PROPS
    refusal = "the school directory is read-only"

    @property
    def token_name(self) -> str:
        return "directory"  # tokens handed out before the GeneratedBook split keep their form

    def cards(self) -> list[tuple[str, str, str, float]]:
        entries = sorted(self._backend.dav.directory_entries(), key=lambda e: e[1])
        return [(f"{account_id.hex()}.vcf", f"schoolsuite-directory-{account_id.hex()}",
                 vcard(account_id, address, name), created)
                for account_id, address, name, created in entries]


def factory(backend: Any, account_id: bytes, owner: str) -> DirectoryCollection:
    return DirectoryCollection(backend, account_id, owner)
