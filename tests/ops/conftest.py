"""Fixtures of the operations tests: one running server per module, with an admin token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
import signal
import threading
from pathlib import Path

import pytest

from ops_helpers import Client, make_token
from schoolsuite.instance import init_instance
from support import LISTENERS, Instance, Running, free_port, schoolsuite_cmd, start_server


@dataclass
class Served:
    instance: Instance
    run: Running
    token: str

    def client(self, token: str | None = "default") -> Client:
        return Client(self.instance, self.token if token == "default" else token)


def listening_count() -> int:
    """How many "listening:" lines a server with every listener enabled prints (protocols land over time)."""
    from schoolsuite import server

    server.load_protocols()
    return sum(1 for name in LISTENERS if name in server.PROTOCOL_FACTORIES)


def serve(inst: Instance) -> Running:
    """``schoolsuite serve`` with its log drained in the background (a full pipe would block the reactor)."""
    run = start_server(schoolsuite_cmd("serve", "-c", str(inst.config)), expect=listening_count())
    stdout = run.proc.stdout
    assert stdout is not None
    drain = threading.Thread(target=lambda: run.head.extend(iter(stdout.readline, "")), daemon=True)
    drain.start()

    def stop(timeout: float = 20) -> int:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
        try:
            run.proc.wait(timeout)
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
        drain.join(5)
        run.out = "".join(run.head)
        run.err = run.proc.stderr.read() if run.proc.stderr is not None else ""
        return run.proc.returncode

    run.stop = stop  # type: ignore[method-assign]
    return run


def new_instance(root: Path) -> Instance:
    inst = Instance(root / "inst", init_instance(root / "inst", "school.example", "localhost"))
    for name in LISTENERS:
        inst.ports[name] = free_port()
        inst.set_listener(name, endpoint=f"tcp:{inst.ports[name]}:interface=127.0.0.1")
    return inst


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A running server (module-wide) and an admin token for it."""
    inst = new_instance(tmp_path_factory.mktemp("ops"))
    token = make_token(inst, "portal")
    run = serve(inst)
    yield Served(inst, run, token)
    if run.proc.poll() is None:
        run.stop()
