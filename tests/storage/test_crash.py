"""Crash safety: a writer killed with SIGKILL at random moments loses nothing it acknowledged."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from crash_writer import MAIL, record_key, record_value
from storehelp import make_account, open_lmdb, raw_items

from schoolsuite.storage import content
from schoolsuite.storage.spaces import SPACE_CONTENT

HELPER = Path(__file__).with_name("crash_writer.py")
ROUNDS = 6


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HELPER), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _run_and_kill(proc: subprocess.Popen[str], min_lines: int, linger: float) -> list[str]:
    """Collect the child's lines; SIGKILL it ``linger`` seconds after ``min_lines`` arrived."""
    lines: list[str] = []
    got_enough = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.endswith("\n"):
                lines.append(line.strip())
            if len(lines) >= min_lines:
                got_enough.set()
        got_enough.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    if not got_enough.wait(20):
        proc.kill()
        pytest.fail("the writer never acknowledged a write")
    if proc.poll() is not None:
        pytest.fail(f"the writer died on its own: {proc.stderr.read() if proc.stderr else ''}")
    time.sleep(linger)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    thread.join(10)
    assert proc.returncode == -signal.SIGKILL
    return lines


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkill(tmp_path: Path, master_key: bytes) -> None:
    """Every write acknowledged before a SIGKILL is there after reopening, and the change counter is consistent."""
    rng = random.Random()
    store = open_lmdb(tmp_path, master_key)
    account = make_account(store, "crash@school.example")
    data_dir = store.path
    store.close()
    acked: dict[int, int] = {}
    next_index = 0
    for _ in range(ROUNDS):
        proc = _spawn("records", str(data_dir), master_key.hex(), account.hex(), str(next_index))
        for line in _run_and_kill(proc, min_lines=1, linger=rng.uniform(0.0, 0.6)):
            index, counter = map(int, line.split())
            acked[index] = counter

        store = open_lmdb(tmp_path, master_key)  # opens after the crash
        try:
            with store.read() as txn:
                view = txn.user(account)
                records = dict(view.scan(MAIL, b"crash/"))
                counter = view.change_counter()
        finally:
            store.close()
        for index, acked_counter in acked.items():
            assert records.get(record_key(index)) == record_value(index, acked_counter), index
        # Every committed write (acknowledged or not) is whole and carries the counter of its transaction.
        counters = []
        for key, value in sorted(records.items()):
            meta = json.loads(value.split(b"\n", 1)[0])
            assert key == record_key(meta["index"])
            assert value == record_value(meta["index"], meta["counter"])
            counters.append(meta["counter"])
        assert counters == sorted(set(counters)), "counters must rise with the index"
        assert counter == max(counters) >= len(acked)
        assert sorted(records) == [record_key(i) for i in range(len(records))], "no gaps"
        next_index = len(records)
    assert len(acked) >= ROUNDS


@pytest.mark.slow
def test_crash_during_streamed_content(tmp_path: Path, master_key: bytes) -> None:
    """Content streamed by a writer killed before commit is removed by sweep_pending after restart."""
    store = open_lmdb(tmp_path, master_key)
    account = make_account(store, "crash@school.example")
    data_dir = store.path
    store.close()
    proc = _spawn("content", str(data_dir), master_key.hex(), account.hex())
    lines = _run_and_kill(proc, min_lines=1, linger=0.05)
    content_id = bytes.fromhex(lines[0])
    assert [k for k in raw_items(data_dir, b"blobs") if k.startswith(account + content_id)]

    store = open_lmdb(tmp_path, master_key)
    try:
        with store.read() as txn:
            view = txn.user(account)
            assert content.content_info(view, content_id) is None  # never visible
            assert view.exists(SPACE_CONTENT, content_id)  # but pending
        assert content.sweep_pending(store, older_than=0) == 1
        with store.read() as txn:
            assert not txn.user(account).exists(SPACE_CONTENT, content_id)
    finally:
        store.close()
    assert not [k for k in raw_items(data_dir, b"blobs") if k.startswith(account)]
