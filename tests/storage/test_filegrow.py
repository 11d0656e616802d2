"""The data file is filled with zeros ahead of LMDB, and never where LMDB has written."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest
from storehelp import make_account, open_lmdb, wait_until

from schoolsuite.storage import content, filegrow
from schoolsuite.storage.spaces import SPACE_CONTENT


def _used(store):
    return store.map_usage()[0]


@pytest.fixture
def small_steps(monkeypatch):
    """Fill from 256 KiB on, in slices of 64 KiB, so that a test store grows through many steps."""
    monkeypatch.setattr(filegrow, "GROW_FROM", 256 << 10)
    monkeypatch.setattr(filegrow, "SLICE", 64 << 10)


def test_a_small_store_is_not_filled(tmp_path, master_key):
    """Below GROW_FROM nothing happens: a fresh instance's data.mdb stays small."""
    store = open_lmdb(tmp_path, master_key)
    account = make_account(store, "a@school.example")
    with store.write() as txn:
        content.put_content(txn.user(account), os.urandom(200_000))
    store.close()
    assert (tmp_path / "data" / "data.mdb").stat().st_size < filegrow.GROW_FROM


def test_the_file_is_filled_ahead_with_zeros(tmp_path, master_key, small_steps):
    store = open_lmdb(tmp_path, master_key)
    account = make_account(store, "a@school.example")
    data = os.urandom(3 << 20)
    with store.write() as txn:
        info = content.put_content(txn.user(account), data)
    used = _used(store)
    grower = store._grower
    wait_until(lambda: grower.filled >= used + filegrow.ahead(used))
    path = tmp_path / "data" / "data.mdb"
    assert path.stat().st_size >= used + filegrow.ahead(used)
    with path.open("rb") as fh:
        fh.seek(used)
        assert fh.read(grower.filled - used) == bytes(grower.filled - used)
    store.close()

    store = open_lmdb(tmp_path, master_key)
    with store.read() as txn:
        assert content.read_all(txn.user(account), info.content_id) == data
    store.close()


def test_a_reopened_store_does_not_fill_again(tmp_path, master_key, small_steps):
    """What a filler wrote before stays filled: the next process (a restart, a CLI command) writes no zeros there."""
    store = open_lmdb(tmp_path, master_key)
    account = make_account(store, "a@school.example")
    with store.write() as txn:
        content.put_content(txn.user(account), os.urandom(2 << 20))
    used = _used(store)
    wait_until(lambda: store._grower.filled >= used + filegrow.ahead(used))
    store.close()
    size = (tmp_path / "data" / "data.mdb").stat().st_size

    store = open_lmdb(tmp_path, master_key)
    assert store._grower.filled == size
    slices = []
    fill_slice = store._grower._fill_slice
    store._grower._fill_slice = lambda: slices.append(fill_slice()) or slices[-1]
    with store.write() as txn:
        txn.user(account).put(SPACE_CONTENT, b"small", b"x" * 100)
    time.sleep(0.2)
    store.close()
    assert slices == []


def test_filling_never_overwrites_what_lmdb_wrote(tmp_path, master_key, small_steps):
    """Writers in several threads grow the store while the filler works in tiny slices; every record survives.

    If zeros ever landed on a page LMDB had written, a sealed record would no
    longer open (or LMDB's tree would break) when read back after a reopen.
    """
    store = open_lmdb(tmp_path, master_key)
    accounts = [make_account(store, f"u{i}@school.example") for i in range(3)]
    written: dict[tuple[bytes, bytes], bytes] = {}
    lock = threading.Lock()
    slices = []
    fill_slice = store._grower._fill_slice

    def counting_slice():
        done = fill_slice()
        slices.append(done)
        return done

    store._grower._fill_slice = counting_slice

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        for n in range(60):
            account = rng.choice(accounts)
            with store.write(durable=rng.random() < 0.3) as txn:
                user = txn.user(account)
                for k in range(rng.randint(1, 4)):
                    key = f"{seed}-{n}-{k}".encode()
                    value = rng.randbytes(rng.choice((100, 5_000, 40_000)))
                    user.put(SPACE_CONTENT, key, value)
                    with lock:
                        written[(account, key)] = value

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(slices) >= 10, "the filler hardly ran: the test proves nothing"
    store.close()

    store = open_lmdb(tmp_path, master_key)
    with store.read() as txn:
        for (account, key), value in written.items():
            assert txn.user(account).get(SPACE_CONTENT, key) == value
    store.close()


def test_without_fallocate_the_filler_turns_itself_off(tmp_path, master_key, small_steps, monkeypatch):
    monkeypatch.setattr(filegrow, "_FALLOCATE", None)
    store = open_lmdb(tmp_path, master_key)
    account = make_account(store, "a@school.example")
    with store.write() as txn:
        content.put_content(txn.user(account), os.urandom(1 << 20))
    wait_until(lambda: store._grower.failure is not None)
    assert "fallocate" in store._grower.failure
    with store.write() as txn:  # the store goes on without it
        info = content.put_content(txn.user(account), b"still here")
    with store.read() as txn:
        assert content.read_all(txn.user(account), info.content_id) == b"still here"
    store.close()
    assert not store._grower._thread.is_alive()
