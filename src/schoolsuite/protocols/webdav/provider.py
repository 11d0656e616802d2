"""The WsgiDAV provider over the sealed store: ``/files/ADDRESS/...`` is one account's tree.

WsgiDAV runs each request in a worker thread; the provider reads with short
read transactions and writes with its own write transactions there (LMDB
serialises writers; the reactor never waits for them). The authenticated
user comes from ``environ["schoolsuite.files"]`` (set by app.py from the
body gate), never from the URL: a path naming another home resolves to
nothing.

RFC 4918 semantics that WsgiDAV leaves to providers live here:
MOVE re-links one entry (§9.9; content and dead properties follow), COPY
shares content by reference (§9.8), DELETE removes a subtree in one
transaction (§9.6.1), and collections report RFC 4331 quota.
"""

from __future__ import annotations

import fnmatch
import mimetypes
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_CONFLICT, HTTP_FORBIDDEN, HTTP_INSUFFICIENT_STORAGE, HTTP_NOT_FOUND, DAVError)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider

from ...storage import Conflict, NotFound, StoreFullError
from ...storage import accounts as directory
from ...storage import files
from ...storage import quota as account_quota
from ...storage.content import ContentInfo, ContentWriter, put_content, stream_content
from ...storage.files import Entry
from . import metrics
from .gate import SMALL_PUT, FilesContext

#: Names that macOS Finder writes beside every file (AppleDouble, folder view
#: settings): stored and readable by name, but left out of listings.
HIDDEN_PATTERNS = ("._*", ".DS_Store")
#: Uploads up to this size are sealed in the final transaction alone (the gate reads them whole first).
SMALL_UPLOAD = SMALL_PUT
#: Bytes sealed and committed per transaction of a large upload (each commit waits for the disk once).
#: Measured on 256 MiB PUTs (benchmarks/webdav_vs_wsgidav.py, quiet rounds) with one batch waiting:
#: 4 MiB 612 MB/s and 75 MB peak RssAnon, 8 MiB 655 / 90, 16 MiB 689 / 115, 32 MiB 751 / 180.
SEAL_BATCH = 16 << 20


#: environ key: the entries this request resolved, by path (names below the home), until it writes.
LOOKUPS = "schoolsuite.lookups"


def _walk(user: Any, names: tuple[str, ...], cache: dict[tuple[str, ...], Entry | None]) -> Entry | None:
    """The entry at ``names``, remembering every prefix on the way (WsgiDAV resolves a path and its parent)."""
    depth = len(names)
    while depth > 0 and names[:depth] not in cache:
        depth -= 1
    entry = cache[names[:depth]] if names[:depth] in cache else files.root(user)
    cache[names[:depth]] = entry
    while depth < len(names) and entry is not None:
        entry = files.child(user, entry, names[depth])
        depth += 1
        cache[names[:depth]] = entry
    return entry if depth == len(names) else None


def is_hidden(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in HIDDEN_PATTERNS)


def context(environ: dict[str, Any]) -> FilesContext:
    ctx = environ.get("schoolsuite.files")
    if ctx is None:
        raise DAVError(HTTP_FORBIDDEN)
    return ctx


