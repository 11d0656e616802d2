"""The body gate of ``/files/``: who, where, how big — decided from the headers alone.

Runs on the reactor when a request's headers are complete (see
``protocols/http/body.py``) and answers before a byte of the body is read:

- 400 for a malformed or traversing path (paths.py), 403 without TLS;
- 401 without valid Basic credentials (RFC 7617; password or app password,
  checked by ``services.auth``, so throttling and constant time apply);
- 403 for another user's home;
- 413 for a PUT larger than ``[webdav] max_upload_size``;
- 507 for a PUT that would exceed the account's quota (RFC 4918 §9.7.1,
  RFC 4331), or any PUT when the quota is used up.

An accepted PUT streams its body into the provider (sealed chunks), unless
its Content-Length says it is small (``SMALL_PUT``); every other accepted body
is small XML and stays in memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from ...services.accounts import AccountError, normalize_address
from ...services.auth import AuthFailed, Principal
from ...storage import NotFound
from ...storage import accounts as directory
from ...storage import files
from ...storage import quota as account_quota
from ..http.body import Accept, Reject, RequestHead
from .paths import PathError, parse_request_path

log = Logger(namespace="schoolsuite.webdav")

REALM = "schoolsuite files"
_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")
#: XML request bodies (PROPFIND, PROPPATCH, LOCK) are small.
MAX_XML_BODY = 1 << 20
#: A PUT body of at most this many bytes (by its Content-Length) is read whole before WsgiDAV
#: starts, and sealed in the one transaction that publishes it; larger or chunked bodies stream.
SMALL_PUT = 256 * 1024


@dataclass(frozen=True)
class FilesContext:
    """The authenticated user of one request."""

    account_id: bytes
    address: str
    method: str  # password or app-password
    quota: int | None = None  # the account's quota as the gate read it (None: none)


def _reject(status: int, text: str, *extra: tuple[bytes, bytes]) -> Reject:
    return Reject(status, (_TEXT, *extra), (text + "\n").encode())


def unauthorized(text: str = "authentication required") -> Reject:
    """RFC 7235 §3.1 / RFC 7617 §2: ask for Basic credentials in UTF-8."""
    challenge = f'Basic realm="{REALM}", charset="UTF-8"'.encode()
    return _reject(401, text, (b"WWW-Authenticate", challenge))


def basic_credentials(headers: Any) -> tuple[str, str] | None:
    """RFC 7617 §2: user-id and password from ``Authorization: Basic``, or None."""
    values = headers.getRawHeaders(b"authorization")
    if not values:
        return None
    scheme, _, token = values[0].strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    if not colon or not user:
        return None
    return user, password


class PrincipalCache:
    """Recently verified ``Authorization`` headers (hashed) → principal, for a short time.

    Clients send credentials with every request; this spares the argon2 check
    for each one. Entries of an account are dropped when it is disabled or
    deleted (services.sessions).
    """

    def __init__(self, sessions: Any, ttl: float, max_entries: int = 10_000) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[bytes, tuple[Principal, float]] = {}
        self._registered: dict[bytes, Any] = {}

    @staticmethod
    def key(header: bytes) -> bytes:
        return hashlib.sha256(header).digest()

    def get(self, key: bytes, now: float) -> Principal | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[1] < now:
            del self._entries[key]
            return None
        return hit[0]

    def add(self, key: bytes, principal: Principal, now: float) -> None:
        if self._ttl <= 0:
            return
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key] = (principal, now + self._ttl)
        if principal.account_id not in self._registered and self._sessions is not None:
            self._registered[principal.account_id] = self._sessions.add(
                principal.account_id, lambda aid=principal.account_id: self.forget(aid))

    def forget(self, account_id: bytes) -> None:
        self._entries = {k: v for k, v in self._entries.items() if v[0].account_id != account_id}
        self._registered.pop(account_id, None)


class FilesGate:
    """``body_gate`` of the ``/files/`` mount (see module doc)."""

    def __init__(self, services: Any, max_upload: int, auth_cache_seconds: float) -> None:
        self._services = services
        self._store = services.store
        self._max_upload = max_upload
        self._cache = PrincipalCache(getattr(services, "sessions", None), auth_cache_seconds)

    def __call__(self, head: RequestHead) -> Any:
        try:
            path = parse_request_path(head.path)
        except PathError as e:
            return _reject(e.status, e.reason)
        if not head.secure:
            return _reject(403, "WebDAV is served over TLS only")
        creds = basic_credentials(head.headers)
        if creds is None:
            if head.method == b"OPTIONS":
                # Windows' mini-redirector probes capabilities before it authenticates.
                return Accept(max_body=0, context={"files": None})
            return unauthorized()
        header = head.headers.getRawHeaders(b"authorization")[0]
        key = self._cache.key(header)
        now = time.monotonic()
        cached = self._cache.get(key, now)
        if cached is not None:
            active, quota, available = self._account_state(cached.account_id, head.method == b"PUT")
            if active:
                return self._decide(head, path, cached, quota, available)
            self._cache.forget(cached.account_id)  # deleted or disabled (maybe by another process)
        d = self._services.auth.authenticate(creds[0], creds[1], head.client, "webdav")

        def ok(principal: Principal) -> Accept | Reject:
            self._cache.add(key, principal, time.monotonic())
            active, quota, available = self._account_state(principal.account_id, head.method == b"PUT")
            if not active:
                raise NotFound("account gone")
            return self._decide(head, path, principal, quota, available)

        def failed(failure: Any) -> Reject:
            if failure.check(AuthFailed):
                return unauthorized("authentication failed")
            log.failure("authentication error", failure)
            return _reject(503, "authentication is unavailable, try again")

        d.addCallbacks(ok, failed)
        return d

    def _decide(self, head: RequestHead, path: Any, principal: Principal, quota: int | None,
                available: int | None) -> Accept | Reject:
        """``available``: the bytes the account may still store (None: no quota), for a PUT."""
        if path.owner is not None and path.owner != principal.address:
            try:
                owner = normalize_address(path.owner)
            except AccountError:
                owner = None
            if owner != principal.address:
                return _reject(403, "this is not your file space")
        # The parsed path goes along, so that FilesApp need not parse the same bytes again.
        context = {"files": FilesContext(principal.account_id, principal.address, principal.method, quota),
                   "files_path": (head.path, path)}
        if head.method != b"PUT":
            return Accept(max_body=MAX_XML_BODY, context=context)
        if head.length is not None and head.length > self._max_upload:
            return _reject(413, f"uploads are limited to {self._max_upload} bytes")
        if available is not None and (head.length or 0) > available:
            available += self._replaced_size(principal.account_id, path)  # a replaced file frees its bytes
        if available is not None and (available <= 0 or (head.length or 0) > available):
            return _reject(507, "your file space is full")  # RFC 4918 §9.7.1 / RFC 4331
        # A small body is read before the worker starts: no waiting on the network in a worker thread.
        small = head.length is not None and head.length <= SMALL_PUT
        return Accept(max_body=self._max_upload, stream=not small, context=context)

    def _account_state(self, account_id: bytes, usage: bool) -> tuple[bool, int | None, int | None]:
        """(still active, quota, bytes available if ``usage``) of the principal's account, in one read."""
        with self._store.read() as txn:
            account = directory.get_account(txn, account_id)
            if account is None or not account.active:
                return False, None, None
            if not usage or account.quota is None:
                return True, account.quota, None
            return True, account.quota, account.quota - account_quota.used_bytes(txn.user(account_id))

    def _replaced_size(self, account_id: bytes, path: Any) -> int:
        """Size of the file a PUT to ``path`` would replace (0 if none); looked up only near the quota."""
        with self._store.read() as txn:
            entry = files.lookup(txn.user(account_id), list(path.names)) if path.owner is not None else None
        return entry.size if entry is not None and not entry.is_dir else 0
