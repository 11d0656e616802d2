"""The audit log of administrative actions: who, what, when; never content or secrets.

Entries are written inside the transaction that makes the change they
describe, so the log and the data can never disagree: an action that rolled
back left no entry, and every committed action has one.

Entries name accounts (personal data), so they are kept only
``[audit] retention_days``: :class:`Retention` deletes older ones when the
server starts and then once a day, and notes each purge in the log itself.
"""

from __future__ import annotations

import getpass
import time
from typing import Any

from twisted.internet import task
from twisted.logger import Logger

from ..storage import Store, WriteTxn
from ..storage import admin as records
from ..storage.admin import AuditEntry


def record(txn: WriteTxn, actor: str, action: str, target: str, detail: str = "") -> None:
    """Append one entry inside ``txn`` (``action`` like ``user.create``; ``detail`` names fields, not values of secrets)."""
    records.append_audit(txn, AuditEntry(time=time.time(), actor=actor, action=action, target=target,
                                         detail=detail))


def entries(store: Store, since: float = 0.0, limit: int | None = None) -> list[AuditEntry]:
    """The newest ``limit`` entries from ``since`` on, oldest first."""
    with store.read() as txn:
        found = list(records.scan_audit(txn, since))
    return found if limit is None else found[-limit:]


#: Entries deleted per transaction: a first purge of years of entries never holds the writer long.
PURGE_BATCH = 5000
DAY = 86400.0
RETENTION_ACTOR = "retention"

log = Logger(namespace="schoolsuite.audit")


def purge(store: Store, retention_days: int, now: float | None = None) -> int:
    """Delete the entries older than ``retention_days``; returns how many (noted in the log when any).

    Blocking (write transactions): run it on the store writer.
    """
    before = (time.time() if now is None else now) - retention_days * DAY
    total = 0
    while True:
        with store.write() as txn:
            deleted = records.purge_audit(txn, before, PURGE_BATCH)
            total += deleted
            if deleted < PURGE_BATCH and total:
                record(txn, RETENTION_ACTOR, "audit.purge", "",
                       f"{total} entries older than {retention_days} days")
        if deleted < PURGE_BATCH:
            return total


class Retention:
    """Runs :func:`purge` on the store writer when started, then every day."""

    def __init__(self, store: Store, writer: Any, retention_days: int, reactor: Any) -> None:
        self._store = store
        self._writer = writer
        self.retention_days = retention_days
        self._loop = task.LoopingCall(self._purge)
        self._loop.clock = reactor

    def start(self) -> None:
        self._loop.start(DAY, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _purge(self) -> None:
        d = self._writer.run(purge, self._store, self.retention_days)
        d.addCallback(self._purged)
        d.addErrback(lambda f: log.failure("audit log purge failed", f))  # tried again tomorrow

    def _purged(self, count: int) -> None:
        if count:
            log.info("audit log: {count} entries older than {days} days deleted", count=count,
                     days=self.retention_days)


def cli_actor() -> str:
    """Who runs the command line (the Unix user), for entries written by ``schoolsuite`` commands."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no passwd entry (containers)
        return "cli:?"


__all__ = ["AuditEntry", "Retention", "cli_actor", "entries", "purge", "record"]
