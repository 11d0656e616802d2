"""storage.files: the file tree contract (names hashed, moves re-link, copies share content, usage counted)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolsuite.storage import Conflict, Store
from schoolsuite.storage import files
from schoolsuite.storage.content import content_info, put_content, read_all


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Store, bytes]]:
    s = Store.open(tmp_path / "data", os.urandom(32), map_size=1 << 28)
    with s.write() as txn:
        account = txn.create_user_key()
        files.init_space(txn.user(account))
    yield s, account
    s.close()


def test_tree_and_lookup(store) -> None:  # type: ignore[no-untyped-def]
    """Collections and files are found by path; names are NFC; members listed."""
    s, aid = store
    with s.write() as txn:
        u = txn.user(aid)
        root = files.root(u)
        d = files.make_collection(u, root, "Dokumente")
        files.put_file(u, d, "e\u0301t\u00e9.txt", put_content(u, b"x"))
    with s.read() as txn:
        u = txn.user(aid)
        f = files.lookup(u, ["Dokumente", "\u00e9t\u00e9.txt"])
        assert f is not None and f.size == 1 and f.name == "\u00e9t\u00e9.txt"
        assert [e.name for e in files.children(u, files.lookup(u, ["Dokumente"]))] == ["\u00e9t\u00e9.txt"]
        assert files.usage(u) == 1


def test_names_not_in_keys(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A file name never appears in clear in the store's bytes."""
    s, aid = store
    with s.write() as txn:
        u = txn.user(aid)
        files.put_file(u, files.root(u), "Geheimer-Dateiname-4711.txt", put_content(u, b"y" * 100))
    s.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir())
    assert b"Geheimer-Dateiname-4711" not in raw


def test_move_relinks_subtree(store) -> None:  # type: ignore[no-untyped-def]
    """Moving a collection keeps its members, their ids and properties."""
    s, aid = store
    with s.write() as txn:
        u = txn.user(aid)
        root = files.root(u)
        a = files.make_collection(u, root, "a")
        f, _ = files.put_file(u, a, "f", put_content(u, b"data"))
        files.set_prop(u, f.id, "{urn:x}p", b"<p>1</p>")
        b = files.make_collection(u, root, "b")
        files.move(u, a, b, "a2")
    with s.read() as txn:
        u = txn.user(aid)
        moved = files.lookup(u, ["b", "a2", "f"])
        assert moved is not None and moved.id == f.id
        assert files.get_prop(u, moved.id, "{urn:x}p") == b"<p>1</p>"
        assert files.lookup(u, ["a"]) is None


def test_copy_shares_content_and_delete_keeps_other(store) -> None:  # type: ignore[no-untyped-def]
    """A copy adds a content reference; deleting one leaves the other readable; usage counts both."""
    s, aid = store
    with s.write() as txn:
        u = txn.user(aid)
        root = files.root(u)
        f, _ = files.put_file(u, root, "f", put_content(u, b"shared"))
        c = files.copy_entry(u, f, root, "c")
        assert c.content_id == f.content_id
        assert content_info(u, f.content_id).refs == 2
        assert files.usage(u) == 12
        files.delete_tree(u, f)
    with s.read() as txn:
        u = txn.user(aid)
        assert read_all(u, files.lookup(u, ["c"]).content_id) == b"shared"
        assert files.usage(u) == 6


def test_delete_tree_frees_everything(store) -> None:  # type: ignore[no-untyped-def]
    """Deleting a collection removes its subtree, content and properties, and the usage drops to zero."""
    s, aid = store
    with s.write() as txn:
        u = txn.user(aid)
        d = files.make_collection(u, files.root(u), "d")
        e = files.make_collection(u, d, "e")
        f, _ = files.put_file(u, e, "f", put_content(u, os.urandom(300_000)))
        files.set_prop(u, e.id, "{urn:x}p", b"v")
        cid = f.content_id
        files.delete_tree(u, d)
    with s.read() as txn:
        u = txn.user(aid)
        assert files.lookup(u, ["d"]) is None and files.usage(u) == 0
        assert content_info(u, cid) is None and files.get_props(u, e.id) == {}


