"""Backup and restore: ``schoolsuite backup DEST`` while the server runs, ``schoolsuite restore SRC DIR``."""

from __future__ import annotations

import imaplib
import os
import shutil
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from ops_helpers import new_instance, serve
from ops_helpers import BASE, Client, cli, make_token
from schoolsuite.config import load_config
from support import Instance

PASSWORD = "correct horse battery"


def _backup(inst: Instance, dest: Path) -> None:
    proc = cli(inst, "backup", str(dest))
    assert proc.returncode == 0, proc.stderr
    assert "backup written to" in proc.stdout


def _twin(tmp: Path, source: Instance) -> Instance:
    """A second instance on other ports that holds the source's master key (as on a new machine)."""
    twin = new_instance(tmp)
    shutil.copyfile(source.dir / "secrets" / "master.key", twin.dir / "secrets" / "master.key")
    return twin


def test_backup_and_restore_round_trip(tmp_path: Path) -> None:
    """A restored backup holds the accounts, tokens and audit log; refusals leave the target untouched."""
    inst = new_instance(tmp_path / "a")
    assert cli(inst, "user", "add", "keep@school.example", "--password-stdin", stdin=PASSWORD).returncode == 0
    token = make_token(inst, "portal")
    dest = tmp_path / "backup"
    _backup(inst, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["data.mdb", "schoolsuite-backup.json"]
    data = (dest / "data.mdb").read_bytes()
    for secret in (b"keep@school.example", b"portal", token.rsplit("_", 1)[1].encode()):
        assert secret not in data  # as sealed as the store
    proc = cli(inst, "backup", str(dest))
    assert proc.returncode == 2 and "not an empty directory" in proc.stderr

    twin = _twin(tmp_path / "b", inst)
    proc = cli(twin, "restore", str(dest), str(twin.dir))
    assert proc.returncode == 2 and "--replace" in proc.stderr  # init made an (empty) store there
    proc = cli(twin, "restore", str(dest), str(twin.dir), "--replace")
    assert proc.returncode == 0, proc.stderr
    assert "kept in" in proc.stdout and list(twin.dir.glob("data.before-restore-*"))
    assert "keep@school.example" in cli(twin, "user", "list").stdout
    assert "portal" in cli(twin, "admin-token", "list").stdout
    assert "token.add\ttoken:portal" in cli(twin, "audit").stdout


def test_restore_refuses_wrong_key_and_damaged_backup(tmp_path: Path) -> None:
    """A backup restored with another master key, or a damaged one, is refused in one line; nothing changes."""
    inst = new_instance(tmp_path / "a")
    dest = tmp_path / "backup"
    _backup(inst, dest)
    stranger = new_instance(tmp_path / "b")  # its own, different master key
    before = sorted(p.name for p in (stranger.dir / "data").iterdir())
    proc = cli(stranger, "restore", str(dest), str(stranger.dir), "--replace")
    assert proc.returncode == 2 and "master key does not match" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in (stranger.dir / "data").iterdir()) == before
    assert not list(stranger.dir.glob("data.before-restore-*")) and not list(stranger.dir.glob(".data.restoring"))
    with (dest / "data.mdb").open("r+b") as fh:
        fh.seek(5000)
        fh.write(b"\xff" * 16)
    twin = _twin(tmp_path / "c", inst)
    proc = cli(twin, "restore", str(dest), str(twin.dir), "--replace")
    assert proc.returncode == 2 and "damaged" in proc.stderr


class Load:
    """Clients writing over IMAP (APPEND), CalDAV (PUT), WebDAV (PUT) and SCIM (POST), recording acks."""

    def __init__(self, inst: Instance, address: str, token: str) -> None:
        self.inst, self.address, self.token = inst, address, token
        self.acked: list[tuple[str, str, float]] = []  # (kind, name, monotonic time of the ack)
        self.errors: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def _loop(self, kind: str, setup: Callable[[], object], one: Callable[[object, str], bool]) -> None:
        try:
            conn = setup()
            n = 0
            while not self.stop.is_set():
                name = f"{kind}-{n}-{uuid.uuid4().hex[:8]}"
                if one(conn, name):
                    with self._lock:
                        self.acked.append((kind, name, time.monotonic()))
                n += 1
        except Exception as exc:  # reported by the test
            self.errors.append(f"{kind}: {exc!r}")

    def _imap(self) -> imaplib.IMAP4_SSL:
        ctx = ssl.create_default_context(cafile=str(self.inst.cert))
        imap = imaplib.IMAP4_SSL("localhost", self.inst.ports["imaps"], ssl_context=ctx)
        imap.login(self.address, PASSWORD)
        return imap

    def _append(self, imap: object, name: str) -> bool:
        message = (f"From: load@school.example\r\nTo: {self.address}\r\nSubject: {name}\r\n"
                   f"Message-ID: <{name}@school.example>\r\n\r\nbody of {name}\r\n").encode()
        typ, _ = imap.append("INBOX", None, None, message)  # type: ignore[attr-defined]
        return typ == "OK"

    def _event(self, client: object, name: str) -> bool:
        ics = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//schoolsuite tests//EN\r\nBEGIN:VEVENT\r\n"
               f"UID:{name}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260105T100000Z\r\n"
               f"DTEND:20260105T110000Z\r\nSUMMARY:{name}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n").encode()
        reply = client.request("PUT", f"/dav/{self.address}/calendar/{name}.ics", raw=ics,  # type: ignore[attr-defined]
                               headers={"Content-Type": "text/calendar"})
        return reply.status == 201

    def _file(self, client: object, name: str) -> bool:
        reply = client.request("PUT", f"/files/{self.address}/{name}.txt", raw=name.encode() * 100,  # type: ignore[attr-defined]
                               headers={"Content-Type": "text/plain"})
        return reply.status == 201

    def _account(self, client: object, name: str) -> bool:
        return client.create_user(f"{name}@school.example").status == 201  # type: ignore[attr-defined]

    def start(self) -> list[threading.Thread]:
        basic = (self.address, PASSWORD)
        loops = [("message", self._imap, self._append),
                 ("event", lambda: Client(self.inst, basic=basic), self._event),
                 ("file", lambda: Client(self.inst, basic=basic), self._file),
                 ("account", lambda: Client(self.inst, self.token), self._account)]
        threads = [threading.Thread(target=self._loop, args=loop, daemon=True) for loop in loops]
        for t in threads:
            t.start()
        return threads


