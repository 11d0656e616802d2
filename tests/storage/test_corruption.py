"""Damaged stores: corrupt records, a wrong master key, an unusable data directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest
from storehelp import TEST_MAP_SIZE, make_account, open_lmdb
from twisted.logger import globalLogPublisher

from schoolsuite.storage import CorruptRecord, MasterKeyError, StoreOpenError, accounts, content
from schoolsuite.storage.store import CHUNK_SIZE, INLINE_MAX, Store

MAIL = 0x10


def _tamper(data_dir: Path, db: bytes, change) -> None:
    """Apply ``change(txn, db)`` to the raw LMDB environment (store closed)."""
    env = lmdb.open(str(data_dir), max_dbs=16, map_size=TEST_MAP_SIZE)
    try:
        with env.begin(write=True) as txn:
            change(txn, env.open_db(db, txn=txn, create=False))
    finally:
        env.close()


def _flip_byte(data_dir: Path, db: bytes, key: bytes, offset: int = -1) -> None:
    def change(txn, handle) -> None:
        value = bytearray(txn.get(key, db=handle))
        value[offset] ^= 0x40
        txn.put(key, bytes(value), db=handle)

    _tamper(data_dir, db, change)


@pytest.fixture
def log_events():
    """Every twisted.logger event emitted during the test."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest.fixture
def populated(tmp_path: Path, master_key: bytes):
    """A closed store with alice (inline, spilled records, content) and bob."""
    store = open_lmdb(tmp_path, master_key)
    alice = make_account(store, "alice@school.example")
    bob = make_account(store, "bob@school.example")
    with store.write() as txn:
        for account in (alice, bob):
            user = txn.user(account)
            for key in (b"a", b"b", b"c"):
                user.put(MAIL, key, b"value " + key)
            user.put(MAIL, b"big", b"x" * (INLINE_MAX * 2))
        info = content.put_content(txn.user(alice), b"y" * (CHUNK_SIZE + 10))
    data_dir = store.path
    store.close()
    return data_dir, alice, bob, info.content_id


def _full(account: bytes, key: bytes) -> bytes:
    return account + bytes((MAIL,)) + key


def test_flipped_record_is_corrupt_others_read(populated, master_key: bytes, tmp_path: Path, log_events) -> None:
    """A flipped byte in a sealed record raises CorruptRecord with a logged incident id; other records still read."""
    data_dir, alice, bob, _ = populated
    _flip_byte(data_dir, b"records", _full(alice, b"b"), offset=20)
    store = open_lmdb(tmp_path, master_key)
    try:
        with store.read() as txn:
            view = txn.user(alice)
            with pytest.raises(CorruptRecord) as caught:
                view.get(MAIL, b"b")
            assert view.get(MAIL, b"a") == b"value a"
            assert view.get(MAIL, b"c") == b"value c"
            assert view.get(MAIL, b"big") == b"x" * (INLINE_MAX * 2)
            assert view.exists(MAIL, b"b")  # the key is intact; only its value is not
            assert dict(txn.user(bob).scan(MAIL))[b"b"] == b"value b"
            with pytest.raises(CorruptRecord):
                list(view.scan(MAIL))
    finally:
        store.close()
    incident = caught.value.incident
    assert re.fullmatch(r"[0-9a-f]{12}", incident)
    assert incident in str(caught.value)
    assert "value" not in str(caught.value) and alice.hex() not in str(caught.value)  # nothing for clients
    logged = [e for e in log_events if e.get("incident") == incident]
    assert logged and logged[0]["log_level"].name == "error"
    assert alice.hex() in logged[0]["location"]


def test_overwrite_corrupt_record(populated, master_key: bytes, tmp_path: Path) -> None:
    """A corrupt record can be overwritten or deleted (repair), after which it reads again."""
    data_dir, alice, _, _ = populated
    _flip_byte(data_dir, b"records", _full(alice, b"a"))
    _flip_byte(data_dir, b"records", _full(alice, b"b"))
    store = open_lmdb(tmp_path, master_key)
    try:
        with store.write() as txn:
            txn.user(alice).put(MAIL, b"a", b"repaired")
            assert txn.user(alice).delete(MAIL, b"b")
        with store.read() as txn:
            assert [k for k, _ in txn.user(alice).scan(MAIL)] == [b"a", b"big", b"c"]
    finally:
        store.close()


def test_flipped_chunk_is_corrupt(populated, master_key: bytes, tmp_path: Path) -> None:
    """A flipped byte in a content chunk raises CorruptRecord when that chunk is read."""
    data_dir, alice, _, content_id = populated
    _flip_byte(data_dir, b"blobs", alice + content_id + (1).to_bytes(4, "big"))
    store = open_lmdb(tmp_path, master_key)
    try:
        with store.read() as txn:
            view = txn.user(alice)
            assert b"".join(content.read_content(view, content_id, 0, CHUNK_SIZE)) == b"y" * CHUNK_SIZE
            with pytest.raises(CorruptRecord):
                content.read_all(view, content_id)
    finally:
        store.close()


