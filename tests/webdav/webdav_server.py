"""Starting a schoolsuite server with three accounts for the WebDAV tests."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from schoolsuite.config import load_config
from schoolsuite.instance import init_instance, open_store
from support import LISTENERS, Instance, free_port, schoolsuite_cmd, start_server
from webdav_helpers import PASSWORD, FilesServer


def make_accounts(config_path: Path) -> str:
    """alice (no quota; plus an app password), bob (1 MiB quota), carol; returns alice's app password."""
    from schoolsuite.services.accounts import AccountService

    store = open_store(load_config(config_path))
    try:
        accounts = AccountService(store)
        accounts.add("alice@school.example", PASSWORD)
        accounts.add("bob@school.example", PASSWORD, quota=1 << 20)
        accounts.add("carol@school.example", PASSWORD)
        return accounts.add_app_password("alice@school.example", "laptop")
    finally:
        store.close()


def start_files_server(base: Path, env: dict[str, str] | None = None) -> tuple[FilesServer, subprocess.Popen[str]]:
    inst = Instance(base / "inst", init_instance(base / "inst", "school.example", "localhost"))
    for name in LISTENERS:
        inst.ports[name] = free_port()
        inst.set_listener(name, endpoint=f"tcp:{inst.ports[name]}:interface=127.0.0.1")
    for name in ("imap", "imaps", "submission", "submissions", "mx"):
        inst.set_listener(name, enabled=False)
    app_password = make_accounts(inst.config)
    temp = base / "tmp"
    temp.mkdir()
    run = start_server(schoolsuite_cmd("serve", "-c", str(inst.config)), expect=2, timeout=60,
                       env={"TMPDIR": str(temp), **(env or {})})
    for stream in (run.proc.stdout, run.proc.stderr):  # keep the server's log pipes from filling up
        threading.Thread(target=_drain, args=(stream, base / "server.log"), daemon=True).start()
    server = FilesServer(inst.dir, inst.ports["https"], inst.cert, run.proc.pid, temp, inst.dir / "data",
                         app_password, inst.ports["metrics"])
    return server, run.proc


def _drain(stream, log_path: Path) -> None:  # type: ignore[no-untyped-def]
    with open(log_path, "a", buffering=1) as log:  # line-buffered: tests read it while it grows
        for line in stream:
            log.write(line)