def test_conflicts(store) -> None:  # type: ignore[no-untyped-def]
    """A taken name refuses MKCOL and MOVE; the root cannot be deleted."""
    s, aid = store
    with s.write() as txn:
        u = txn.user(aid)
        root = files.root(u)
        d = files.make_collection(u, root, "d")
        f, _ = files.put_file(u, root, "f", None)
        with pytest.raises(Conflict):
            files.make_collection(u, root, "d")
        with pytest.raises(Conflict):
            files.move(u, f, root, "d")
        with pytest.raises(Conflict):
            files.delete_tree(u, root)
        with pytest.raises(Conflict):
            files.put_file(u, root, "d", None)
        assert d.is_dir


def test_locks_roundtrip(store) -> None:  # type: ignore[no-untyped-def]
    """Locks are stored by token and listed per account."""
    s, aid = store
    with s.write() as txn:
        u = txn.user(aid)
        files.put_lock(u, "opaquelocktoken:1", {"token": "opaquelocktoken:1", "root": "/a"})
    with s.read() as txn:
        u = txn.user(aid)
        assert files.get_lock(u, "opaquelocktoken:1")["root"] == "/a"
        assert [lock["token"] for lock in files.all_locks(u)] == ["opaquelocktoken:1"]
    with s.write() as txn:
        assert files.delete_lock(txn.user(aid), "opaquelocktoken:1")


def test_content_writer_pieces_of_any_size(store) -> None:  # type: ignore[no-untyped-def]
    """ContentWriter keeps pieces uncopied and cuts them into chunks right, whatever their sizes and type."""
    from schoolsuite.storage.content import ContentWriter
    from schoolsuite.storage.store import CHUNK_SIZE

    s, aid = store
    sizes = [1, CHUNK_SIZE - 1, CHUNK_SIZE + 1, 3 * CHUNK_SIZE, 17, 4 * CHUNK_SIZE, 5, CHUNK_SIZE - 22, 2 * CHUNK_SIZE]
    writer = ContentWriter(s, aid, batch_bytes=2 * CHUNK_SIZE)
    expected = bytearray()
    for i, size in enumerate(sizes):
        piece = os.urandom(size)
        expected += piece
        if i % 3 == 1:
            mutable = bytearray(piece)
            writer.write(mutable)  # type: ignore[arg-type]
            mutable[:] = b"\0" * size  # the writer must not keep a reference to a buffer the caller reuses
        else:
            writer.write(piece)
    with s.write() as txn:
        info = writer.commit(txn)
        files.put_file(txn.user(aid), files.root(txn.user(aid)), "pieces.bin", info)
    assert info.size == len(expected) and info.chunks == -(-len(expected) // CHUNK_SIZE)
    with s.read() as txn:
        assert read_all(txn.user(aid), info.content_id) == bytes(expected)


def test_entry_records_binary_and_older_json() -> None:
    """Entries round-trip through the binary record (any name, with or without content); JSON ones still read."""
    import json
    import time

    now = time.time()
    for entry in (files.Entry(os.urandom(16), os.urandom(16), "Ünïcødé – 名前 ☃.txt", False, 12345, os.urandom(16),
                              now, now + 1.5, "text/plain; charset=utf-8"),
                  files.Entry(os.urandom(16), files.ROOT_ID, "dir", True, created=now, modified=now),
                  files.Entry(os.urandom(16), os.urandom(16), "empty", False, 0, None, now, now, "")):
        assert files.Entry.from_bytes(entry.to_bytes()) == entry
        legacy = json.dumps({"i": entry.id.hex(), "p": entry.parent.hex(), "n": entry.name, "d": entry.is_dir,
                             "s": entry.size, "c": entry.content_id.hex() if entry.content_id else "",
                             "ct": entry.created, "m": entry.modified, "t": entry.content_type}).encode()
        assert files.Entry.from_bytes(legacy) == entry