class FileSpaceProvider(DAVProvider):
    """Resolves ``/ADDRESS/names...`` to resources of the authenticated account."""

    def __init__(self, store: Any, block_size: int) -> None:
        super().__init__()
        self.store = store
        self.block_size = block_size

    def is_readonly(self) -> bool:
        return False

    def get_resource_inst(self, path: str, environ: dict[str, Any]) -> Any:
        ctx = context(environ)
        parts = [p for p in path.split("/") if p]
        if not parts:
            return TopCollection(path or "/", environ)
        if parts[0] != ctx.address:
            return None
        names = tuple(files.normalize_name(n) for n in parts[1:])
        cache = environ.setdefault(LOOKUPS, {})
        if names in cache:
            entry = cache[names]
        else:
            with self.store.read() as txn:
                entry = _walk(txn.user(ctx.account_id), names, cache)
            if entry is None and cache.get(()) is None:
                # An account made without the protocol modules loaded (e.g. an older CLI) gets its space now.
                with self.write(environ) as txn:
                    files.init_space(txn.user(ctx.account_id))
                return self.get_resource_inst(path, environ)
        if entry is None:
            return None
        return make_resource(path, entry, environ)

    def write(self, environ: dict[str, Any]) -> Any:
        """A write transaction for this request; what the request looked up before is forgotten."""
        environ.pop(LOOKUPS, None)
        return self.store.write()

    def quota(self, ctx: FilesContext) -> tuple[int, int | None]:
        """(bytes used, quota or None) of the account."""
        with self.store.read() as txn:
            used = account_quota.used_bytes(txn.user(ctx.account_id))
            account = directory.get_account(txn, ctx.account_id)
        return used, (account.quota if account is not None else None)


#: RFC 3986 §3.3 pchar: these need no escaping in an href ("@" of the address included).
_HREF_SAFE = "/!*'(),$-_|.@:+=;&~"


def href(res: Any) -> str:
    """RFC 4918 §8.3: the path-absolute href of a resource, escaped no more than needed.

    The home's segment is spelled as the client spelled it in the request
    (``alice@...`` or ``alice%40...``): davfs2 and litmus both match the
    hrefs of a multistatus against the URL they asked for, character by
    character, and they escape the "@" differently.
    """
    path = res.get_preferred_path()
    owner = context(res.environ).address
    base = res.provider.mount_path + res.provider.share_path
    if path == "/" or not path.startswith("/" + owner):
        return quote(base + path, safe=_HREF_SAFE)
    spelled = res.environ.get("schoolsuite.owner_raw") or quote(owner, safe=_HREF_SAFE)
    return base + "/" + spelled + quote(path[1 + len(owner):], safe=_HREF_SAFE)


def make_resource(path: str, entry: Entry, environ: dict[str, Any]) -> Any:
    cls = Folder if entry.is_dir else File
    res = cls(path, entry, environ)
    environ.setdefault("schoolsuite.entries", {})[res.get_ref_url()] = entry.id
    return res


class TopCollection(DAVCollection):
    """``/files/``: a read-only collection whose one member is the user's home."""

    def __init__(self, path: str, environ: dict[str, Any]) -> None:
        super().__init__(path, environ)
        self._ctx = context(environ)

    def get_member_names(self) -> list[str]:
        return [self._ctx.address]

    def get_member(self, name: str) -> Any:
        return self.provider.get_resource_inst(util.join_uri(self.path, name), self.environ)

    def get_display_name(self) -> str:
        return "files"

    def get_href(self) -> str:
        return href(self)

    def prevent_locking(self) -> bool:
        return True


