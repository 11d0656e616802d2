"""Hypothesis state machine: the DAV store against a dict model, sync tokens included."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from schoolsuite.storage import Store
from schoolsuite.storage import accounts as directory
from schoolsuite.storage import dav as store_dav
from schoolsuite.storage.dav import ItemRecord

HREFS = st.sampled_from(["a.ics", "b.ics", "ü.ics", "日本.ics", "e f.ics"])


def record(href: str, uid: str, version: int) -> ItemRecord:
    return ItemRecord(href=href, text=f"text {uid} v{version}", etag=f'"{uid}-{version}"', uid=uid,
                      name="VCALENDAR", component="VEVENT", start=0, end=1)


class DavStoreModel(RuleBasedStateMachine):
    """Random puts, deletes and moves; the store must equal the model and tokens must report every change."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.store = Store.open(self.dir, os.urandom(32), map_size=1 << 28)
        with self.store.write() as txn:
            self.aid = directory.create_account(txn, "m@school.example").id
            store_dav.create_collection(txn.user(self.aid), "cal", {"tag": "VCALENDAR"})
        self.model: dict[str, tuple[str, str]] = {}  # href -> (uid, etag)
        self.tokens: list[tuple[int, dict[str, tuple[str, str]]]] = []
        self.version = 0

    def teardown(self) -> None:
        self.store.close()

    def write(self, fn, *args):  # type: ignore[no-untyped-def]
        with self.store.write() as txn:
            return fn(txn.user(self.aid), *args)

    def read(self, fn, *args):  # type: ignore[no-untyped-def]
        with self.store.read() as txn:
            return fn(txn.user(self.aid), *args)

    @rule(href=HREFS)
    def put(self, href: str) -> None:
        self.version += 1
        uid = self.model.get(href, (f"uid-{href}-{self.version}", ""))[0]
        self.write(store_dav.put_item, "cal", record(href, uid, self.version))
        self.model[href] = (uid, f'"{uid}-{self.version}"')

    @rule(href=HREFS)
    def delete(self, href: str) -> None:
        found = self.write(store_dav.delete_item, "cal", href)
        assert (found is not None) == (href in self.model)
        self.model.pop(href, None)

    @rule(href=HREFS, to=HREFS)
    def move(self, href: str, to: str) -> None:
        if href not in self.model or to in self.model:
            return
        self.write(store_dav.move_item, "cal", href, "cal", to)
        self.model[to] = self.model.pop(href)

    @rule()
    def take_token(self) -> None:
        coll = self.read(store_dav.get_collection, "cal")
        self.tokens.append((coll.last_seq, dict(self.model)))

    @invariant()
    def store_equals_model(self) -> None:
        items = {r.href: (r.uid, r.etag) for r in self.read(lambda v: list(store_dav.all_items(v, "cal")))}
        assert items == self.model
        for href, (uid, _) in self.model.items():
            assert self.read(store_dav.has_uid, "cal", uid)
        coll = self.read(store_dav.get_collection, "cal")
        assert coll.count == len(self.model)

    @invariant()
    def tokens_report_every_change(self) -> None:
        coll = self.read(store_dav.get_collection, "cal")
        for seq, snapshot in self.tokens:
            if seq < coll.min_seq:
                continue  # trimmed: the client is told to resync
            changed = set(self.read(store_dav.changes_since, coll, seq))
            differs = {h for h in set(snapshot) | set(self.model) if snapshot.get(h) != self.model.get(h)}
            assert differs <= changed


def test_dav_store_against_a_model(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The store and its change log agree with a dict model under random operations (with trimming)."""
    monkeypatch.setattr(store_dav, "MAX_TOMBSTONES", 2)
    DavStoreModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                               suppress_health_check=[HealthCheck.too_slow])
    DavStoreModel.TestCase().runTest()
