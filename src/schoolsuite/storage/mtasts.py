"""Cached MTA-STS policies of remote mail domains (RFC 8461 §5.1), sealed directory records.

A policy is kept until its ``max_age`` runs out, also across restarts: that
is what protects delivery when an attacker blocks the policy fetch. Records
live in the ``directory`` database under the prefix letter ``M``:

=====================================  ==================================================
key                                    value (sealed with the directory key)
=====================================  ==================================================
``M`` + keyed hash of the domain       JSON: domain, policy id, mode, mx patterns,
                                       max_age, time fetched
=====================================  ==================================================

The key says nothing of the domain (keyed hash); the value, sealed, names
it. A domain is not user content, but the set of cached domains shows whom
the school's users write to, so nothing here is ever in clear.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from .store import ReadTxn, WriteTxn

PREFIX = b"M"


@dataclass(frozen=True)
class StoredPolicy:
    """One domain's cached policy (the parsed fields, not the file)."""

    domain: str
    policy_id: str
    mode: str
    mx: tuple[str, ...]
    max_age: int
    fetched: float

    @property
    def expires(self) -> float:
        return self.fetched + self.max_age


def _key(txn: ReadTxn, domain: str) -> bytes:
    return PREFIX + txn.address_hash("mta-sts:" + domain.lower())


def _load(raw: bytes) -> StoredPolicy | None:
    try:
        data = json.loads(raw)
        return StoredPolicy(str(data["domain"]), str(data["policy_id"]), str(data["mode"]),
                            tuple(str(m) for m in data["mx"]), int(data["max_age"]), float(data["fetched"]))
    except (ValueError, KeyError, TypeError):
        return None  # written by a later version in a shape this one does not know: as if absent


def get_policy(txn: ReadTxn, domain: str) -> StoredPolicy | None:
    raw = txn.directory_get(_key(txn, domain))
    return None if raw is None else _load(raw)


def put_policy(txn: WriteTxn, policy: StoredPolicy) -> None:
    data = asdict(policy)
    data["mx"] = list(policy.mx)
    txn.directory_put(_key(txn, policy.domain), json.dumps(data, separators=(",", ":")).encode())


def delete_policy(txn: WriteTxn, domain: str) -> bool:
    return txn.directory_delete(_key(txn, domain))


def scan_policies(txn: ReadTxn) -> Iterator[tuple[bytes, StoredPolicy | None]]:
    """(key, policy) of every cached policy (None where a record cannot be read)."""
    for key, _ in txn.directory_scan(PREFIX):
        raw = txn.directory_get(key)
        yield key, None if raw is None else _load(raw)


def purge_expired(txn: WriteTxn, now: float) -> int:
    """Delete the records whose policy expired before ``now``; how many were deleted."""
    stale = [key for key, policy in scan_policies(txn) if policy is None or policy.expires <= now]
    for key in stale:
        txn.directory_delete(key)
    return len(stale)