class _Entry:
    """What files and folders share."""

    entry: Entry
    provider: FileSpaceProvider
    environ: dict[str, Any]
    path: str

    def _ctx(self) -> FilesContext:
        return context(self.environ)

    def get_href(self) -> str:
        return href(self)

    def _write(self) -> Any:
        return self.provider.write(self.environ)

    def get_creation_date(self) -> float:
        return self.entry.created

    def get_last_modified(self) -> float:
        return float(int(self.entry.modified))  # HTTP dates have whole seconds (RFC 9110 §5.6.7)

    def get_display_name(self) -> str:
        return self.entry.name or self._ctx().address

    def _current(self, user: Any) -> Entry:
        """The entry as it is in this transaction (it may have changed since resolved)."""
        names = [files.normalize_name(n) for n in self.path.split("/")[2:] if n]
        entry = files.lookup(user, names)
        if entry is None or entry.id != self.entry.id:
            raise DAVError(HTTP_NOT_FOUND)
        return entry

    def _dest(self, user: Any, dest_path: str) -> tuple[Entry, str]:
        """(parent entry, name) of a destination path in the user's home."""
        parts = [p for p in dest_path.split("/") if p]
        if len(parts) < 2 or parts[0] != self._ctx().address:
            raise DAVError(HTTP_FORBIDDEN)
        parent = files.lookup(user, [files.normalize_name(n) for n in parts[1:-1]])
        if parent is None or not parent.is_dir:
            raise DAVError(HTTP_CONFLICT)
        return parent, files.normalize_name(parts[-1])

    def delete(self) -> list[Any]:
        """RFC 4918 §9.6: remove the entry and everything below it, in one transaction."""
        ctx = self._ctx()
        with self._write() as txn:
            user = txn.user(ctx.account_id)
            entry = self._current(user)
            if entry.id == files.ROOT_ID:
                raise DAVError(HTTP_FORBIDDEN)
            freed = entry.size if not entry.is_dir else sum(e.size for _, e in files.descendants(user, entry))
            files.delete_tree(user, entry)
        metrics.STORED_BYTES.dec(freed)
        self.remove_all_locks(recursive=True)  # type: ignore[attr-defined]
        return []

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        """RFC 4918 §9.8/§9.9 for one resource: content and dead properties go along, content by reference."""
        ctx = self._ctx()
        added = 0
        try:
            with self._write() as txn:
                user = txn.user(ctx.account_id)
                entry = self._current(user)
                parent, name = self._dest(user, dest_path)
                if is_move:
                    files.move(user, entry, parent, name)
                else:
                    old = files.child(user, parent, name)
                    added = entry.size - (old.size if old is not None else 0)
                    account = directory.get_account(txn, ctx.account_id)
                    quota = account.quota if account is not None else None
                    if quota is not None and added > 0 and account_quota.used_bytes(user) + added > quota:
                        raise DAVError(HTTP_INSUFFICIENT_STORAGE)  # RFC 4918 §9.8.7; copies count
                    files.copy_entry(user, entry, parent, name)
        except Conflict:
            raise DAVError(HTTP_CONFLICT) from None
        metrics.STORED_BYTES.inc(added)

    def set_last_modified(self, dest_path: str, time_stamp: Any, *, dry_run: bool) -> bool:
        """``X-OC-Mtime`` (rclone, ownCloud clients) or Win32LastModifiedTime: keep the client's time."""
        try:
            stamp = float(time_stamp) if not isinstance(time_stamp, str) or time_stamp.isdigit() \
                else util.parse_time_string(time_stamp)
        except (TypeError, ValueError):
            raise DAVError(HTTP_CONFLICT) from None
        if stamp is None:
            raise DAVError(HTTP_CONFLICT)
        if dry_run:
            return True
        ctx = self._ctx()
        with self._write() as txn:
            user = txn.user(ctx.account_id)
            self.entry = files.set_modified(user, self._current(user), float(stamp))
        return True


