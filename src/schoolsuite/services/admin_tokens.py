"""Bearer tokens of the provisioning API.

A token reads ``sst_<16 hex id>_<43 letters secret>``. The id names the
stored entry; only the SHA-256 of the secret is kept. The secret has 256
random bits, so a fast hash is enough (argon2 protects guessable passwords,
not random keys) and every request can be checked without a thread. The
comparison is constant-time, and an unknown id is compared against a dummy
digest so that it costs the same.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from ..errors import UserError
from ..storage import Store
from ..storage import admin as records
from ..storage.admin import TOKEN_ID_SIZE, AdminToken
from . import audit

_TOKEN = re.compile(r"^sst_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_LABEL = re.compile(r"^[\w.@+ :-]{1,64}$")
_DUMMY = hashlib.sha256(b"no such token").hexdigest()


class TokenError(UserError):
    """A refused token operation (bad label, unknown token)."""


@dataclass(frozen=True)
class TokenInfo:
    """What ``admin-token list`` shows; never the secret or its hash."""

    id: str
    label: str
    created: float


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AdminTokens:
    """Create, list, revoke and check admin tokens."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def add(self, label: str, actor: str) -> str:
        """Create a token; returns it (shown once)."""
        label = label.strip()
        if not _LABEL.match(label):
            raise TokenError("a token label has 1 to 64 letters, digits, spaces or . _ @ + : -")
        secret = secrets.token_urlsafe(32)
        with self._store.write() as txn:
            if any(t.label == label for t in records.list_tokens(txn)):
                raise TokenError(f"admin token {label!r} exists already")
            while True:
                token_id = secrets.token_bytes(TOKEN_ID_SIZE)
                if records.get_token(txn, token_id) is None:
                    break
            records.put_token(txn, AdminToken(token_id, label, _digest(secret), time.time()))
            audit.record(txn, actor, "token.add", f"token:{label}")
        return f"sst_{token_id.hex()}_{secret}"

    def list(self) -> list[TokenInfo]:
        with self._store.read() as txn:
            tokens = records.list_tokens(txn)
        return sorted((TokenInfo(t.id.hex(), t.label, t.created) for t in tokens), key=lambda t: t.label)

    def delete(self, label: str, actor: str) -> None:
        """Revoke the token labelled ``label``; requests with it fail from the next one on."""
        with self._store.write() as txn:
            found = [t for t in records.list_tokens(txn) if t.label == label]
            if not found:
                raise TokenError(f"no admin token {label!r}")
            for token in found:
                records.delete_token(txn, token.id)
            audit.record(txn, actor, "token.del", f"token:{label}")

    def check(self, presented: str) -> str | None:
        """The label of the valid token ``presented``, or None (constant time in the secret)."""
        match = _TOKEN.match(presented.strip())
        token = None
        if match:
            with self._store.read() as txn:
                token = records.get_token(txn, bytes.fromhex(match.group(1)))
        digest = _digest(match.group(2)) if match else _digest(presented)
        ok = hmac.compare_digest(digest, token.digest if token is not None else _DUMMY)
        return token.label if ok and token is not None else None


__all__ = ["AdminTokens", "TokenError", "TokenInfo"]
