"""The store's contract: what every backend must do, run through the ``store`` fixture.

Tests that look inside LMDB itself (orphan chunks, the keys database) take
``lmdb_store`` instead and sit at the end of the file.
"""

from __future__ import annotations

import pytest
from storehelp import BACKENDS, make_account, raw_items

from schoolsuite.storage import Conflict, NotFound, Store, accounts, content
from schoolsuite.storage.spaces import SPACE_CONTENT
from schoolsuite.storage.store import ACCOUNT_ID_SIZE, CHUNK_SIZE, INLINE_MAX

MAIL = 0x10
DAV = 0x20

SIZES = [0, 1, 200, INLINE_MAX, INLINE_MAX + 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 5]


def pattern(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that differ per position and per seed (so misplaced chunks show)."""
    block = bytes((i * 7 + seed) % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


def put(store: Store, account: bytes, space: int, key: bytes, value: bytes) -> None:
    with store.write() as txn:
        txn.user(account).put(space, key, value)


def get(store: Store, account: bytes, space: int, key: bytes) -> bytes | None:
    with store.read() as txn:
        return txn.user(account).get(space, key)


# -- records -------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_record_round_trip(store: Store, alice: bytes, size: int) -> None:
    """A record of any size (inline or spilled into chunks) reads back byte for byte."""
    value = pattern(size)
    put(store, alice, MAIL, b"k", value)
    assert get(store, alice, MAIL, b"k") == value
    with store.read() as txn:
        view = txn.user(alice)
        assert view.exists(MAIL, b"k")
        assert list(view.scan(MAIL)) == [(b"k", value)]


def test_missing_record(store: Store, alice: bytes) -> None:
    """A record never written reads as None, does not exist, and deleting it returns False."""
    assert get(store, alice, MAIL, b"nope") is None
    with store.write() as txn:
        user = txn.user(alice)
        assert not user.exists(MAIL, b"nope")
        assert user.delete(MAIL, b"nope") is False
        assert user.count(MAIL) == 0


@pytest.mark.parametrize("first,second", [(200, INLINE_MAX + 1), (3 * CHUNK_SIZE, 10), (CHUNK_SIZE * 2, CHUNK_SIZE + 3), (5, 7)])
def test_overwrite(store: Store, alice: bytes, first: int, second: int) -> None:
    """Overwriting a record (inline or spilled, either way) leaves exactly the new value."""
    put(store, alice, MAIL, b"k", pattern(first, 1))
    put(store, alice, MAIL, b"k", pattern(second, 2))
    assert get(store, alice, MAIL, b"k") == pattern(second, 2)
    with store.read() as txn:
        assert txn.user(alice).count(MAIL) == 1


def test_delete(store: Store, alice: bytes) -> None:
    """Deleting a record (inline or spilled) removes it and only it."""
    put(store, alice, MAIL, b"a", b"small")
    put(store, alice, MAIL, b"b", pattern(INLINE_MAX * 2))
    put(store, alice, MAIL, b"c", b"kept")
    with store.write() as txn:
        user = txn.user(alice)
        assert user.delete(MAIL, b"a") is True
        assert user.delete(MAIL, b"b") is True
    with store.read() as txn:
        assert list(txn.user(alice).scan(MAIL)) == [(b"c", b"kept")]


def _fill(store: Store, account: bytes, space: int, keys: list[bytes]) -> None:
    with store.write() as txn:
        user = txn.user(account)
        for key in keys:
            user.put(space, key, b"v:" + key)


KEYS = [b"a", b"a\x00", b"a\xff", b"ab", b"abc", b"b", b"b\x00", b"ba", b"c", b"\xff", b"\xff\xff"]


def test_scan_forward_and_reverse(store: Store, alice: bytes) -> None:
    """scan yields records in key order, or in reverse order; keys and count agree."""
    _fill(store, alice, MAIL, list(reversed(KEYS)))
    with store.read() as txn:
        view = txn.user(alice)
        assert [k for k, _ in view.scan(MAIL)] == sorted(KEYS)
        assert [k for k, _ in view.scan(MAIL, reverse=True)] == sorted(KEYS, reverse=True)
        assert all(v == b"v:" + k for k, v in view.scan(MAIL))
        assert list(view.keys(MAIL)) == sorted(KEYS)
        assert view.count(MAIL) == len(KEYS)


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"b", b"\xff", b"\xff\xff", b"z", b"a\x00"])
def test_scan_prefix(store: Store, alice: bytes, prefix: bytes) -> None:
    """scan, keys and count under a prefix see exactly the keys that start with it."""
    _fill(store, alice, MAIL, KEYS)
    expected = sorted(k for k in KEYS if k.startswith(prefix))
    with store.read() as txn:
        view = txn.user(alice)
        assert [k for k, _ in view.scan(MAIL, prefix)] == expected
        assert [k for k, _ in view.scan(MAIL, prefix, reverse=True)] == expected[::-1]
        assert list(view.keys(MAIL, prefix)) == expected
        assert view.count(MAIL, prefix) == len(expected)


@pytest.mark.parametrize("prefix", [b"", b"a", b"b", b"\xff"])
@pytest.mark.parametrize("start", [b"", b"0", b"a", b"aa", b"ab", b"abz", b"b", b"bb", b"c", b"\xff", b"\xff\xff\xff", b"zz"])
def test_scan_start(store: Store, alice: bytes, prefix: bytes, start: bytes) -> None:
    """With start, a forward scan begins at the first key >= start and a reverse scan at the last key <= start."""
    _fill(store, alice, MAIL, KEYS)
    # Neighbours in other spaces and accounts must never leak into the range.
    _fill(store, alice, MAIL - 1, KEYS)
    _fill(store, alice, MAIL + 1, KEYS)
    under = sorted(k for k in KEYS if k.startswith(prefix))
    with store.read() as txn:
        view = txn.user(alice)
        assert [k for k, _ in view.scan(MAIL, prefix, start=start)] == [k for k in under if k >= start]
        assert [k for k, _ in view.scan(MAIL, prefix, start=start, reverse=True)] == [
            k for k in reversed(under) if k <= start
        ]
        assert list(view.keys(MAIL, prefix, start=start)) == [k for k in under if k >= start]


def test_spaces_are_isolated(store: Store, alice: bytes) -> None:
    """The same key in two spaces is two records; scans and prefix deletes stay in their space."""
    _fill(store, alice, MAIL, [b"x", b"y"])
    _fill(store, alice, DAV, [b"x", b"z"])
    put(store, alice, MAIL + 1, b"", b"next space, empty key")
    with store.write() as txn:
        user = txn.user(alice)
        user.put(MAIL, b"x", b"mail")
        assert user.get(DAV, b"x") == b"v:x"
        assert [k for k, _ in user.scan(MAIL)] == [b"x", b"y"]
        assert [k for k, _ in user.scan(MAIL, reverse=True)] == [b"y", b"x"]
        assert user.delete_prefix(MAIL) == 2
    with store.read() as txn:
        view = txn.user(alice)
        assert [k for k, _ in view.scan(DAV)] == [b"x", b"z"]
        assert view.get(MAIL + 1, b"") == b"next space, empty key"


def test_delete_prefix(store: Store, alice: bytes) -> None:
    """delete_prefix removes every record under the prefix, spilled ones included, and returns how many."""
    _fill(store, alice, MAIL, KEYS)
    put(store, alice, MAIL, b"ab-big", pattern(INLINE_MAX * 3))
    with store.write() as txn:
        assert txn.user(alice).delete_prefix(MAIL, b"a") == 6
    with store.read() as txn:
        assert list(txn.user(alice).keys(MAIL)) == sorted(k for k in KEYS if not k.startswith(b"a"))


def test_accounts_are_isolated(store: Store, alice: bytes, bob: bytes) -> None:
    """A user never sees another user's records, by get, exists, scan, keys or count."""
    _fill(store, bob, MAIL, [b"secret", b"x"])
    put(store, bob, MAIL, b"big", pattern(INLINE_MAX + 100))
    _fill(store, alice, MAIL, [b"x"])
    with store.write() as txn:
        view = txn.user(alice)
        assert view.get(MAIL, b"secret") is None
        assert view.get(MAIL, b"big") is None
        assert not view.exists(MAIL, b"secret")
        assert list(view.keys(MAIL)) == [b"x"]
        assert [v for _, v in view.scan(MAIL, reverse=True)] == [b"v:x"]
        assert view.count(MAIL) == 1
        assert view.delete_prefix(MAIL) == 1
    with store.read() as txn:
        assert sorted(txn.user(bob).keys(MAIL)) == [b"big", b"secret", b"x"]


def test_name_hash_per_account(store: Store, alice: bytes, bob: bytes) -> None:
    """name_hash is stable for an account across transactions and differs between accounts."""
    with store.read() as txn:
        a1 = txn.user(alice).name_hash("INBOX", "Sent")
        b1 = txn.user(bob).name_hash("INBOX", "Sent")
    with store.read() as txn:
        assert txn.user(alice).name_hash("INBOX", "Sent") == a1
    assert a1 != b1


def test_unknown_account(store: Store) -> None:
    """Opening the records of an account id that has no data key raises NotFound."""
    with store.read() as txn, pytest.raises(NotFound):
        txn.user(b"\x00" * ACCOUNT_ID_SIZE)


# -- transactions --------------------------------------------------------------


class Boom(Exception):
    pass


def test_abort_on_exception(store: Store, alice: bytes) -> None:
    """An exception inside a write block discards every change of the transaction."""
    put(store, alice, MAIL, b"before", b"1")
    with pytest.raises(Boom), store.write() as txn:
        user = txn.user(alice)
        user.put(MAIL, b"new", b"x")
        user.put(MAIL, b"big", pattern(INLINE_MAX * 2))
        user.put(MAIL, b"before", b"changed")
        user.bump_change()
        content.put_content(user, b"content")
        accounts.create_account(txn, "carol@school.example")
        raise Boom
    with store.read() as txn:
        view = txn.user(alice)
        assert list(view.scan(MAIL)) == [(b"before", b"1")]
        assert view.change_counter() == 0
        assert view.count(SPACE_CONTENT) == 0
        assert accounts.find_account(txn, "carol@school.example") is None
        assert accounts.count_accounts(txn) == 1


def test_after_commit_runs_after_commit(store: Store, alice: bytes) -> None:
    """after_commit callbacks run once the commit is done (a new reader sees the data), in order."""
    seen: list[tuple[str, bytes | None]] = []

    def callback(name: str) -> None:
        seen.append((name, get(store, alice, MAIL, b"k")))

    with store.write() as txn:
        txn.user(alice).put(MAIL, b"k", b"committed")
        txn.after_commit(lambda: callback("first"))
        txn.after_commit(lambda: callback("second"))
        assert seen == []
    assert seen == [("first", b"committed"), ("second", b"committed")]


def test_after_commit_not_on_abort(store: Store, alice: bytes) -> None:
    """after_commit callbacks of an aborted transaction never run."""
    seen: list[int] = []
    with pytest.raises(Boom), store.write() as txn:
        txn.user(alice).put(MAIL, b"k", b"v")
        txn.after_commit(lambda: seen.append(1))
        raise Boom
    assert seen == []


def test_read_snapshot(store: Store, alice: bytes) -> None:
    """A read transaction keeps seeing the state it began with while a writer commits."""
    put(store, alice, MAIL, b"k", b"old")
    with store.read() as txn:
        put(store, alice, MAIL, b"k", b"new")
        put(store, alice, MAIL, b"k2", b"added")
        assert list(txn.user(alice).scan(MAIL)) == [(b"k", b"old")]
    assert get(store, alice, MAIL, b"k") == b"new"


def test_change_counter_monotonic(store: Store, alice: bytes, bob: bytes) -> None:
    """The change counter starts at 0, bumps by one per call, survives aborts unchanged, and is per account."""
    with store.read() as txn:
        assert txn.user(alice).change_counter() == 0
    values = []
    for _ in range(5):
        with store.write() as txn:
            values.append(txn.user(alice).bump_change())
    assert values == [1, 2, 3, 4, 5]
    with store.write() as txn:
        user = txn.user(alice)
        assert [user.bump_change() for _ in range(3)] == [6, 7, 8]
    with pytest.raises(Boom), store.write() as txn:
        txn.user(alice).bump_change()
        raise Boom
    with store.read() as txn:
        assert txn.user(alice).change_counter() == 8
        assert txn.user(bob).change_counter() == 0


def test_reopen_keeps_data(store: Store, alice: bytes, tmp_path, master_key: bytes, request) -> None:
    """Closing and reopening the store with the same master key keeps records and accounts."""
    put(store, alice, MAIL, b"k", pattern(INLINE_MAX + 1))
    store.close()
    reopened = BACKENDS[request.node.callspec.params["store"]](tmp_path, master_key)
    try:
        assert get(reopened, alice, MAIL, b"k") == pattern(INLINE_MAX + 1)
        with reopened.read() as txn:
            assert accounts.find_account_id(txn, "alice@school.example") == alice
    finally:
        reopened.close()


# -- content -------------------------------------------------------------------


def test_put_content_round_trip(store: Store, alice: bytes) -> None:
    """Content put in one transaction reads back whole, with its size, chunk count and one reference."""
    data = pattern(2 * CHUNK_SIZE + 17)
    with store.write() as txn:
        info = content.put_content(txn.user(alice), data)
    assert (info.size, info.chunks, info.refs) == (len(data), 3, 1)
    with store.read() as txn:
        view = txn.user(alice)
        assert content.read_all(view, info.content_id) == data
        assert content.content_info(view, info.content_id) == info
    assert b"".join(content.stream_content(store, alice, info.content_id, chunks_per_txn=1)) == data


def test_empty_content(store: Store, alice: bytes) -> None:
    """Empty content has no chunks and reads back empty."""
    with store.write() as txn:
        info = content.put_content(txn.user(alice), b"")
    assert info.chunks == 0
    with store.read() as txn:
        assert content.read_all(txn.user(alice), info.content_id) == b""


RANGES = [
    (0, None), (0, 0), (5, 5), (0, 1), (1, 2), (0, CHUNK_SIZE), (CHUNK_SIZE - 1, CHUNK_SIZE + 1),
    (CHUNK_SIZE, 2 * CHUNK_SIZE), (CHUNK_SIZE + 3, None), (2 * CHUNK_SIZE, 10**9), (10**9, None),
    (100, 50), (3 * CHUNK_SIZE - 1, None),
]


@pytest.mark.parametrize("start,end", RANGES)
def test_content_ranges(store: Store, alice: bytes, start: int, end: int | None) -> None:
    """read_content and stream_content return exactly bytes [start, end) (clamped to the content)."""
    data = pattern(3 * CHUNK_SIZE - 1, 3)
    with store.write() as txn:
        info = content.put_content(txn.user(alice), data)
    expected = data[start:end]
    with store.read() as txn:
        assert b"".join(content.read_content(txn.user(alice), info.content_id, start, end)) == expected
    for per_txn in (1, 2, 8):
        streamed = content.stream_content(store, alice, info.content_id, start, end, chunks_per_txn=per_txn)
        assert b"".join(streamed) == expected


def test_content_ref_unref(store: Store, alice: bytes) -> None:
    """ref adds a reference; unref drops one; the content disappears with the last."""
    with store.write() as txn:
        info = content.put_content(txn.user(alice), pattern(CHUNK_SIZE + 1))
    with store.write() as txn:
        assert content.ref_content(txn.user(alice), info.content_id).refs == 2
    with store.write() as txn:
        assert content.unref_content(txn.user(alice), info.content_id) == 1
    with store.read() as txn:
        assert content.read_all(txn.user(alice), info.content_id) == pattern(CHUNK_SIZE + 1)
    with store.write() as txn:
        assert content.unref_content(txn.user(alice), info.content_id) == 0
    with store.read() as txn:
        view = txn.user(alice)
        assert content.content_info(view, info.content_id) is None
        with pytest.raises(NotFound):
            content.read_all(view, info.content_id)
    with store.write() as txn, pytest.raises(NotFound):
        content.unref_content(txn.user(alice), info.content_id)


def test_content_is_per_account(store: Store, alice: bytes, bob: bytes) -> None:
    """One account cannot read, reference or drop another account's content by its id."""
    with store.write() as txn:
        info = content.put_content(txn.user(bob), b"bob's")
    with store.write() as txn:
        user = txn.user(alice)
        assert content.content_info(user, info.content_id) is None
        for op in (content.read_all, content.ref_content, content.unref_content):
            with pytest.raises(NotFound):
                op(user, info.content_id)  # type: ignore[operator]
    with pytest.raises(NotFound):
        list(content.stream_content(store, alice, info.content_id))


def test_content_writer_multi_batch(store: Store, alice: bytes) -> None:
    """ContentWriter commits batches as it goes; the content appears only with the caller's commit."""
    data = pattern(5 * CHUNK_SIZE + 123, 9)
    writer = content.ContentWriter(store, alice, batch_bytes=CHUNK_SIZE)
    step = CHUNK_SIZE // 3 + 7
    for offset in range(0, len(data), step):
        writer.write(data[offset : offset + step])
        with store.read() as txn:
            assert content.content_info(txn.user(alice), writer.content_id) is None
    with store.write() as txn:
        info = writer.commit(txn)
        txn.user(alice).put(MAIL, b"msg", info.content_id)
    assert (info.size, info.chunks, info.refs) == (len(data), 6, 1)
    assert b"".join(content.stream_content(store, alice, info.content_id)) == data
    with store.read() as txn:
        assert content.read_all(txn.user(alice), get(store, alice, MAIL, b"msg")) == data
    assert content.sweep_pending(store, older_than=0) == 0
    with store.read() as txn:
        assert content.read_all(txn.user(alice), info.content_id) == data


def test_content_writer_abort(store: Store, alice: bytes) -> None:
    """Aborting a ContentWriter throws away its committed batches; nothing is left to sweep."""
    writer = content.ContentWriter(store, alice, batch_bytes=CHUNK_SIZE)
    writer.write(pattern(3 * CHUNK_SIZE))
    writer.abort()
    with store.read() as txn:
        view = txn.user(alice)
        assert content.content_info(view, writer.content_id) is None
        assert view.count(SPACE_CONTENT) == 0
    assert content.sweep_pending(store, older_than=0) == 0
    with pytest.raises(ValueError):
        writer.write(b"more")


def test_content_writer_commit_in_aborted_txn(store: Store, alice: bytes) -> None:
    """If the caller's transaction aborts after commit(), abort() still removes the content."""
    writer = content.ContentWriter(store, alice, batch_bytes=CHUNK_SIZE)
    writer.write(pattern(2 * CHUNK_SIZE + 1))
    with pytest.raises(Boom), store.write() as txn:
        writer.commit(txn)
        raise Boom
    writer.abort()
    with store.read() as txn:
        assert txn.user(alice).count(SPACE_CONTENT) == 0
    assert content.sweep_pending(store, older_than=0) == 0


def test_sweep_pending(store: Store, alice: bytes) -> None:
    """Content begun and never committed is removed by sweep_pending once older than the limit."""
    writer = content.ContentWriter(store, alice, batch_bytes=CHUNK_SIZE)
    writer.write(pattern(2 * CHUNK_SIZE))
    with store.write() as txn:
        done = content.put_content(txn.user(alice), b"committed")
    assert content.sweep_pending(store, older_than=3600) == 0
    with store.read() as txn:
        assert txn.user(alice).count(SPACE_CONTENT) == 2
    assert content.sweep_pending(store, older_than=0) == 1
    with store.read() as txn:
        view = txn.user(alice)
        assert list(view.keys(SPACE_CONTENT)) == [done.content_id]
        assert content.read_all(view, done.content_id) == b"committed"
    assert content.sweep_pending(store, older_than=0) == 0


def test_sweep_pending_of_deleted_account(store: Store, alice: bytes) -> None:
    """Pending content of an account deleted meanwhile is swept without error."""
    writer = content.ContentWriter(store, alice, batch_bytes=CHUNK_SIZE)
    writer.write(pattern(CHUNK_SIZE))
    with store.write() as txn:
        accounts.delete_account(txn, alice)
    assert content.sweep_pending(store, older_than=0) == 1
    assert content.sweep_pending(store, older_than=0) == 0


# -- accounts ------------------------------------------------------------------


def test_create_and_find_account(store: Store) -> None:
    """A created account is found by id and address, listed and counted, with its fields intact."""
    with store.write() as txn:
        acc = accounts.create_account(txn, "t@school.example", name="T", quota=10, password_hash="$argon2id$x")
    with store.read() as txn:
        assert accounts.find_account_id(txn, "t@school.example") == acc.id
        found = accounts.find_account(txn, "t@school.example")
        assert found == acc
        assert accounts.get_account(txn, acc.id) == acc
        assert [a.id for a in accounts.list_accounts(txn)] == [acc.id]
        assert accounts.count_accounts(txn) == 1
        assert accounts.find_account(txn, "other@school.example") is None
        txn.user(acc.id)  # has a data key


def test_create_duplicate_conflicts(store: Store, alice: bytes) -> None:
    """Creating an account with an address (or alias) already taken raises Conflict."""
    with store.write() as txn:
        acc = accounts.get_account(txn, alice)
        acc.aliases.append("al@school.example")
        accounts.update_account(txn, acc)
    for address in ("alice@school.example", "al@school.example"):
        with pytest.raises(Conflict), store.write() as txn:
            accounts.create_account(txn, address)
    with store.read() as txn:
        assert accounts.count_accounts(txn) == 1


def test_update_reindexes_aliases(store: Store, alice: bytes) -> None:
    """Adding, removing and promoting aliases re-indexes the addresses that find the account."""
    with store.write() as txn:
        acc = accounts.get_account(txn, alice)
        acc.aliases = ["a1@school.example", "a2@school.example"]
        acc.name = "Alice A."
        accounts.update_account(txn, acc)
    with store.read() as txn:
        for address in ("alice@school.example", "a1@school.example", "a2@school.example"):
            assert accounts.find_account_id(txn, address) == alice
        assert accounts.get_account(txn, alice).name == "Alice A."
    with store.write() as txn:
        acc = accounts.get_account(txn, alice)
        acc.address, acc.aliases = "a1@school.example", ["new@school.example"]
        accounts.update_account(txn, acc)
    with store.read() as txn:
        assert accounts.find_account_id(txn, "a1@school.example") == alice
        assert accounts.find_account_id(txn, "new@school.example") == alice
        assert accounts.find_account_id(txn, "alice@school.example") is None
        assert accounts.find_account_id(txn, "a2@school.example") is None
        assert accounts.find_account(txn, "new@school.example").address == "a1@school.example"


def test_update_conflict(store: Store, alice: bytes, bob: bytes) -> None:
    """Taking another account's address as an alias raises Conflict and changes nothing."""
    with pytest.raises(Conflict), store.write() as txn:
        acc = accounts.get_account(txn, alice)
        acc.aliases.append("bob@school.example")
        accounts.update_account(txn, acc)
    with store.read() as txn:
        assert accounts.find_account_id(txn, "bob@school.example") == bob
        assert accounts.get_account(txn, alice).aliases == []


def test_update_missing_account(store: Store) -> None:
    """Updating an account that does not exist raises NotFound."""
    ghost = accounts.Account(id=b"\x01" * ACCOUNT_ID_SIZE, address="ghost@school.example")
    with pytest.raises(NotFound), store.write() as txn:
        accounts.update_account(txn, ghost)


def test_delete_account(store: Store, alice: bytes, bob: bytes) -> None:
    """Deleting an account removes its addresses, record, data key and records; others stay."""
    with store.write() as txn:
        acc = accounts.get_account(txn, alice)
        acc.aliases = ["al@school.example"]
        accounts.update_account(txn, acc)
        user = txn.user(alice)
        user.put(MAIL, b"k", b"v")
        user.put(MAIL, b"big", pattern(INLINE_MAX * 2))
        content.put_content(user, pattern(CHUNK_SIZE + 1))
        txn.user(bob).put(MAIL, b"k", b"bob")
    with store.read() as txn:
        txn.user(alice)  # warms any cached key of alice
    with store.write() as txn:
        assert accounts.delete_account(txn, alice).address == "alice@school.example"
    with store.read() as txn:
        assert accounts.find_account_id(txn, "alice@school.example") is None
        assert accounts.find_account_id(txn, "al@school.example") is None
        assert accounts.get_account(txn, alice) is None
        assert accounts.count_accounts(txn) == 1
        with pytest.raises(NotFound):
            txn.user(alice)
        assert txn.user(bob).get(MAIL, b"k") == b"bob"
    with store.write() as txn:
        with pytest.raises(NotFound):
            accounts.delete_account(txn, alice)
        # The address is free again, for a new account with a new id.
        assert accounts.create_account(txn, "alice@school.example").id != alice


def test_account_repr_hides_secrets() -> None:
    """The repr of an account shows neither its password hash nor app password hashes."""
    acc = accounts.Account(
        id=b"\x01" * 16, address="a@b", password_hash="$argon2id$SECRET",
        app_passwords=[accounts.AppPassword("phone", "$argon2id$APPSECRET", 0.0)],
    )
    assert "SECRET" not in repr(acc) and "SECRET" not in repr(acc.app_passwords)
    assert accounts.Account.from_bytes(acc.to_bytes()) == acc


# -- LMDB only: what is left in the databases ----------------------------------


def _blob_keys(store: Store, account: bytes) -> list[bytes]:
    """Keys of the account's chunks in the ``blobs`` database (closes the store)."""
    path = store.path
    store.close()
    return [k for k in raw_items(path, b"blobs") if k.startswith(account)]


def test_no_orphan_chunks_after_overwrite_and_delete(lmdb_store: Store) -> None:
    """Overwriting spilled with inline and back, and deleting, leaves only the live value's chunks."""
    store = lmdb_store
    alice = make_account(store, "alice@school.example")
    put(store, alice, MAIL, b"k", pattern(3 * CHUNK_SIZE))  # 3 chunks
    put(store, alice, MAIL, b"k", b"inline now")  # 0 chunks
    put(store, alice, MAIL, b"k", pattern(2 * CHUNK_SIZE))  # 2 chunks
    put(store, alice, MAIL, b"k", pattern(CHUNK_SIZE + 1))  # 2 chunks, new blob
    put(store, alice, MAIL, b"gone", pattern(CHUNK_SIZE * 2))
    put(store, alice, MAIL, b"prefixed/1", pattern(INLINE_MAX + 1))
    with store.write() as txn:
        user = txn.user(alice)
        user.delete(MAIL, b"gone")
        user.delete_prefix(MAIL, b"prefixed/")
    with pytest.raises(Boom), store.write() as txn:
        txn.user(alice).put(MAIL, b"aborted", pattern(CHUNK_SIZE * 2))
        raise Boom
    assert len(_blob_keys(store, alice)) == 2


def test_no_orphan_chunks_after_content_lifecycle(lmdb_store: Store) -> None:
    """Unreferenced, aborted and swept content leave no chunk behind."""
    store = lmdb_store
    alice = make_account(store, "alice@school.example")
    with store.write() as txn:
        info = content.put_content(txn.user(alice), pattern(2 * CHUNK_SIZE))
        content.ref_content(txn.user(alice), info.content_id)
    with store.write() as txn:
        content.unref_content(txn.user(alice), info.content_id)
        content.unref_content(txn.user(alice), info.content_id)
    aborted = content.ContentWriter(store, alice, batch_bytes=CHUNK_SIZE)
    aborted.write(pattern(2 * CHUNK_SIZE))
    aborted.abort()
    left = content.ContentWriter(store, alice, batch_bytes=CHUNK_SIZE)
    left.write(pattern(3 * CHUNK_SIZE))
    content.sweep_pending(store, older_than=0)
    assert _blob_keys(store, alice) == []


def test_delete_account_shreds(lmdb_store: Store) -> None:
    """After deleting an account, no key, record or chunk under its id is left in LMDB."""
    store = lmdb_store
    alice = make_account(store, "alice@school.example")
    bob = make_account(store, "bob@school.example")
    for account in (alice, bob):
        with store.write() as txn:
            user = txn.user(account)
            user.put(MAIL, b"k", pattern(INLINE_MAX * 2))
            content.put_content(user, pattern(CHUNK_SIZE))
    with store.write() as txn:
        accounts.delete_account(txn, alice)
    path = store.path
    store.close()
    for db in (b"keys", b"records", b"blobs"):
        items = raw_items(path, db)
        assert not [k for k in items if k.startswith(alice)], db
        assert [k for k in items if k.startswith(bob)], db
    assert not [k for k in raw_items(path, b"directory") if alice in k]


def test_content_writer_swept_cannot_commit(store: Store, alice: bytes) -> None:
    """A writer whose pending content was swept refuses to commit instead of publishing missing chunks."""
    writer = content.ContentWriter(store, alice, batch_bytes=CHUNK_SIZE)
    writer.write(pattern(2 * CHUNK_SIZE))
    assert content.sweep_pending(store, older_than=0) == 1
    with pytest.raises(NotFound):
        writer.write(pattern(CHUNK_SIZE))
    with pytest.raises(NotFound), store.write() as txn:
        writer.commit(txn)
    with store.read() as txn:
        assert txn.user(alice).count(SPACE_CONTENT) == 0
