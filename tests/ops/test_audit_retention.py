"""The audit log names accounts (personal data): entries older than [audit] retention_days are deleted."""

from __future__ import annotations

import time

from twisted.internet import defer
from twisted.internet.task import Clock

from ops_helpers import cli, new_instance, serve
from schoolsuite.config import load_config
from schoolsuite.instance import open_store
from schoolsuite.services import audit
from schoolsuite.storage import admin as records
from schoolsuite.storage.admin import AuditEntry

DAY = 86400.0


def _entry(store, age_days: float, target: str) -> None:
    with store.write() as txn:
        records.append_audit(txn, AuditEntry(time=time.time() - age_days * DAY, actor="cli:test",
                                             action="user.create", target=target))


def _targets(store) -> list[str]:
    return [e.target for e in audit.entries(store) if e.action == "user.create"]


def test_purge_deletes_only_what_is_older_than_the_retention(store):
    """Entries older than retention_days go, younger ones stay; the purge itself is noted once, with its count."""
    for n in range(3):
        _entry(store, 40 + n, f"old{n}@school.example")
    _entry(store, 20, "young@school.example")
    assert audit.purge(store, 30) == 3
    assert _targets(store) == ["young@school.example"]
    purges = [e for e in audit.entries(store) if e.action == "audit.purge"]
    assert [(e.actor, e.detail) for e in purges] == [("retention", "3 entries older than 30 days")]


def test_purge_in_batches_deletes_everything_old(store, monkeypatch):
    """A first purge of more entries than one transaction takes deletes them all, and notes one purge."""
    monkeypatch.setattr(audit, "PURGE_BATCH", 4)
    for n in range(11):
        _entry(store, 100 + n, f"old{n}@school.example")
    assert audit.purge(store, 30) == 11
    assert _targets(store) == []
    assert [e.detail for e in audit.entries(store) if e.action == "audit.purge"] == ["11 entries older than 30 days"]


def test_nothing_to_purge_writes_nothing(store):
    """With no entry old enough, the log is left as it is (no purge entry every day)."""
    _entry(store, 1, "young@school.example")
    assert audit.purge(store, 30) == 0
    assert [e.action for e in audit.entries(store)] == ["user.create"]


class _SyncWriter:
    """The store writer, run at once (the purge's transactions are the store's own)."""

    def __init__(self):
        self.runs = 0

    def run(self, fn, *args):
        self.runs += 1
        return defer.succeed(fn(*args))


def test_retention_runs_at_start_and_then_daily(store):
    """Retention.start purges at once and again each day, until stopped."""
    clock, writer = Clock(), _SyncWriter()
    retention = audit.Retention(store, writer, 30, clock)
    _entry(store, 31, "a@school.example")
    retention.start()
    assert writer.runs == 1 and _targets(store) == []
    _entry(store, 31, "b@school.example")
    clock.advance(DAY - 1)
    assert writer.runs == 1 and _targets(store) == ["b@school.example"]
    clock.advance(1)
    assert writer.runs == 2 and _targets(store) == []
    retention.stop()
    clock.advance(2 * DAY)
    assert writer.runs == 2


def test_serve_purges_old_entries_at_start(tmp_path):
    """``schoolsuite serve`` with retention_days = 7 deletes a 10-day-old entry, keeps a 2-day-old one, and
    says so in its log and in the audit log."""
    inst = new_instance(tmp_path)
    inst.config.write_text(inst.config.read_text().replace("retention_days = 365", "retention_days = 7"))
    store = open_store(load_config(inst.config))
    _entry(store, 10, "left@school.example")
    _entry(store, 2, "stays@school.example")
    store.close()
    run = serve(inst)
    try:
        deadline = time.monotonic() + 15
        while "audit.purge" not in (shown := cli(inst, "audit").stdout):
            assert time.monotonic() < deadline, shown
            time.sleep(0.2)
    finally:
        assert run.stop() == 0
    assert "left@school.example" not in shown and "stays@school.example" in shown
    assert "\tretention\taudit.purge\t\t1 entries older than 7 days" in shown
    assert "audit log: 1 entries older than 7 days deleted" in run.out
