"""Fixtures of the services tests: a store, an account service, a fake reactor."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet import defer, task

from schoolsuite.services.accounts import AccountService
from schoolsuite.services.auth import AuthService
from schoolsuite.services.throttle import Throttle
from schoolsuite.storage import Store

from svc_helpers import PASSWORD, Verifications  # noqa: F401


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "data", os.urandom(32), map_size=1 << 30)
    yield s
    s.close()


@pytest.fixture
def accounts(store: Store) -> AccountService:
    return AccountService(store)


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


@pytest.fixture
def verifications() -> Verifications:
    return Verifications()


@pytest.fixture
def auth(store: Store, clock: task.Clock, verifications: Verifications) -> AuthService:
    throttle = Throttle(delay_after=3, delay_max=30, block_after_account=6, block_after_client=20,
                        block_seconds=900)
    return AuthService(store, throttle, clock, run_in_thread=verifications)
