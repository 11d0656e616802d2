"""WsgiDAV lock storage in the store: class 2 locks (RFC 4918 §6, §9.10, §9.11) that survive restarts.

WsgiDAV's ``LockManager`` calls its storage without the request; app.py
binds the authenticated account to the worker thread for the request's
duration (:func:`bind`), so a lock token is only ever looked up in its
owner's records and one user can neither see nor release another's locks.
Within a request the account's locks are read once and cached.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

from wsgidav.lock_man.lock_manager import generate_lock_token, normalize_lock_root, validate_lock

from ...storage import files

#: RFC 4918 §10.7: we may shorten requested timeouts; a week at most.
LOCK_TIMEOUT_MAX = 7 * 24 * 3600
LOCK_TIMEOUT_DEFAULT = 3600

_current = threading.local()


def bind(store: Any, account_id: bytes | None) -> None:
    """Make ``account_id`` the owner of lock operations on this thread (None: unbind)."""
    _current.store = store
    _current.account_id = account_id
    _current.cache = None


def _bound() -> tuple[Any, bytes]:
    account_id = getattr(_current, "account_id", None)
    if account_id is None:
        raise PermissionError("no account bound to this request")
    return _current.store, account_id


def _encode(lock: dict[str, Any]) -> dict[str, Any]:
    out = dict(lock)
    out["owner"] = base64.b64encode(lock["owner"]).decode()
    return out


def _decode(raw: dict[str, Any]) -> dict[str, Any]:
    out = dict(raw)
    out["owner"] = base64.b64decode(raw["owner"])
    return out


def _expired(lock: dict[str, Any], now: float) -> bool:
    return 0 <= float(lock["expire"]) < now


class StoreLockStorage:
    """The ``lock_storage`` interface of WsgiDAV's LockManager, over the account's records."""

    def __repr__(self) -> str:
        return "StoreLockStorage()"

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def cleanup(self) -> None:
        pass

    def clear(self) -> None:
        store, account_id = _bound()
        with store.write() as txn:
            user = txn.user(account_id)
            for lock in list(files.all_locks(user)):
                files.delete_lock(user, lock["token"])
        _current.cache = None

    def _all(self) -> dict[str, dict[str, Any]]:
        cache = getattr(_current, "cache", None)
        if cache is None:
            store, account_id = _bound()
            with store.read() as txn:
                cache = {lock["token"]: _decode(lock) for lock in files.all_locks(txn.user(account_id))}
            _current.cache = cache
        return cache

    def get(self, token: str) -> dict[str, Any] | None:
        lock = self._all().get(token)
        if lock is None:
            return None
        if _expired(lock, time.time()):
            self.delete(token)
            return None
        return lock

    def create(self, path: str, lock: dict[str, Any]) -> dict[str, Any]:
        assert lock.get("token") is None and lock.get("expire") is None
        lock["root"] = normalize_lock_root(path)
        timeout = float(lock.get("timeout") or LOCK_TIMEOUT_DEFAULT)
        if timeout < 0 or timeout > LOCK_TIMEOUT_MAX:
            timeout = LOCK_TIMEOUT_MAX
        lock["timeout"] = timeout
        lock["expire"] = time.time() + timeout
        validate_lock(lock)
        lock["token"] = generate_lock_token()
        self._put(lock)
        return lock

    def refresh(self, token: str, *, timeout: float) -> dict[str, Any]:
        lock = self._all().get(token)
        if lock is None:
            raise ValueError("no such lock")
        if timeout < 0 or timeout > LOCK_TIMEOUT_MAX:
            timeout = LOCK_TIMEOUT_MAX
        lock = dict(lock, timeout=timeout, expire=time.time() + timeout)
        self._put(lock)
        return lock

    def _put(self, lock: dict[str, Any]) -> None:
        store, account_id = _bound()
        with store.write() as txn:
            files.put_lock(txn.user(account_id), lock["token"], _encode(lock))
        self._all()[lock["token"]] = lock

    def delete(self, token: str) -> bool:
        store, account_id = _bound()
        with store.write() as txn:
            found = files.delete_lock(txn.user(account_id), token)
        self._all().pop(token, None)
        return found

    def get_lock_list(self, path: str, *, include_root: bool, include_children: bool,
                      token_only: bool) -> list[Any]:
        path = normalize_lock_root(path)
        now = time.time()
        out: list[Any] = []
        for token, lock in list(self._all().items()):
            root = lock["root"]
            hit = (include_root and root == path) or (
                include_children and root.startswith(path.rstrip("/") + "/"))
            if not hit:
                continue
            if _expired(lock, now):
                self.delete(token)
                continue
            out.append(token if token_only else lock)
        return out