def test_moved_record_is_corrupt(populated, master_key: bytes, tmp_path: Path) -> None:
    """A sealed value copied to another key or another account's key fails to open."""
    data_dir, alice, bob, _ = populated

    def move(txn, db) -> None:
        txn.put(_full(alice, b"moved"), txn.get(_full(alice, b"a"), db=db), db=db)
        txn.put(_full(alice, b"c"), txn.get(_full(bob, b"c"), db=db), db=db)

    _tamper(data_dir, b"records", move)
    store = open_lmdb(tmp_path, master_key)
    try:
        with store.read() as txn:
            for key in (b"moved", b"c"):
                with pytest.raises(CorruptRecord):
                    txn.user(alice).get(MAIL, key)
            assert txn.user(bob).get(MAIL, b"c") == b"value c"
    finally:
        store.close()


def test_corrupt_account_record(populated, master_key: bytes, tmp_path: Path) -> None:
    """A flipped byte in an account's directory record is CorruptRecord; other accounts are found."""
    data_dir, alice, _, _ = populated
    _flip_byte(data_dir, b"directory", b"A" + alice)
    store = open_lmdb(tmp_path, master_key)
    try:
        with store.read() as txn:
            with pytest.raises(CorruptRecord):
                accounts.find_account(txn, "alice@school.example")
            assert accounts.find_account(txn, "bob@school.example").address == "bob@school.example"
    finally:
        store.close()


def test_corrupt_data_key(populated, master_key: bytes, tmp_path: Path) -> None:
    """A damaged wrapped data key makes that account's records CorruptRecord, not anyone else's."""
    data_dir, alice, bob, _ = populated
    _flip_byte(data_dir, b"keys", alice)
    store = open_lmdb(tmp_path, master_key)
    try:
        with store.read() as txn:
            with pytest.raises(CorruptRecord):
                txn.user(alice)
            assert txn.user(bob).get(MAIL, b"a") == b"value a"
    finally:
        store.close()


def test_wrong_master_key(populated, tmp_path: Path) -> None:
    """Opening a store with another master key fails with MasterKeyError naming the store."""
    data_dir = populated[0]
    with pytest.raises(MasterKeyError, match=re.escape(str(data_dir))):
        Store.open(data_dir, os.urandom(32), map_size=TEST_MAP_SIZE)


def test_short_master_key(tmp_path: Path) -> None:
    """A master key that is not 32 bytes is refused before anything is created."""
    with pytest.raises(MasterKeyError):
        Store.open(tmp_path / "data", b"short", map_size=TEST_MAP_SIZE)


def test_data_dir_under_a_file(tmp_path: Path, master_key: bytes) -> None:
    """A data directory that cannot be created (its parent is a file) raises StoreOpenError naming it."""
    (tmp_path / "file").write_text("not a directory")
    path = tmp_path / "file" / "data"
    with pytest.raises(StoreOpenError, match=re.escape(str(path))):
        Store.open(path, master_key, map_size=TEST_MAP_SIZE)


def test_data_dir_is_a_file(tmp_path: Path, master_key: bytes) -> None:
    """A data directory path that is a regular file raises StoreOpenError."""
    path = tmp_path / "data"
    path.write_text("not a directory")
    with pytest.raises(StoreOpenError):
        Store.open(path, master_key, map_size=TEST_MAP_SIZE)


_OPEN_AS = """
import sys
from pathlib import Path
from schoolsuite.storage import Store, StoreOpenError
try:
    Store.open(Path(sys.argv[1]), bytes(32), map_size=1 << 30)
except StoreOpenError as e:
    print("StoreOpenError:", e)
    sys.exit(3)
print("opened")
"""


def test_data_dir_not_writable(tmp_path: Path, master_key: bytes) -> None:
    """A data directory this user cannot write raises StoreOpenError (checked as an unprivileged user)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    if os.geteuid() != 0:
        os.chmod(data_dir, 0o555)
        try:
            with pytest.raises(StoreOpenError, match="not writable"):
                Store.open(data_dir, master_key, map_size=TEST_MAP_SIZE)
        finally:
            os.chmod(data_dir, 0o755)
        return
    # Root writes anywhere, so run the check as nobody on a root-owned 0755 directory.
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is missing: cannot make a directory unwritable for root")
    for parent in [tmp_path, *tmp_path.parents]:  # nobody must reach the directory
        if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
            os.chmod(parent, os.stat(parent).st_mode | 0o001)
    result = subprocess.run(
        [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         sys.executable, "-c", _OPEN_AS, str(data_dir)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": "/nonexistent"},
    )
    if result.returncode not in (0, 3):
        pytest.skip(f"cannot run python as nobody here: {result.stderr.strip()[-300:]}")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "not writable" in result.stdout and str(data_dir) in result.stdout
    assert os.listdir(data_dir) == []
