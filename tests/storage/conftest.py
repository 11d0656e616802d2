"""Fixtures of the storage tests: a store per backend, accounts.

The contract tests take the ``store`` fixture, parametrized over
``storehelp.BACKENDS``; tests that inspect LMDB itself take ``lmdb_store``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from storehelp import BACKENDS, make_account, open_lmdb

from schoolsuite.storage.store import Store


@pytest.fixture
def master_key() -> bytes:
    """A fresh 32-byte master key."""
    return os.urandom(32)


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path, master_key: bytes) -> Iterator[Store]:
    """An empty open store of each backend; closed afterwards."""
    s = BACKENDS[request.param](tmp_path, master_key)
    yield s
    s.close()


@pytest.fixture
def lmdb_store(tmp_path: Path, master_key: bytes) -> Iterator[Store]:
    """An empty open store of the LMDB backend, for tests that inspect LMDB itself."""
    s = open_lmdb(tmp_path, master_key)
    yield s
    s.close()


@pytest.fixture
def alice(store: Store) -> bytes:
    """Account id of alice@school.example in ``store``."""
    return make_account(store, "alice@school.example", name="Alice")


@pytest.fixture
def bob(store: Store) -> bytes:
    """Account id of bob@school.example in ``store``."""
    return make_account(store, "bob@school.example", name="Bob")
