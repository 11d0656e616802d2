"""Fixtures of the CalDAV/CardDAV tests: one running server per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dav_server import DavServer, make_dav_server


@pytest.fixture(scope="module")
def dav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavServer]:
    """schoolsuite serving https with users anna and bert (stopped after the module)."""
    server = make_dav_server(tmp_path_factory.mktemp("dav") / "inst")
    server.start()
    yield server
    server.stop()
