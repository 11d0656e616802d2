"""Sealing, name hashing and the master key file (storage/crypto.py)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schoolsuite.storage.crypto import (
    KEY_SIZE,
    SEAL_OVERHEAD,
    MasterKeyError,
    MasterKeys,
    SealError,
    Sealer,
    generate_key,
    load_master_key,
    write_master_key,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
SEALER_A = Sealer(KEY_A)
SEALER_B = Sealer(KEY_B)

payloads = st.binary(max_size=4096)
identities = st.binary(max_size=64)
parts = st.one_of(st.binary(max_size=24), st.text(max_size=12))


@given(payloads, identities)
def test_seal_open_round_trip(plaintext: bytes, identity: bytes) -> None:
    """Opening a sealed value with the same key and identity returns the plaintext."""
    sealed = SEALER_A.seal(plaintext, identity)
    assert len(sealed) == len(plaintext) + SEAL_OVERHEAD
    assert SEALER_A.open(sealed, identity) == plaintext


@given(payloads, identities)
def test_seal_is_randomised(plaintext: bytes, identity: bytes) -> None:
    """Sealing the same value twice gives different bytes (a fresh nonce each time)."""
    assert SEALER_A.seal(plaintext, identity) != SEALER_A.seal(plaintext, identity)


@given(payloads, identities, st.data())
def test_flipped_bit_fails(plaintext: bytes, identity: bytes, data: st.DataObject) -> None:
    """A single flipped bit anywhere in a sealed value makes it fail to open."""
    sealed = bytearray(SEALER_A.seal(plaintext, identity))
    bit = data.draw(st.integers(0, len(sealed) * 8 - 1), label="bit")
    sealed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SealError):
        SEALER_A.open(bytes(sealed), identity)


@given(payloads, identities, st.data())
def test_truncated_or_extended_fails(plaintext: bytes, identity: bytes, data: st.DataObject) -> None:
    """A sealed value cut short or with bytes appended fails to open."""
    sealed = SEALER_A.seal(plaintext, identity)
    cut = data.draw(st.integers(0, len(sealed) - 1), label="cut")
    with pytest.raises(SealError):
        SEALER_A.open(sealed[:cut], identity)
    with pytest.raises(SealError):
        SEALER_A.open(sealed + data.draw(st.binary(min_size=1, max_size=8)), identity)


@given(payloads, identities)
def test_other_key_fails(plaintext: bytes, identity: bytes) -> None:
    """A value sealed under one key does not open under another."""
    with pytest.raises(SealError):
        SEALER_B.open(SEALER_A.seal(plaintext, identity), identity)


@given(payloads, identities, identities)
def test_other_identity_fails(plaintext: bytes, identity: bytes, other: bytes) -> None:
    """A value sealed for one record does not open as another record (moved values fail)."""
    if other == identity:
        other = identity + b"\x00"
    with pytest.raises(SealError):
        SEALER_A.open(SEALER_A.seal(plaintext, identity), other)


def test_sealer_rejects_short_key() -> None:
    """A sealing key must have exactly 32 bytes."""
    with pytest.raises(ValueError):
        Sealer(b"\x00" * 16)


def test_sealer_repr_hides_key() -> None:
    """The repr of a sealer shows no key material."""
    assert KEY_A.hex() not in repr(SEALER_A) and "hidden" in repr(SEALER_A)


@given(st.lists(parts, max_size=4))
def test_name_hash_deterministic(name: list[bytes | str]) -> None:
    """Equal names give equal hashes, also across Sealer instances of one key; str hashes as UTF-8."""
    h = SEALER_A.name_hash(*name)
    assert h == Sealer(KEY_A).name_hash(*name)
    as_bytes = [p.encode() if isinstance(p, str) else p for p in name]
    assert h == SEALER_A.name_hash(*as_bytes)
    assert len(h) == 16


@given(st.lists(st.binary(max_size=16), max_size=4), st.lists(st.binary(max_size=16), max_size=4))
def test_name_hash_distinct(a: list[bytes], b: list[bytes]) -> None:
    """Different sequences of parts give different hashes."""
    if a != b:
        assert SEALER_A.name_hash(*a) != SEALER_A.name_hash(*b)


def test_name_hash_part_boundaries() -> None:
    """Where the parts split matters: ("ab", "c") != ("a", "bc") != ("abc",) != ("abc", "")."""
    hashes = {
        SEALER_A.name_hash("ab", "c"),
        SEALER_A.name_hash("a", "bc"),
        SEALER_A.name_hash("abc"),
        SEALER_A.name_hash("abc", ""),
        SEALER_A.name_hash("", "abc"),
        SEALER_A.name_hash(),
    }
    assert len(hashes) == 6


@given(st.lists(parts, max_size=3))
def test_name_hash_is_keyed(name: list[bytes | str]) -> None:
    """The same name hashes differently under another key (no dictionary attack across stores)."""
    assert SEALER_A.name_hash(*name) != SEALER_B.name_hash(*name)


@given(st.binary(min_size=1, max_size=16), st.binary(min_size=1, max_size=16))
def test_wrapped_data_key_bound_to_account(account: bytes, other: bytes) -> None:
    """A wrapped data key unwraps only for its own account id and master key."""
    keys = MasterKeys(KEY_A)
    data_key = generate_key()
    wrapped = keys.wrap(data_key, account)
    assert keys.unwrap(wrapped, account) == data_key
    if other != account:
        with pytest.raises(SealError):
            keys.unwrap(wrapped, other)
    with pytest.raises(SealError):
        MasterKeys(KEY_B).unwrap(wrapped, account)


# -- the master key file -------------------------------------------------------


def test_master_key_written_0600(tmp_path: Path) -> None:
    """A new master key file has mode 0600, loads back, and holds 32 random bytes."""
    path = tmp_path / "secrets" / "master.key"
    write_master_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_master_key(path)
    assert len(key) == KEY_SIZE
    other = tmp_path / "other.key"
    write_master_key(other)
    assert load_master_key(other) != key


def test_master_key_refuses_overwrite(tmp_path: Path) -> None:
    """Writing a master key where one exists fails and leaves the old one intact."""
    path = tmp_path / "master.key"
    write_master_key(path)
    before = path.read_bytes()
    with pytest.raises(MasterKeyError, match=re.escape(str(path))):
        write_master_key(path)
    assert path.read_bytes() == before


def test_master_key_missing(tmp_path: Path) -> None:
    """Loading a missing master key file fails with a message naming the path."""
    path = tmp_path / "nope.key"
    with pytest.raises(MasterKeyError, match=re.escape(str(path))):
        load_master_key(path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610])
def test_master_key_readable_by_others(tmp_path: Path, mode: int) -> None:
    """A master key file with any group or other permission bit is refused, naming the path."""
    path = tmp_path / "master.key"
    write_master_key(path)
    os.chmod(path, mode)
    with pytest.raises(MasterKeyError, match=re.escape(str(path))):
        load_master_key(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        b"\xff\xfe\x00binary",
        b"schoolsuite-master-key-v1:",
        b"schoolsuite-master-key-v1:not base64!!",
        b"schoolsuite-master-key-v1:" + __import__("base64").b64encode(b"\x01" * 31),
        b"schoolsuite-master-key-v1:" + __import__("base64").b64encode(b"\x01" * 33),
        b"other-header:" + __import__("base64").b64encode(b"\x01" * 32),
    ],
    ids=["empty", "garbage", "binary", "no-key", "not-base64", "31-bytes", "33-bytes", "wrong-header"],
)
def test_master_key_malformed(tmp_path: Path, content: bytes) -> None:
    """A master key file that is not a 32-byte schoolsuite key is refused, naming the path."""
    path = tmp_path / "master.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(MasterKeyError, match=re.escape(str(path))):
        load_master_key(path)
