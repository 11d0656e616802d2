"""Helpers shared by the storage tests (imported as a plain module: tests/ has no packages).

``BACKENDS`` is the one place to add a backend to the contract suite: a name
and a function ``(directory, master_key) -> Store``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import lmdb

from schoolsuite.storage import accounts
from schoolsuite.storage.store import Store

#: Small enough for tests, sparse anyway.
TEST_MAP_SIZE = 1 << 32


def open_lmdb(directory: Path, master_key: bytes) -> Store:
    """The LMDB backend in ``directory/data``."""
    return Store.open(directory / "data", master_key, map_size=TEST_MAP_SIZE)


#: name -> opener. The one place to add a backend to the contract suite.
BACKENDS: dict[str, Callable[[Path, bytes], Store]] = {
    "lmdb": open_lmdb,
}


def make_account(store: Store, address: str, **kw: object) -> bytes:
    """Create an account in its own transaction; returns its id."""
    with store.write() as txn:
        return accounts.create_account(txn, address, **kw).id  # type: ignore[arg-type]


def raw_items(data_dir: Path, db: bytes) -> dict[bytes, bytes]:
    """Every (key, value) of one named LMDB database, read with the store closed."""
    env = lmdb.open(str(data_dir), max_dbs=16, readonly=True, lock=False, map_size=TEST_MAP_SIZE)
    try:
        with env.begin() as txn:
            return dict(txn.cursor(db=env.open_db(db, txn=txn, create=False)))
    finally:
        env.close()


def wait_until(until: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``until()`` (a store's background thread at work) until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)
