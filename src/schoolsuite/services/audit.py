"""The audit log of administrative actions: who, what, when; never content or secrets.

Entries are written inside the transaction that makes the change they
describe, so the log and the data can never disagree: an action that rolled
back left no entry, and every committed action has one.
"""

from __future__ import annotations

import getpass
import time

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


def cli_actor() -> str:
    """Who runs the command line (the Unix user), for entries written by ``schoolsuite`` commands."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no passwd entry (containers)
        return "cli:?"


__all__ = ["AuditEntry", "cli_actor", "entries", "record"]
