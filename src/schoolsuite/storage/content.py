"""Chunked content: message bodies and files, sealed in fixed-size chunks.

Small content is written in one transaction (:func:`put_content`). Large
content streams in through :class:`ContentWriter`, which commits full
batches of chunks as it goes (so a 2 GiB upload never sits in memory) and
makes the content visible only in the caller's final transaction. Content that
was begun but never committed (a client that went away, a crash) is recorded
as pending and removed by :func:`sweep_pending`.

Content is immutable and reference-counted within one account, so a COPY of
a file or a message adds a reference instead of rewriting the chunks.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import CorruptRecord, NotFound
from .spaces import SPACE_CONTENT
from .store import BLOB_ID_SIZE, CHUNK_SIZE, Store, UserView, UserWrite, WriteTxn

_META = struct.Struct(">QIIB")  # size, chunks, references, complete
_PENDING = b"pending/"
_U64 = struct.Struct(">d")


@dataclass(frozen=True)
class ContentInfo:
    """What the store knows of one piece of content."""

    content_id: bytes
    size: int
    chunks: int
    refs: int


def content_info(view: UserView, content_id: bytes) -> ContentInfo | None:
    """The committed content's size and references, or None."""
    raw = view.get(SPACE_CONTENT, content_id)
    if raw is None:
        return None
    size, chunks, refs, complete = _META.unpack(raw)
    if not complete:
        return None
    return ContentInfo(content_id, size, chunks, refs)


def _require(view: UserView, content_id: bytes) -> ContentInfo:
    info = content_info(view, content_id)
    if info is None:
        raise NotFound("no such content")
    return info


def _chunk_range(info: ContentInfo, start: int, end: int | None) -> tuple[int, int, int, int]:
    end = info.size if end is None else min(end, info.size)
    start = max(0, min(start, end))
    first = start // CHUNK_SIZE
    last = (end + CHUNK_SIZE - 1) // CHUNK_SIZE if end > start else first
    return start, end, first, last