class Folder(_Entry, DAVCollection):
    """A collection of the user's tree."""

    def __init__(self, path: str, entry: Entry, environ: dict[str, Any]) -> None:
        DAVCollection.__init__(self, path, environ)
        self.entry = entry

    def _members(self) -> list[Entry]:
        ctx = self._ctx()
        with self.provider.store.read() as txn:
            members = list(files.children(txn.user(ctx.account_id), self.entry))
        if self.environ.get("REQUEST_METHOD") == "PROPFIND":
            # macOS Finder's AppleDouble and .DS_Store files stay out of listings.
            members = [m for m in members if not is_hidden(m.name)]
        return sorted(members, key=lambda m: m.name)

    def get_member_names(self) -> list[str]:
        return [m.name for m in self._members()]

    def get_member_list(self) -> list[Any]:
        """One scan for all members (no lookup per name)."""
        return [make_resource(util.join_uri(self.path, m.name), m, self.environ) for m in self._members()]

    def get_member(self, name: str) -> Any:
        ctx = self._ctx()
        with self.provider.store.read() as txn:
            entry = files.child(txn.user(ctx.account_id), self.entry, name)
        return None if entry is None else make_resource(util.join_uri(self.path, entry.name), entry, self.environ)

    # RFC 4331 §3, §4: quota of the whole account, reported on every collection.
    def get_used_bytes(self) -> int:
        return self.provider.quota(self._ctx())[0]

    def get_available_bytes(self) -> int | None:
        used, quota = self.provider.quota(self._ctx())
        return None if quota is None else max(0, quota - used)

    def create_empty_resource(self, name: str) -> Any:
        """A new file: for PUT it appears when its content is committed; for LOCK at once (RFC 4918 §7.3)."""
        name = files.normalize_name(name)
        path = util.join_uri(self.path, name)
        if self.environ.get("REQUEST_METHOD") == "PUT":
            return File(path, None, self.environ, parent=self.entry, name=name)
        ctx = self._ctx()
        try:
            with self._write() as txn:
                entry, _ = files.put_file(txn.user(ctx.account_id), self.entry, name, None)
        except Conflict:
            raise DAVError(HTTP_CONFLICT) from None
        return make_resource(path, entry, self.environ)

    def create_collection(self, name: str) -> Any:
        ctx = self._ctx()
        try:
            with self._write() as txn:
                entry = files.make_collection(txn.user(ctx.account_id), self.entry, name)
        except Conflict:
            raise DAVError(HTTP_CONFLICT) from None
        return make_resource(util.join_uri(self.path, entry.name), entry, self.environ)

    def support_recursive_delete(self) -> bool:
        return True

    def support_recursive_move(self, dest_path: str) -> bool:
        return True

    def move_recursive(self, dest_path: str) -> list[Any]:
        """RFC 4918 §9.9: a collection moves by re-linking its entry; members follow."""
        self.copy_move_single(dest_path, is_move=True)
        return []

    def support_etag(self) -> bool:
        return False


class File(_Entry, DAVNonCollection):
    """A file: sealed chunks, streamed in and out."""

    def __init__(self, path: str, entry: Entry | None, environ: dict[str, Any], *,
                 parent: Entry | None = None, name: str = "") -> None:
        DAVNonCollection.__init__(self, path, environ)
        self.entry = entry  # type: ignore[assignment]
        self._parent = parent
        self._new_name = name
        self._upload: Upload | None = None

    def get_content_length(self) -> int:
        return self.entry.size if self.entry else 0

    def support_recursive_move(self, dest_path: str) -> bool:
        return True

    def move_recursive(self, dest_path: str) -> list[Any]:
        """RFC 4918 §9.9: a file moves by re-linking its entry; the content is not rewritten."""
        self.copy_move_single(dest_path, is_move=True)
        return []

    def get_content_type(self) -> str:
        if self.entry and self.entry.content_type:
            return self.entry.content_type
        guess, _ = mimetypes.guess_type(self.name)
        return guess or "application/octet-stream"

    def get_etag(self) -> str | None:
        return self.entry.etag if self.entry else None

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def get_creation_date(self) -> float | None:  # type: ignore[override]
        return self.entry.created if self.entry else None

    def get_last_modified(self) -> float | None:  # type: ignore[override]
        return float(int(self.entry.modified)) if self.entry else None

    def get_content(self) -> "ContentReader":
        ctx = self._ctx()
        return ContentReader(self.provider.store, ctx.account_id, self.entry, self.provider.block_size)

    def begin_write(self, *, content_type: str | None = None) -> "Upload":
        self._upload = Upload(self, self._ctx(), content_type or "")
        return self._upload

    def end_write(self, *, with_errors: bool) -> None:
        if with_errors and self._upload is not None:
            self._upload.abort()

    def room(self) -> int | None:
        """Bytes this upload may take (None: no quota): what is left, plus what it replaces."""
        used, quota = self.provider.quota(self._ctx())
        replaced = self.entry.size if self.entry else 0
        return None if quota is None else quota - used + replaced

    def publish(self, txn: Any, content: Any, size: int, content_type: str) -> None:
        """Link the uploaded content as this file in ``txn`` (the old content loses its reference).

        ``content``: a :class:`ContentWriter` to commit here, bytes to seal here, or None (empty).
        Called with the request's only durable write: the content's last chunks, the entry,
        the quota check (RFC 4331: 507 when over) and an ``X-OC-Mtime`` all go in one commit.
        """
        ctx = self._ctx()
        user = txn.user(ctx.account_id)
        if self.entry is None:
            parent_id, name = self._parent.id, self._new_name  # type: ignore[union-attr]
        else:
            parent_id, name = self.entry.parent, self.entry.name
        if not files.exists(user, parent_id):
            raise DAVError(HTTP_CONFLICT)  # the collection went away meanwhile (RFC 4918 §9.7.1)
        parent = Entry(parent_id, b"", "", True)
        old = files.child(user, parent, name)
        account = directory.get_account(txn, ctx.account_id)
        if account is not None and account.quota is not None:
            if account_quota.used_bytes(user) - (old.size if old else 0) + size > account.quota:
                raise DAVError(HTTP_INSUFFICIENT_STORAGE)
        if isinstance(content, ContentWriter):
            info: ContentInfo | None = content.commit(txn)
        else:
            info = put_content(user, content) if content else None
        entry, old = files.replace_file(user, parent, name, info, content_type, _client_mtime(self.environ))
        self.entry = entry
        delta = entry.size - (old.size if old else 0)
        txn.after_commit(lambda: metrics.STORED_BYTES.inc(delta))

    def set_last_modified(self, dest_path: str, time_stamp: Any, *, dry_run: bool) -> bool:
        if not dry_run and self.entry is not None and self._upload is not None \
                and _client_mtime(self.environ) == self.entry.modified:
            return True  # X-OC-Mtime of this PUT: already stored with its content (no second commit)
        return super().set_last_modified(dest_path, time_stamp, dry_run=dry_run)


