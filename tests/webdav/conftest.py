"""Fixtures of the WebDAV tests: one running server with three accounts for the whole module."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from webdav_helpers import FilesServer
from support import stop_process
from webdav_server import start_files_server


@pytest.fixture(scope="module")
def files_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FilesServer]:
    """``schoolsuite serve`` (https and metrics) with alice, bob (1 MiB quota) and carol; its log ends clean."""
    base = tmp_path_factory.mktemp("webdav")
    server, proc = start_files_server(base)
    yield server
    stop_process(proc)
    time.sleep(0.2)  # let the drain threads write the last lines
    log = (base / "server.log").read_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 300:][:3000]


@pytest.fixture
def alice(files_server: FilesServer):  # type: ignore[no-untyped-def]
    return files_server.client("alice@school.example")


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A collection name no other test uses."""
    return "t-" + request.node.name.replace("[", "-").replace("]", "").replace("/", "_")[:60] + "-" + os.urandom(3).hex()
