"""The LMDB environment and its transactions.

One environment under ``DIR/data/`` with these named databases:

=============  ==========================================  ===========================
database       key                                         value
=============  ==========================================  ===========================
``meta``       ascii names (format, master check, pending)  store facts, never user data
``directory``  a prefix letter, then (see each module):      sealed with the directory key,
               ``A`` accounts, ``N`` address index          except index entries (ids)
               (accounts.py); ``Q`` outbound queue index,
               ``K`` DKIM keys (queue.py); ``X`` tokens,
               audit log, SCIM facts, groups (admin.py);
               ``M`` MTA-STS policies (mtasts.py)
``keys``       account id                                  data key wrapped by master
``records``    account id, space byte, key                 sealed under the data key
``blobs``      account id, blob id, chunk number           sealed chunks of large values
=============  ==========================================  ===========================

Every sealed value is bound to its own full key (associated data), so moving
it to another record or another account makes it fail to open. Everything
belonging to one account lives under its 16-byte id prefix: deleting the
wrapped key and that prefix range removes the account (crypto-shredding).

Transactions: :meth:`Store.read` and :meth:`Store.write` are context
managers; a write commits when the block ends without an exception and only
then runs its ``after_commit`` callbacks (change notifications are published
after commit, never before).

Durability: LMDB runs with ``metasync=False``, so a commit syncs the pages it
wrote but not the page naming the new root. Integrity holds either way
(LMDB never reuses pages the previous root still references); a power cut can
only undo the last unsynced commits. ``store.write()`` (durable, the default:
SMTP 250, IMAP APPEND, DAV 201) therefore syncs once more before it returns.
``store.write(durable=False)`` is for changes a user would not miss after a
power cut within :data:`FLUSH_DELAY` of the reply, the way Dovecot treats
flag changes: IMAP flags, \\Seen, \\Recent claims. A flusher thread makes them
durable within that delay, and so does the next durable commit.

Growth: once the store holds 32 MiB, ``data.mdb`` is kept filled with zeros
ahead of LMDB's last page by a thread of :mod:`.filegrow`, so that large
writes land in allocated, cached space (told the used size after each commit).
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import lmdb

from .. import metrics
from .crypto import SEAL_OVERHEAD, MasterKeyError, MasterKeys, SealError, Sealer, generate_key
from .errors import CorruptRecord, NotFound, StoreFullError, StoreOpenError
from .filegrow import FileGrower
from .spaces import SPACE_COUNTER

FORMAT_VERSION = 1
ACCOUNT_ID_SIZE = 16
BLOB_ID_SIZE = 16
#: Record values longer than this are stored as a blob of chunks.
INLINE_MAX = 8 * 1024
#: Chunk size of blobs (measured by benchmarks/store.py).
CHUNK_SIZE = 256 * 1024
#: Seconds within which a ``durable=False`` commit is flushed to disk.
FLUSH_DELAY = 0.1

_DBS = (b"meta", b"directory", b"keys", b"records", b"blobs")
_MASTER_CHECK = b"master-check"
_MASTER_CHECK_TEXT = b"schoolsuite master key check"


_INLINE = b"\x00"
_SPILLED = b"\x01"
_SPILL = struct.Struct(">16sIQ")  # blob id, chunks, total length
_SPILLED_SEALED_SIZE = SEAL_OVERHEAD + len(_SPILLED) + _SPILL.size
_U64 = struct.Struct(">Q")
_SPACE_BYTE = tuple(bytes((i,)) for i in range(256))
_READ_SECONDS = metrics.STORE_TXN_SECONDS.labels("read")
_WRITE_SECONDS = metrics.STORE_TXN_SECONDS.labels("write")


class Store:
    """One LMDB environment with sealed records. Thread-safe; one writer at a time."""

    def __init__(self, env: lmdb.Environment, path: Path, keys: MasterKeys) -> None:
        self._env = env
        self.path = path
        self._keys = keys
        self._dbs = {name: env.open_db(name) for name in _DBS}
        self._sealers: dict[bytes, Sealer] = {}
        self._unsynced = False
        self._psize = env.stat()["psize"]
        self._grower = FileGrower(path / "data.mdb", env, self._psize)
        self._flush_wanted = threading.Event()
        self._closing = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="store-flusher", daemon=True)
        self._flusher.start()
        metrics.STORE_MAP_SIZE_BYTES.set(env.info()["map_size"])

    # -- opening and closing -------------------------------------------------

    @classmethod
    def open(cls, data_dir: Path, master_key: bytes, *, map_size: int = 1 << 40) -> "Store":
        """Open (creating if needed) the store in ``data_dir``.

        Raises :class:`StoreOpenError` or :class:`MasterKeyError` with a line
        fit for the operator.
        """
        data_dir = Path(data_dir)
        try:
            data_dir.mkdir(mode=0o700, exist_ok=True)
        except OSError as e:
            raise StoreOpenError(f"cannot create data directory {data_dir}: {e.strerror}") from None
        if not os.access(data_dir, os.W_OK | os.X_OK):
            raise StoreOpenError(f"data directory {data_dir} is not writable by this user")
        try:
            env = lmdb.open(
                str(data_dir),
                map_size=map_size,
                max_dbs=len(_DBS) + 2,
                max_readers=2048,
                subdir=True,
                sync=True,
                metasync=False,  # see "Durability" above: write(durable=True) syncs the meta page
                readahead=False,
                meminit=True,  # never write leftover heap (plaintext) into the file
                mode=0o600,
            )
        except lmdb.Error as e:
            raise StoreOpenError(f"cannot open store in {data_dir}: {e}") from None
        try:
            store = cls(env, data_dir, MasterKeys(master_key))
        except BaseException:
            env.close()
            raise
        try:
            store._check_meta()
        except BaseException:
            store.close()  # its flusher thread too
            raise
        return store

    def _check_meta(self) -> None:
        meta = self._dbs[b"meta"]
        identity = b"meta/" + _MASTER_CHECK
        with self._env.begin(write=True, db=meta) as txn:
            version = txn.get(b"format")
            check = txn.get(_MASTER_CHECK)
            if version is None:
                txn.put(b"format", str(FORMAT_VERSION).encode())
                txn.put(_MASTER_CHECK, self._keys.directory.seal(_MASTER_CHECK_TEXT, identity))
                return
            if int(version) != FORMAT_VERSION:
                raise StoreOpenError(
                    f"store in {self.path} has format {int(version)}, this version reads {FORMAT_VERSION}"
                )
            try:
                ok = check is not None and self._keys.directory.open(check, identity) == _MASTER_CHECK_TEXT
            except SealError:
                ok = False
            if not ok:
                raise MasterKeyError(f"the master key does not match the store in {self.path}")

    def close(self) -> None:
        """Flush, then close the environment; open transactions must have ended."""
        self._closing.set()
        self._flush_wanted.set()
        self._flusher.join()
        self.flush()
        self._grower.close()
        self._env.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions --------------------------------------------------------

    def read(self) -> "_Reading":
        """A read-only snapshot (``with store.read() as txn``); cheap enough for the reactor thread."""
        return _Reading(self)

    @contextlib.contextmanager
    def write(self, *, durable: bool = True) -> Iterator["WriteTxn"]:
        """A write transaction, committed when the block ends.

        Durable (the default): on disk when the block returns. ``durable=False``:
        visible at once, on disk within :data:`FLUSH_DELAY` (see the module text).
        Run it off the reactor thread (services.writer): it waits for the one
        writer lock and for the disk.
        """
        start = time.perf_counter()
        txn = self._env.begin(write=True, buffers=False)
        wtxn = WriteTxn(self, txn)
        try:
            yield wtxn
        except BaseException:
            txn.abort()
            raise
        else:
            txn_id = txn.id()
            try:
                txn.commit()
            except lmdb.MapFullError:
                raise StoreFullError("the store is full; raise [store] map_size") from None
            info = self._env.info()
            # An unchanged transaction commits without touching the disk: then no sync is owed.
            if info["last_txnid"] >= txn_id:
                self._grower.used((info["last_pgno"] + 1) * self._psize)
                if durable:
                    self.flush(always=True)
                else:
                    self._unsynced_commit()
        finally:
            _WRITE_SECONDS.observe(time.perf_counter() - start)
        for forget in wtxn._forget:
            self._sealers.pop(forget, None)
        for callback in wtxn._after_commit:
            callback()

    def flush(self, *, always: bool = False) -> None:
        """Make every commit so far durable (one sync, only if one is owed unless ``always``)."""
        if self._unsynced or always:
            # Clear before syncing: a commit that lands meanwhile sets it again.
            self._unsynced = False
            self._env.sync(True)

    def _unsynced_commit(self) -> None:
        self._unsynced = True
        self._flush_wanted.set()

    def _flush_loop(self) -> None:
        while not self._closing.is_set():
            self._flush_wanted.wait()
            self._closing.wait(FLUSH_DELAY)
            self._flush_wanted.clear()
            if self._closing.is_set():
                return  # close() flushes after joining this thread
            self.flush()

    # -- facts for operators -------------------------------------------------

    def map_usage(self) -> tuple[int, int]:
        """(bytes in use, map size) of the LMDB environment."""
        info = self._env.info()
        used = (info["last_pgno"] + 1) * self._env.stat()["psize"]
        metrics.STORE_MAP_USED_BYTES.set(used)
        return used, info["map_size"]

    def copy_to(self, dest: Path, *, compact: bool = True) -> None:
        """A consistent copy of the whole environment into the empty directory ``dest``."""
        self._env.copy(str(dest), compact=compact)

    def _sealer(self, txn: lmdb.Transaction, account_id: bytes) -> Sealer:
        sealer = self._sealers.get(account_id)
        if sealer is None:
            wrapped = txn.get(account_id, db=self._dbs[b"keys"])
            if wrapped is None:
                raise NotFound("no such account")
            try:
                sealer = Sealer(self._keys.unwrap(wrapped, account_id))
            except SealError:
                raise _corrupt(f"keys/{account_id.hex()}") from None
            if len(self._sealers) > 50_000:
                self._sealers.clear()
            self._sealers[account_id] = sealer
        return sealer


class _Reading:
    """The context manager of :meth:`Store.read` (a class: it is on every request's path)."""

    __slots__ = ("_store", "_txn", "_start")

    def __init__(self, store: Store) -> None:
        self._store = store

    def __enter__(self) -> "ReadTxn":
        self._start = time.perf_counter()
        self._txn = self._store._env.begin(write=False, buffers=False)
        return ReadTxn(self._store, self._txn)

    def __exit__(self, *exc: object) -> None:
        self._txn.abort()
        _READ_SECONDS.observe(time.perf_counter() - self._start)


def _corrupt(location: str) -> CorruptRecord:
    from twisted.logger import Logger  # local: storage otherwise needs no Twisted

    error = CorruptRecord(location)
    metrics.STORE_RECORD_FAILURES.inc()
    Logger(namespace="schoolsuite.storage").error(
        "sealed record failed authentication: incident={incident} location={location}",
        incident=error.incident,
        location=location,
    )
    return error


class ReadTxn:
    """A snapshot of the store: the directory, and each account's records."""

    def __init__(self, store: Store, txn: lmdb.Transaction) -> None:
        self._store = store
        self._txn = txn
        self._dbs = store._dbs

    # The directory: records about accounts, sealed with the directory key.

    def directory_get(self, key: bytes) -> bytes | None:
        """Open the directory record ``key`` (None if absent)."""
        sealed = self._txn.get(key, db=self._dbs[b"directory"])
        if sealed is None:
            return None
        try:
            return self._store._keys.directory.open(sealed, b"d" + key)
        except SealError:
            raise _corrupt(f"directory/{key[:1].decode('latin-1')}{key[1:].hex()}") from None

    def directory_raw(self, key: bytes) -> bytes | None:
        """An unsealed directory value (index entries hold only ids)."""
        return self._txn.get(key, db=self._dbs[b"directory"])

    def directory_scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, raw value) of every directory entry under ``prefix``."""
        return _scan(self._txn, self._dbs[b"directory"], prefix)

    def address_hash(self, address: str) -> bytes:
        """Keyed hash under which an address is looked up."""
        return self._store._keys.directory.name_hash("address", address)

    def meta_get(self, key: bytes) -> bytes | None:
        return self._txn.get(key, db=self._dbs[b"meta"])

    def meta_scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of every meta entry under ``prefix``."""
        return _scan(self._txn, self._dbs[b"meta"], prefix)

    def user(self, account_id: bytes) -> "UserView":
        """The account's records; :class:`NotFound` if it has no data key."""
        return UserView(self, account_id, self._store._sealer(self._txn, account_id))