def test_backup_under_load_has_everything_acknowledged_before(tmp_path: Path) -> None:
    """A backup taken while IMAP, CalDAV, WebDAV and SCIM clients write holds every item acked before it began."""
    inst = new_instance(tmp_path / "a")
    token = make_token(inst, "portal")
    address = "busy@school.example"
    run = serve(inst)
    try:
        assert Client(inst, token).create_user(address, password=PASSWORD).status == 201
        load = Load(inst, address, token)
        threads = load.start()
        time.sleep(4)
        began = time.monotonic()
        _backup(inst, tmp_path / "backup")  # the clients keep writing during the backup
        time.sleep(0.5)
        load.stop.set()
        for t in threads:
            t.join(30)
    finally:
        run.stop()
    assert not load.errors, load.errors
    before = [(kind, name) for kind, name, at in load.acked if at < began]
    kinds = {kind for kind, _ in before}
    assert kinds == {"message", "event", "file", "account"}, kinds
    assert any(at >= began for _, _, at in load.acked)  # the load really overlapped the backup

    twin = _twin(tmp_path / "b", inst)
    assert cli(twin, "restore", str(tmp_path / "backup"), str(twin.dir), "--replace").returncode == 0
    run2 = serve(twin)
    try:
        ctx = ssl.create_default_context(cafile=str(twin.cert))
        imap = imaplib.IMAP4_SSL("localhost", twin.ports["imaps"], ssl_context=ctx)
        imap.login(address, PASSWORD)
        imap.select("INBOX", readonly=True)
        typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
        subjects = {part[1].decode().split(":", 1)[1].strip() for part in data if isinstance(part, tuple)}
        imap.logout()
        dav = Client(twin, basic=(address, PASSWORD))
        admin = Client(twin, make_token(twin, "check"))
        missing = []
        for kind, name in before:
            if kind == "message":
                ok = name in subjects
            elif kind == "event":
                ok = name.encode() in dav.request("GET", f"/dav/{address}/calendar/{name}.ics").raw
            elif kind == "file":
                ok = dav.request("GET", f"/files/{address}/{name}.txt").raw == name.encode() * 100
            else:
                ok = admin.find_user(f"{name}@school.example") is not None
            if not ok:
                missing.append((kind, name))
        assert not missing, f"{len(missing)} of {len(before)} acknowledged items missing: {missing[:5]}"
        print(f"restored {len(before)} items acknowledged before the backup: "
              + ", ".join(f"{k}={sum(1 for x, _ in before if x == k)}" for k in sorted(kinds)))
        assert admin.request("GET", f"{BASE}/ServiceProviderConfig").status == 200
    finally:
        run2.stop()
    assert load_config(twin.config).paths.data_dir.exists()


def test_restore_refuses_while_the_server_runs(tmp_path: Path) -> None:
    """restore --replace into an instance whose server is running is refused; the running store stays."""
    inst = new_instance(tmp_path / "a")
    dest = tmp_path / "backup"
    _backup(inst, dest)
    run = serve(inst)
    try:
        proc = cli(inst, "restore", str(dest), str(inst.dir), "--replace")
        assert proc.returncode == 2 and "is the server running" in proc.stderr, proc.stderr
        assert not list(inst.dir.glob("data.before-restore-*"))
    finally:
        assert run.stop() == 0
    assert cli(inst, "restore", str(dest), str(inst.dir), "--replace").returncode == 0


def test_restore_keeps_the_owner_of_the_replaced_store(tmp_path: Path) -> None:
    """Run as root, restore hands the restored store to the owner of the data directory it replaces."""
    if os.geteuid() != 0:
        pytest.skip("ownership is only changed when restore runs as root")
    inst = new_instance(tmp_path / "a")
    dest = tmp_path / "backup"
    _backup(inst, dest)
    data = load_config(inst.config).paths.data_dir
    os.chown(data, 4321, 4321)
    assert cli(inst, "restore", str(dest), str(inst.dir), "--replace").returncode == 0
    assert (data.stat().st_uid, (data / "data.mdb").stat().st_uid) == (4321, 4321)
