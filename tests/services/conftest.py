"""Fixtures of the services tests: a fake reactor and an auth service (store and accounts: tests/conftest.py)."""

from __future__ import annotations

import pytest
from twisted.internet import task

from schoolsuite.services.auth import AuthService
from schoolsuite.services.throttle import Throttle
from schoolsuite.storage import Store

from svc_helpers import Verifications


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