class WriteTxn(ReadTxn):
    """A write transaction: everything in it commits together or not at all."""

    def __init__(self, store: Store, txn: lmdb.Transaction) -> None:
        super().__init__(store, txn)
        self._after_commit: list[Callable[[], None]] = []
        self._forget: list[bytes] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this transaction has committed durably."""
        self._after_commit.append(callback)

    def directory_put(self, key: bytes, value: bytes) -> None:
        self._txn.put(key, self._store._keys.directory.seal(value, b"d" + key), db=self._dbs[b"directory"])

    def directory_put_raw(self, key: bytes, value: bytes) -> None:
        self._txn.put(key, value, db=self._dbs[b"directory"])

    def directory_delete(self, key: bytes) -> bool:
        return self._txn.delete(key, db=self._dbs[b"directory"])

    def meta_put(self, key: bytes, value: bytes) -> None:
        self._txn.put(key, value, db=self._dbs[b"meta"])

    def meta_delete(self, key: bytes) -> bool:
        return self._txn.delete(key, db=self._dbs[b"meta"])

    def create_user_key(self) -> bytes:
        """A new account id with a fresh data key, stored wrapped."""
        while True:
            account_id = os.urandom(ACCOUNT_ID_SIZE)
            if self._txn.get(account_id, db=self._dbs[b"keys"]) is None:
                break
        wrapped = self._store._keys.wrap(generate_key(), account_id)
        self._txn.put(account_id, wrapped, db=self._dbs[b"keys"])
        return account_id

    def destroy_user(self, account_id: bytes) -> None:
        """Crypto-shred an account: its data key first, then every record and blob."""
        self._txn.delete(account_id, db=self._dbs[b"keys"])
        for db in (b"records", b"blobs"):
            _delete_prefix(self._txn, self._dbs[db], account_id)
        self._forget.append(account_id)

    def user(self, account_id: bytes) -> "UserWrite":
        return UserWrite(self, account_id, self._store._sealer(self._txn, account_id))


def _scan(txn: lmdb.Transaction, db: object, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    cursor = txn.cursor(db=db)
    if not cursor.set_range(prefix):
        return
    for key, value in cursor:
        if not key.startswith(prefix):
            return
        yield key, value


def _delete_prefix(txn: lmdb.Transaction, db: object, prefix: bytes) -> int:
    cursor = txn.cursor(db=db)
    count = 0
    if not cursor.set_range(prefix):
        return 0
    while cursor.key().startswith(prefix):
        count += 1
        if not cursor.delete():
            break
    return count


class UserView:
    """One account's records inside a transaction, opened with its data key.

    Keys are given and returned without the account id and space byte.
    """

    def __init__(self, txn: ReadTxn, account_id: bytes, sealer: Sealer) -> None:
        self._t = txn
        self._txn = txn._txn
        self._records = txn._dbs[b"records"]
        self._blobs = txn._dbs[b"blobs"]
        self.account_id = account_id
        self._sealer = sealer

    def name_hash(self, *parts: bytes | str) -> bytes:
        """Keyed hash of a name (folder, file, address) for lookups in this account."""
        return self._sealer.name_hash(*parts)

    def _full(self, space: int, key: bytes) -> bytes:
        return self.account_id + _SPACE_BYTE[space] + key

    def _open(self, full: bytes, sealed: bytes) -> bytes:
        try:
            plain = self._sealer.open(sealed, b"r" + full)
        except SealError:
            raise _corrupt(f"records/{full.hex()}") from None
        if plain[0] == 0:  # _INLINE
            return plain[1:]
        blob_id, chunks, total = _SPILL.unpack(plain[1:])
        data = b"".join(self._blob_chunks(blob_id, 0, chunks))
        if len(data) != total:
            raise _corrupt(f"blobs/{self.account_id.hex()}{blob_id.hex()}")
        return data

    def get(self, space: int, key: bytes) -> bytes | None:
        """The record's value, or None."""
        full = self.account_id + _SPACE_BYTE[space] + key
        sealed = self._txn.get(full, db=self._records)
        return None if sealed is None else self._open(full, sealed)

    def exists(self, space: int, key: bytes) -> bool:
        """Whether the record exists (nothing is decrypted)."""
        return self._txn.get(self._full(space, key), db=self._records) is not None

    def scan(
        self, space: int, prefix: bytes = b"", *, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of the records under ``prefix`` in key order.

        ``start`` (forward: first key >= start; reverse: last key <= start)
        makes range scans such as "changes since modseq N" one seek.
        """
        for full, sealed in self._range(space, prefix, start, reverse):
            yield full[ACCOUNT_ID_SIZE + 1 :], self._open(full, sealed)

    def keys(self, space: int, prefix: bytes = b"", *, start: bytes | None = None) -> Iterator[bytes]:
        """The keys under ``prefix`` (nothing is decrypted)."""
        for full, _ in self._range(space, prefix, start, False):
            yield full[ACCOUNT_ID_SIZE + 1 :]

    def count(self, space: int, prefix: bytes = b"") -> int:
        return sum(1 for _ in self._range(space, prefix, None, False))

    def _range(
        self, space: int, prefix: bytes, start: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        base = self._full(space, prefix)
        end = _prefix_end(base)
        cursor = self._txn.cursor(db=self._records)
        upper = None if start is None else self._full(space, start)
        if not reverse:
            # A start below the prefix range begins at the range's first key.
            if not cursor.set_range(base if upper is None or upper < base else upper):
                return
            for full, sealed in cursor:
                if not full.startswith(base):
                    return
                yield full, sealed
            return
        # Reverse: position at the last key <= the upper bound. A start above
        # the prefix range begins at the range's last key; one below it, nowhere.
        if upper is not None and upper < base:
            return
        if upper is not None and (end is None or upper < end):
            if not cursor.set_range(upper):
                found = cursor.last()
            elif cursor.key() != upper:
                found = cursor.prev()
            else:
                found = True
        else:
            if end is None or not cursor.set_range(end):
                found = cursor.last()
            else:
                found = cursor.prev()
        if not found:
            return
        for full, sealed in cursor.iterprev():
            if not full.startswith(base):
                return
            yield full, sealed

    def change_counter(self) -> int:
        """The account's change counter (feeds IMAP MODSEQ and DAV sync tokens)."""
        value = self.get(SPACE_COUNTER, b"")
        return 0 if value is None else _U64.unpack(value)[0]

    # Blobs: chunked values (spilled records and file content).

    def _blob_key(self, blob_id: bytes, index: int) -> bytes:
        return self.account_id + blob_id + index.to_bytes(4, "big")

    def _blob_chunks(self, blob_id: bytes, first: int, last: int) -> Iterator[bytes]:
        for index in range(first, last):
            key = self._blob_key(blob_id, index)
            sealed = self._txn.get(key, db=self._blobs)
            if sealed is None:
                raise _corrupt(f"blobs/{key.hex()} missing")
            try:
                yield self._sealer.open(sealed, b"c" + key)
            except SealError:
                raise _corrupt(f"blobs/{key.hex()}") from None

    def blob_chunk(self, blob_id: bytes, index: int) -> bytes:
        """One chunk of a blob."""
        return next(self._blob_chunks(blob_id, index, index + 1))


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


class UserWrite(UserView):
    """One account's records inside a write transaction."""

    _t: WriteTxn

    def put(self, space: int, key: bytes, value: bytes) -> None:
        """Store ``value`` sealed; values over INLINE_MAX go into a chunked blob."""
        full = self._full(space, key)
        old = self._txn.get(full, db=self._records)
        if old is not None:
            self._drop_spill(full, old)
        if len(value) <= INLINE_MAX:
            plain = _INLINE + value
        else:
            blob_id = os.urandom(BLOB_ID_SIZE)
            chunks = self.write_blob_chunks(blob_id, 0, value)
            plain = _SPILLED + _SPILL.pack(blob_id, chunks, len(value))
        self._txn.put(full, self._sealer.seal(plain, b"r" + full), db=self._records)

    def delete(self, space: int, key: bytes) -> bool:
        """Delete one record; True if it existed."""
        full = self._full(space, key)
        old = self._txn.get(full, db=self._records)
        if old is None:
            return False
        self._drop_spill(full, old)
        return self._txn.delete(full, db=self._records)

    def delete_prefix(self, space: int, prefix: bytes = b"") -> int:
        """Delete every record under ``prefix``; returns how many."""
        keys = list(self.keys(space, prefix))
        for key in keys:
            self.delete(space, key)
        return len(keys)

    def _drop_spill(self, full: bytes, sealed: bytes) -> None:
        if len(sealed) != _SPILLED_SEALED_SIZE:
            return  # every spill record has this size: most overwrites need no decryption to know
        try:
            plain = self._sealer.open(sealed, b"r" + full)
        except SealError:
            return  # overwriting a corrupt record is allowed; it held no readable blob
        if plain[:1] == _SPILLED:
            blob_id, chunks, _ = _SPILL.unpack(plain[1:])
            self.delete_blob(blob_id, chunks)

    def bump_change(self) -> int:
        """Increment and return the account's change counter."""
        value = self.change_counter() + 1
        self.put(SPACE_COUNTER, b"", _U64.pack(value))
        return value

    def write_blob_chunks(self, blob_id: bytes, first_index: int, data: bytes) -> int:
        """Seal ``data`` as chunks ``first_index``…; returns how many chunks were written."""
        view = memoryview(data)
        count = 0
        for offset in range(0, len(data), CHUNK_SIZE):
            key = self._blob_key(blob_id, first_index + count)
            chunk = bytes(view[offset : offset + CHUNK_SIZE])
            self._txn.put(key, self._sealer.seal(chunk, b"c" + key), db=self._blobs)
            count += 1
        return count

    def delete_blob(self, blob_id: bytes, chunks: int | None = None) -> None:
        """Delete a blob's chunks (all of them when ``chunks`` is None)."""
        if chunks is None:
            _delete_prefix(self._txn, self._blobs, self.account_id + blob_id)
            return
        for index in range(chunks):
            self._txn.delete(self._blob_key(blob_id, index), db=self._blobs)
