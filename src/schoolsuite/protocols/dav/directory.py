"""The school directory: a read-only address book in every home, made from the accounts.

``/dav/ADDRESS/school-directory/`` lists every active account as a vCard 3.0
(RFC 2426: FN, N, EMAIL, UID), so a teacher's phone finds every colleague
without anyone typing an address. Nothing is stored: the cards are generated
from the account directory on each read, so they follow account changes at
once. The CTag and sync token are a hash of the cards; the process keeps the
last states it handed out, so a sync from one of them lists what changed; an
older token (or one from before a restart) gets ``valid-sync-token`` (RFC 6578
§3.2) and the client lists the book again by ETag.
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
#: Directory states by sync token (the same for every home), newest last; kept in memory only.
_STATES: OrderedDict[str, dict[str, str]] = OrderedDict()
_STATES_MAX = 32
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


def vcard(account_id: bytes, address: str, name: str) -> str:
    """One account's card (vCard 3.0, RFC 2426)."""
    display = name.strip() or address
    parts = display.rsplit(" ", 1) if name.strip() else [display]
    family, given = (parts[1], parts[0]) if len(parts) == 2 else (parts[0], "")
    lines = [
        "BEGIN:VCARD",
        "VERSION:3.0",
        f"UID:schoolsuite-directory-{account_id.hex()}",
        f"FN:{_escape(display)}",
        f"N:{_escape(family)};{_escape(given)};;;",
        f"EMAIL;TYPE=INTERNET,WORK:{_escape(address)}",
        "END:VCARD",
    ]
    return "\r\n".join(lines) + "\r\n"


class DirectoryCollection(storage.BaseCollection):
    """The generated address book (read-only: rights give "r" only)."""

    def __init__(self, backend: Any, account_id: bytes, owner: str) -> None:
        self._backend = backend
        self._owner = owner
        self._items: list[radicale_item.Item] | None = None

    @property
    def path(self) -> str:
        return f"{self._owner}/{NAME}"

    @property
    def owner(self) -> str:
        return self._owner

    def _all(self) -> list[radicale_item.Item]:
        if self._items is None:
            entries = sorted(self._backend.dav.directory_entries(), key=lambda e: e[1])
            self._items = []
            for account_id, address, name, created in entries:
                text = vcard(account_id, address, name)
                self._items.append(radicale_item.Item(
                    collection=self, href=f"{account_id.hex()}.vcf", text=text,
                    etag=radicale_item.get_etag(text), uid=f"schoolsuite-directory-{account_id.hex()}",
                    name="VCARD", component_name="VCARD", time_range=(0, 2**62),
                    last_modified=http_date(created)))
        return self._items

    def get_meta(self, key: str | None = None) -> Any:
        return dict(PROPS) if key is None else PROPS.get(key)

    def set_meta(self, props: Any) -> None:
        raise ValueError("the school directory is read-only")

    @property
    def etag(self) -> str:
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
        token = f"{TOKEN_PREFIX}directory-{self.etag.strip(chr(34))}"
        with _STATES_LOCK:
            _STATES[token] = state
            _STATES.move_to_end(token)
            while len(_STATES) > _STATES_MAX:
                _STATES.popitem(last=False)
            old = _STATES.get(old_token) if old_token else None
        if not old_token:
            return token, list(state)
        if old is None:
            raise ValueError("unknown directory token (e.g. from before a restart); list it again")
        return token, [h for h in state if old.get(h) != state[h]] + [h for h in old if h not in state]

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
        raise ValueError("the school directory is read-only")

    def delete(self, href: str | None = None) -> None:
        raise ValueError("the school directory is read-only")


def factory(backend: Any, account_id: bytes, owner: str) -> DirectoryCollection:
    return DirectoryCollection(backend, account_id, owner)
