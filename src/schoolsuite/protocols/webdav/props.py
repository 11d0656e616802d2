"""Dead properties (RFC 4918 §4, §9.2 PROPPATCH) in the store, attached to the entry, not the URL.

WsgiDAV's property-manager interface speaks ref-URLs; the provider records
which entry each URL of the request resolved to (``environ
["schoolsuite.entries"]``), so a lookup needs no second path walk. Because
properties hang off the entry id, a MOVE carries them along for free and a
COPY copies them (storage.files.copy_entry).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from ...storage import files
from .provider import context


class StorePropertyManager:
    """The ``property_manager`` interface of WsgiDAV over the account's records."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __repr__(self) -> str:
        return "StorePropertyManager()"

    def _entry_id(self, norm_url: str, environ: dict[str, Any]) -> bytes | None:
        known = environ.get("schoolsuite.entries", {}).get(norm_url)
        if known is not None:
            return known
        ctx = context(environ)
        parts = [p for p in unquote(norm_url).split("/") if p]
        if not parts or parts[0] != ctx.address:
            return None
        with self._store.read() as txn:
            entry = files.lookup(txn.user(ctx.account_id), [files.normalize_name(n) for n in parts[1:]])
        return None if entry is None else entry.id

    def get_properties(self, norm_url: str, environ: dict[str, Any] | None = None) -> list[str]:
        assert environ is not None
        entry_id = self._entry_id(norm_url, environ)
        if entry_id is None:
            return []
        with self._store.read() as txn:
            return list(files.get_props(txn.user(context(environ).account_id), entry_id))

    def get_property(self, norm_url: str, name: str, environ: dict[str, Any] | None = None) -> bytes | None:
        assert environ is not None
        entry_id = self._entry_id(norm_url, environ)
        if entry_id is None:
            return None
        with self._store.read() as txn:
            return files.get_prop(txn.user(context(environ).account_id), entry_id, name)

    def write_property(self, norm_url: str, name: str, property_value: bytes, dry_run: bool = False,
                       environ: dict[str, Any] | None = None) -> None:
        assert environ is not None and property_value is not None
        entry_id = self._entry_id(norm_url, environ)
        if dry_run or entry_id is None:
            return
        with self._store.write() as txn:
            files.set_prop(txn.user(context(environ).account_id), entry_id, name, property_value)

    def remove_property(self, norm_url: str, name: str, dry_run: bool = False,
                        environ: dict[str, Any] | None = None) -> None:
        assert environ is not None
        entry_id = self._entry_id(norm_url, environ)
        if dry_run or entry_id is None:
            return
        with self._store.write() as txn:
            files.remove_prop(txn.user(context(environ).account_id), entry_id, name)

    def remove_properties(self, norm_url: str, environ: dict[str, Any] | None = None) -> None:
        assert environ is not None
        entry_id = self._entry_id(norm_url, environ)
        if entry_id is None:
            return
        with self._store.write() as txn:
            files.remove_props(txn.user(context(environ).account_id), entry_id)

    def copy_properties(self, src_url: str, dest_url: str, environ: dict[str, Any] | None = None) -> None:
        """Done by storage.files.copy_entry inside the copy's transaction."""

    def move_properties(self, src_url: str, dest_url: str, with_children: bool,
                        environ: dict[str, Any] | None = None) -> None:
        """Nothing to do: properties belong to the entry, which keeps its id when moved."""
