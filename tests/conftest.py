"""Shared fixtures: free ports, a ready instance, a running server (helpers in support.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from schoolsuite.instance import init_instance
from schoolsuite.services.accounts import AccountService
from schoolsuite.storage import Store
from support import LISTENERS, Instance, Running, active_listeners, free_port, schoolsuite_cmd, start_server


@pytest.fixture(name="free_port")
def free_port_fixture() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_port()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """An empty sealed store under a fresh master key (areas may override it)."""
    s = Store.open(tmp_path / "data", os.urandom(32), map_size=1 << 30)
    yield s
    s.close()


@pytest.fixture
def accounts(store: Store) -> AccountService:
    """The account service over ``store``."""
    return AccountService(store)


@pytest.fixture
def instance(tmp_path: Path) -> Instance:
    """A fresh instance (hostname localhost) with every listener on a free loopback port."""
    inst = Instance(tmp_path / "inst", init_instance(tmp_path / "inst", "school.example", "localhost"))
    for name in LISTENERS:
        inst.ports[name] = free_port()
        inst.set_listener(name, endpoint=f"tcp:{inst.ports[name]}:interface=127.0.0.1")
    return inst


@pytest.fixture
def running(instance: Instance) -> Iterator[tuple[Instance, Running]]:
    """``schoolsuite serve`` on the instance (https and metrics listening); stopped afterwards."""
    run = start_server(schoolsuite_cmd("serve", "-c", str(instance.config)), expect=active_listeners())
    yield instance, run
    if run.proc.poll() is None:
        run.proc.kill()
        run.proc.wait()
