"""Fixtures of the operations tests: one running server per module, with an admin token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ops_helpers import Served, make_token, new_instance, serve


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A running server (module-wide) and an admin token for it."""
    inst = new_instance(tmp_path_factory.mktemp("ops"))
    token = make_token(inst, "portal")
    run = serve(inst)
    yield Served(inst, run, token)
    if run.proc.poll() is None:
        run.stop()