def _client_mtime(environ: dict[str, Any]) -> float | None:
    """``X-OC-Mtime`` of a PUT (rclone, ownCloud clients): whole seconds, or None."""
    value = environ.get("HTTP_X_OC_MTIME")
    return float(int(value)) if value is not None and value.isdigit() else None


class Upload:
    """The file object WsgiDAV writes a PUT body into.

    Small bodies stay in memory and are sealed in the one final transaction.
    Larger ones stream through a :class:`ContentWriter` (batches sealed and
    stored as they fill, on a thread of their own), so memory stays bounded;
    exceeding the quota mid-way raises 507. Either way the file appears in one
    durable commit, after which WsgiDAV answers 201/204.
    """

    def __init__(self, target: File, ctx: FilesContext, content_type: str) -> None:
        self.target = target
        self.ctx = ctx
        self.content_type = content_type
        self.room: int | None = None
        self.size = 0
        self._blocks: list[bytes] = []  # received and not yet handed on (no copy: sealed as they are)
        self._held = 0
        self.writer: ContentWriter | None = None
        self._sealer: _Sealer | None = None
        self._closed = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        metrics.BYTES.labels("in").inc(len(data))
        self._blocks.append(data if isinstance(data, bytes) else bytes(data))
        self._held += len(data)
        if self.writer is None:
            if self._held <= SMALL_UPLOAD:
                return  # the quota is checked in the final transaction
            self.room = self.target.room()
            self._check_room()
            self.writer = ContentWriter(self.target.provider.store, self.ctx.account_id, batch_bytes=SEAL_BATCH)
            self._sealer = _Sealer(self.writer)
        self._check_room()
        if self._held >= SEAL_BATCH:
            self._hand_on()

    def _hand_on(self) -> None:
        assert self._sealer is not None
        blocks, self._blocks, self._held = self._blocks, [], 0
        self._sealer.put(blocks)

    def _check_room(self) -> None:
        if self.room is not None and self.size > self.room:
            self.abort()
            raise DAVError(HTTP_INSUFFICIENT_STORAGE)

    def writelines(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.writer is not None:
                assert self._sealer is not None
                if self._blocks:
                    self._hand_on()
                self._sealer.finish()
                content: Any = self.writer
            else:
                content, self._blocks, self._held = b"".join(self._blocks), [], 0
            with self.target.provider.write(self.target.environ) as txn:
                self.target.publish(txn, content, self.size, self.content_type)
        except StoreFullError:
            self.abort()
            raise DAVError(HTTP_INSUFFICIENT_STORAGE) from None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        self._closed = True
        self._blocks, self._held = [], 0
        if self._sealer is not None:
            self._sealer.cancel()
        if self.writer is not None:
            try:
                self.writer.abort()
            except NotFound:
                pass


class _Sealer:
    """Seals and commits an upload's batches on a thread of its own.

    The request's thread keeps reading the body from the network while the
    previous batch is sealed and committed (the commit waits for fsync with
    the GIL released), so receiving and storing overlap. At most ``depth``
    batches wait, which bounds the memory of one upload.
    """

    def __init__(self, writer: ContentWriter, depth: int = 1) -> None:
        self._writer = writer
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="webdav-seal", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._error is None and not self._cancelled:
                try:
                    for block in batch:
                        self._writer.write(block)
                except BaseException as e:  # reported to the request's thread by put/finish
                    self._error = e

    def put(self, batch: list[bytes]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def finish(self) -> None:
        """Wait until every batch is committed; raise what went wrong."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        self._cancelled = True
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._queue.put(None)
        self._thread.join()


class _Prefetch:
    """Pieces of a content stream read one step ahead on a thread of its own.

    While the reactor encrypts one block for TLS (without the GIL), the next
    chunks are read and opened, so sending and unsealing overlap. At most
    ``depth`` pieces wait.
    """

    _END = object()

    def __init__(self, pieces: Iterator[bytes], depth: int = 8) -> None:
        self._pieces = pieces
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webdav-read", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for piece in self._pieces:
                while not self._stop.is_set():
                    try:
                        self._queue.put(piece, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(self._END)
        except BaseException as e:  # handed to the reader
            self._queue.put(e)

    def __iter__(self) -> "_Prefetch":
        return self

    def __next__(self) -> bytes:
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._thread.join(timeout=5)


class ContentReader:
    """A seekable read-only file over a file's sealed content (WsgiDAV seeks for Range requests).

    The first read after a seek is served directly (a small range costs no
    thread); a second one means a stream, which then continues read ahead.
    """

    def __init__(self, store: Any, account_id: bytes, entry: Entry, block_size: int) -> None:
        self._store = store
        self._account = account_id
        self._content_id = entry.content_id
        self._size = entry.size
        self._pos = 0
        self._pieces: Iterator[bytes] | None = None
        self._reads = 0
        self._buffer = b""

    def _drop_stream(self) -> None:
        if isinstance(self._pieces, _Prefetch):
            self._pieces.close()
        self._pieces = None
        self._reads = 0

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        self._drop_stream()
        self._buffer = b""
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if self._content_id is None or self._pos >= self._size:
            return b""
        if self._pieces is None:
            self._pieces = stream_content(self._store, self._account, self._content_id, self._pos)
        elif self._reads == 1 and not isinstance(self._pieces, _Prefetch):
            self._pieces = _Prefetch(self._pieces)
        self._reads += 1
        want = self._size - self._pos if size is None or size < 0 else min(size, self._size - self._pos)
        out = [self._buffer] if self._buffer else []
        got = len(self._buffer)
        self._buffer = b""
        while got < want:
            try:
                piece = next(self._pieces)
            except StopIteration:
                break
            out.append(piece)
            got += len(piece)
        data = b"".join(out)
        if len(data) > want:
            data, self._buffer = data[:want], data[want:]
        self._pos += len(data)
        metrics.BYTES.labels("out").inc(len(data))
        return data

    def close(self) -> None:
        self._drop_stream()
        self._buffer = b""
