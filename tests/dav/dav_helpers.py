"""Helpers of the CalDAV/CardDAV tests: calendar objects, vCards, a storage plugin over a temp store."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from radicale import item as radicale_item

from schoolsuite.protocols.dav.app import radicale_configuration
from schoolsuite.protocols.dav.directory import NAME as DIRECTORY, factory as directory_factory
from schoolsuite.protocols.dav.plugin_storage import Storage
from schoolsuite.storage import Store
from schoolsuite.storage import accounts as directory
from schoolsuite.storage.dav import DavStore

PASSWORD = "Correct-horse-42-battery"


def event(uid: str, start: str = "20260105T100000Z", end: str = "20260105T110000Z",
          summary: str = "Konferenz", rrule: str | None = None) -> str:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//schoolsuite tests//EN", "BEGIN:VEVENT",
             f"UID:{uid}", "DTSTAMP:20260101T000000Z", f"DTSTART:{start}", f"DTEND:{end}",
             f"SUMMARY:{summary}"]
    if rrule:
        lines.append(f"RRULE:{rrule}")
    lines += ["END:VEVENT", "END:VCALENDAR"]
    return "\r\n".join(lines) + "\r\n"


def todo(uid: str, summary: str = "Hefte korrigieren", status: str = "NEEDS-ACTION") -> str:
    return "\r\n".join(["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//schoolsuite tests//EN", "BEGIN:VTODO",
                        f"UID:{uid}", "DTSTAMP:20260101T000000Z", "DUE:20260110T120000Z",
                        f"SUMMARY:{summary}", f"STATUS:{status}", "END:VTODO", "END:VCALENDAR"]) + "\r\n"


def vcard(uid: str, name: str = "Jörg Müller", email: str = "joerg@example.org") -> str:
    return "\r\n".join(["BEGIN:VCARD", "VERSION:3.0", f"UID:{uid}", f"FN:{name}", f"N:{name};;;;",
                        f"EMAIL:{email}", "END:VCARD"]) + "\r\n"


def prepared(text: str, collection_path: str) -> radicale_item.Item:
    """A Radicale item as the PUT handler hands it to ``upload``."""
    vobject_item, = radicale_item.read_components(text)
    item = radicale_item.Item(collection_path=collection_path, vobject_item=vobject_item)
    item.prepare()
    return item


@dataclass
class Backend:
    store: Store
    dav: DavStore
    storage: Storage
    path: Path


def open_backend(path: Path, master_key: bytes, *, max_items: int = 0) -> Backend:
    """The storage plugin over a store in ``path`` (writes run inline)."""
    store = Store.open(path, master_key, map_size=1 << 30)
    dav = DavStore(store)
    configuration = radicale_configuration(lambda c: None, lambda c: None, lambda c: None, 1 << 20, 1 << 24)
    storage = Storage(configuration, dav, max_items=max_items, virtual={DIRECTORY: directory_factory})
    return Backend(store, dav, storage, path)


def make_account(store: Store, address: str, name: str = "") -> bytes:
    with store.write() as txn:
        return directory.create_account(txn, address, name=name).id


def new_key() -> bytes:
    return os.urandom(32)