def read_content(view: UserView, content_id: bytes, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Yield the bytes ``[start, end)`` of the content, chunk by chunk, in this transaction."""
    info = _require(view, content_id)
    start, end, first, last = _chunk_range(info, start, end)
    for index in range(first, last):
        chunk = view.blob_chunk(content_id, index)
        base = index * CHUNK_SIZE
        yield chunk[max(0, start - base) : end - base]


def read_all(view: UserView, content_id: bytes) -> bytes:
    """The whole content (for small content such as a message)."""
    return b"".join(read_content(view, content_id))


def stream_content(
    store: Store, account_id: bytes, content_id: bytes, start: int = 0, end: int | None = None,
    *, chunks_per_txn: int = 8,
) -> Iterator[bytes]:
    """Like :func:`read_content`, but over short read transactions, for long downloads."""
    with store.read() as txn:
        info = _require(txn.user(account_id), content_id)
    start, end, first, last = _chunk_range(info, start, end)
    for batch in range(first, last, chunks_per_txn):
        with store.read() as txn:
            view = txn.user(account_id)
            if content_info(view, content_id) is None:
                raise NotFound("content was deleted while it was read")
            pieces = []
            for index in range(batch, min(batch + chunks_per_txn, last)):
                chunk = view.blob_chunk(content_id, index)
                base = index * CHUNK_SIZE
                pieces.append(chunk[max(0, start - base) : end - base])
        yield from pieces


def put_content(user: UserWrite, data: bytes) -> ContentInfo:
    """Store small content in the current transaction, with one reference."""
    content_id = os.urandom(BLOB_ID_SIZE)
    chunks = user.write_blob_chunks(content_id, 0, data)
    user.put(SPACE_CONTENT, content_id, _META.pack(len(data), chunks, 1, 1))
    return ContentInfo(content_id, len(data), chunks, 1)


def ref_content(user: UserWrite, content_id: bytes) -> ContentInfo:
    """Add a reference (a copy that shares the chunks)."""
    info = _require(user, content_id)
    user.put(SPACE_CONTENT, content_id, _META.pack(info.size, info.chunks, info.refs + 1, 1))
    return ContentInfo(content_id, info.size, info.chunks, info.refs + 1)


def unref_content(user: UserWrite, content_id: bytes) -> int:
    """Drop a reference; the chunks go with the last one. Returns references left."""
    info = _require(user, content_id)
    if info.refs <= 1:
        user.delete_blob(content_id, info.chunks)
        user.delete(SPACE_CONTENT, content_id)
        return 0
    user.put(SPACE_CONTENT, content_id, _META.pack(info.size, info.chunks, info.refs - 1, 1))
    return info.refs - 1


class ContentWriter:
    """Streams content into the store over several transactions.

    ``write`` keeps what it is given (no copy) until ``batch_bytes`` are
    there, then seals them in a transaction of its own; :meth:`commit` writes
    the rest inside the caller's transaction, so the content appears together
    with whatever refers to it.

    Only that last transaction needs to be durable: the batches before it are
    committed with ``durable=False`` (on disk within the store's flush delay,
    and at the latest with the caller's durable commit). A crash may lose
    some of them, but never the pending record before them (LMDB commits in
    order), so whatever is left is removed by :func:`sweep_pending`.
    """

    def __init__(self, store: Store, account_id: bytes, *, batch_bytes: int = 8 * 1024 * 1024) -> None:
        self._store = store
        self._account_id = account_id
        self._batch = max(CHUNK_SIZE, batch_bytes - batch_bytes % CHUNK_SIZE)
        self._pieces: list[bytes | memoryview] = []
        self._buffered = 0
        self._chunks = 0
        self.size = 0
        self.content_id = os.urandom(BLOB_ID_SIZE)
        self._done = False
        with store.write(durable=False) as txn:
            txn.user(account_id).put(SPACE_CONTENT, self.content_id, _META.pack(0, 0, 0, 0))
            txn.meta_put(self._pending_key, _U64.pack(time.time()))

    @property
    def _pending_key(self) -> bytes:
        return _PENDING + self._account_id + self.content_id

    def write(self, data: bytes) -> None:
        """Add bytes (kept as given: do not change them afterwards); full batches are sealed as they fill."""
        if self._done:
            raise ValueError("content writer is closed")
        if not data:
            return
        self._pieces.append(data if isinstance(data, bytes) else bytes(data))
        self._buffered += len(data)
        self.size += len(data)
        if self._buffered >= self._batch:
            with self._store.write(durable=False) as txn:
                self._check_pending(txn)
                self._flush(txn.user(self._account_id), final=False)
                # Still in progress: keep sweep_pending off a long upload.
                txn.meta_put(self._pending_key, _U64.pack(time.time()))

    def _check_pending(self, txn: WriteTxn) -> None:
        if txn.meta_get(self._pending_key) is None:
            raise NotFound("content was swept before it was committed")

    def _flush(self, user: UserWrite, *, final: bool) -> None:
        """Seal the buffered bytes as chunks: whole chunks only (the rest waits), or everything if ``final``.

        Pieces that start on a chunk boundary and hold whole chunks (a
        streamed upload read in blocks of a multiple of CHUNK_SIZE) are sealed
        as they are; only a piece straddling a boundary is copied.
        """
        pieces, self._pieces = self._pieces, []
        head = b""  # the start of a chunk, shorter than CHUNK_SIZE
        for piece in pieces:
            view = memoryview(piece)
            if head:
                need = CHUNK_SIZE - len(head)
                if len(view) < need:
                    head += view
                    continue
                self._chunks += user.write_blob_chunks(self.content_id, self._chunks, head + view[:need])
                view, head = view[need:], b""
            whole = len(view) - len(view) % CHUNK_SIZE
            if whole:
                self._chunks += user.write_blob_chunks(self.content_id, self._chunks, view[:whole])  # type: ignore[arg-type]
            if whole < len(view):
                head = bytes(view[whole:])
        if head and final:
            self._chunks += user.write_blob_chunks(self.content_id, self._chunks, head)
            head = b""
        self._pieces = [head] if head else []
        self._buffered = len(head)

    def commit(self, txn: WriteTxn) -> ContentInfo:
        """Write the remainder and publish the content (one reference) in ``txn``."""
        self._check_pending(txn)
        user = txn.user(self._account_id)
        self._flush(user, final=True)
        user.put(SPACE_CONTENT, self.content_id, _META.pack(self.size, self._chunks, 1, 1))
        txn.meta_delete(self._pending_key)
        # Closed only once ``txn`` commits: if it aborts, abort() must still clean up.
        txn.after_commit(self._committed)
        return ContentInfo(self.content_id, self.size, self._chunks, 1)

    def _committed(self) -> None:
        self._done = True

    def abort(self) -> None:
        """Throw away what was written."""
        if self._done:
            return
        self._done = True
        self._pieces = []
        self._buffered = 0
        with self._store.write(durable=False) as txn:
            _drop_pending(txn, self._account_id, self.content_id)


def _drop_pending(txn: WriteTxn, account_id: bytes, content_id: bytes) -> None:
    txn.meta_delete(_PENDING + account_id + content_id)
    try:
        user = txn.user(account_id)
    except (NotFound, CorruptRecord):
        return  # the account is gone, and its blobs with it
    raw = user.get(SPACE_CONTENT, content_id)
    if raw is not None and not _META.unpack(raw)[3]:
        user.delete_blob(content_id)
        user.delete(SPACE_CONTENT, content_id)


def sweep_pending(store: Store, older_than: float = 3600.0) -> int:
    """Remove content begun more than ``older_than`` seconds ago and never committed."""
    cutoff = time.time() - older_than
    with store.read() as txn:
        stale = [
            key[len(_PENDING) :] for key, value in txn.meta_scan(_PENDING) if _U64.unpack(value)[0] < cutoff
        ]
    for ident in stale:
        with store.write(durable=False) as txn:
            _drop_pending(txn, ident[:16], ident[16:])
    return len(stale)

