"""Nothing a user stores appears in clear in the bytes of the store."""

from __future__ import annotations

import base64
from pathlib import Path

from storehelp import open_lmdb

from schoolsuite.storage import accounts, content
from schoolsuite.storage.store import CHUNK_SIZE, INLINE_MAX

MARKER = "Quokkazebra7Ünïcode"
ADDRESS = "quokkazebra7.teacher@school.example"
ALIAS = "quokkazebra7.alias@school.example"
MAIL = 0x10


def _needles() -> set[bytes]:
    """The marker and the addresses in the encodings a careless layer might store them in."""
    needles = set()
    for text in (MARKER, MARKER.lower(), MARKER.upper(), "Quokkazebra7", "quokkazebra7", ADDRESS, ALIAS):
        for encoding in ("utf-8", "utf-16-le", "utf-16-be", "latin-1"):
            try:
                needles.add(text.encode(encoding))
            except UnicodeEncodeError:
                pass
    return needles


def _payload(size: int) -> bytes:
    """``size`` bytes made of the marker in several encodings."""
    unit = b"|".join(MARKER.encode(e) for e in ("utf-8", "utf-16-le", "utf-16-be"))
    unit += b"|" + ADDRESS.encode() + b"|"
    return (unit * (size // len(unit) + 1))[:size]


def _poison_heap() -> None:
    """Leave freed heap memory full of the marker, where LMDB's page buffers may come from."""
    garbage = [_payload(n) for n in (300, 1000, 4000, 5000, 9000, 17000, 70000) for _ in range(20)]
    del garbage


def test_no_plaintext_in_data_files(tmp_path: Path, master_key: bytes) -> None:
    """Addresses, names, records, spilled records, content and hashed names leave no clear trace in data/."""
    store = open_lmdb(tmp_path, master_key)
    with store.write() as txn:
        account = accounts.create_account(
            txn, ADDRESS, name=f"Teacher {MARKER}", password_hash=f"$argon2id${MARKER}"
        )
        account.aliases.append(ALIAS)
        account.app_passwords.append(accounts.AppPassword(MARKER, "$argon2id$x", 0.0))
        accounts.update_account(txn, account)
        accounts.create_account(txn, "to-be-renamed-" + ADDRESS)
    for round_ in range(3):
        _poison_heap()
        with store.write() as txn:
            user = txn.user(account.id)
            folder = user.name_hash("folder", f"{MARKER}/Sent {round_}")
            for i, size in enumerate((10, 200, 4000, INLINE_MAX, INLINE_MAX + 1, 3 * INLINE_MAX)):
                user.put(MAIL, folder + bytes((i,)), _payload(size))
            user.put(MAIL + 1, user.name_hash(MARKER.encode("utf-16-le")), MARKER.encode())
            user.delete(MAIL, folder + b"\x00")  # freed pages must not hold clear text either
            content.put_content(user, _payload(CHUNK_SIZE + 1000))
            user.bump_change()
        _poison_heap()
        writer = content.ContentWriter(store, account.id, batch_bytes=CHUNK_SIZE)
        for _ in range(5):
            writer.write(_payload(CHUNK_SIZE // 2 + 17))
            _poison_heap()
        with store.write() as txn:
            writer.commit(txn)
    abandoned = content.ContentWriter(store, account.id, batch_bytes=CHUNK_SIZE)
    abandoned.write(_payload(2 * CHUNK_SIZE))
    with store.write() as txn:
        renamed = accounts.find_account(txn, "to-be-renamed-" + ADDRESS)
        renamed.address = "renamed@school.example"
        accounts.update_account(txn, renamed)
    data_dir = store.path
    store.close()

    files = [p for p in sorted(data_dir.rglob("*")) if p.is_file()]
    assert {p.name for p in files} >= {"data.mdb"}
    total = 0
    for path in files:
        blob = path.read_bytes()
        total += len(blob)
        for needle in _needles():
            assert needle not in blob, f"{needle!r} found in {path.name} at offset {blob.find(needle)}"
        assert base64.b64encode(account.id) not in blob
    assert total > 4 * CHUNK_SIZE  # the data really is there, sealed
