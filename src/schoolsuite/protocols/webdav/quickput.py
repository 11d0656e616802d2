"""A small PUT without WsgiDAV: one write transaction, answered from the reactor.

Most PUTs (a document saved, a tree copied up by rclone or Finder) are small,
go to a path whose parent exists, carry no precondition and meet no lock. For
those, WsgiDAV's way (WSGI environ, resolver, lock manager, separate reads for
the path, the locks and the quota, a response page) costs more than the work.
:func:`eligible` picks them by their headers, before any thread is involved;
:func:`publish` does the whole PUT in one durable transaction (RFC 9110 §9.3.4:
201 for a new file, 204 for a replaced one, with the new ETag) and raises
:class:`NotQuick` when the store shows a reason to let WsgiDAV handle it after
all: a lock anywhere in the account (RFC 4918 §7: WsgiDAV checks tokens), no
collection at the parent (409), a collection at the path (405), a file space
not made yet, or not enough quota (507). Nothing is written then, and the
request takes the ordinary way with the same body.
"""

from __future__ import annotations

from typing import Any

from ...storage import files
from ...storage import quota as account_quota
from ...storage.content import put_content
from ...storage.files import Entry
from .gate import SMALL_PUT, FilesContext
from .paths import FilesPath

#: Headers that need WsgiDAV: preconditions and lock tokens (RFC 9110 §13, RFC 4918 §10.4), and the
#: ones it refuses on a PUT (Content-Range: 400, Content-Encoding: 501).
_NEEDS_WSGIDAV = (b"if", b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since",
                  b"content-range", b"content-encoding")


class NotQuick(Exception):
    """The store shows a reason for WsgiDAV to handle this PUT (nothing was written)."""


def eligible(request: Any, ctx: FilesContext | None, path: FilesPath | None) -> bool:
    """Whether a PUT can take the quick way, from its line and headers (the body is already in memory)."""
    if request.method != b"PUT" or ctx is None or path is None or path.trailing_slash or not path.names:
        return False
    if path.owner is None or path.owner.lower() != ctx.address:
        return False
    length = request.getHeader(b"content-length")
    if length is None or not length.isdigit() or int(length) > SMALL_PUT:
        return False  # streamed (the gate decided by the same length)
    headers = request.requestHeaders
    if any(headers.hasHeader(name) for name in _NEEDS_WSGIDAV):
        return False
    mtime = request.getHeader(b"x-oc-mtime")
    return mtime is None or mtime.isdigit()  # a bad one gets WsgiDAV's 400


def publish(store: Any, ctx: FilesContext, names: tuple[str, ...], body: bytes, content_type: str,
            mtime: float | None) -> tuple[Entry, Entry | None]:
    """The whole PUT in one durable write transaction: (the new entry, the entry it replaced or None)."""
    with store.write() as txn:
        user = txn.user(ctx.account_id)
        if files.has_locks(user):
            raise NotQuick("the account holds locks")
        parent = files.lookup(user, list(names[:-1]))
        if parent is None or not parent.is_dir:
            raise NotQuick("no collection at the parent")
        old = files.child(user, parent, names[-1])
        if old is not None and old.is_dir:
            raise NotQuick("a collection at the path")
        # RFC 4331: the quota as the gate read it from the account for this request.
        if ctx.quota is not None and account_quota.used_bytes(user) - (old.size if old else 0) + len(body) > ctx.quota:
            raise NotQuick("over quota")
        content = put_content(user, body) if body else None
        return files.replace_file(user, parent, names[-1], content, content_type, mtime)
