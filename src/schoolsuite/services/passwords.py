"""Password hashing (argon2id) and the rules for passwords and app passwords.

App passwords are generated, never chosen: ``xxxx-xxxx-xxxx-xxxx-xxxx``
from a 32-letter alphabet (100 bits). Their first group names which hash to
check, so a login costs one argon2 verification whatever the account has,
and a failure costs the same as a success (constant time, style.md rule 5).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..errors import UserError

# RFC 9106 §4 second recommended option (argon2id, t=3, m=64 MiB, p=4):
# argon2-cffi's defaults.
_HASHER = PasswordHasher()
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
APP_PASSWORD_GROUPS = 5
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024

# A fixed hash verified when the account does not exist, so that an unknown
# address costs the same time as a wrong password.
_DUMMY_HASH = _HASHER.hash(os.urandom(16).hex())


class PasswordPolicyError(UserError):
    """A password that must not be set (empty, short, the address itself)."""


def hash_secret(secret: str) -> str:
    """An argon2id hash string (slow: run it off the reactor thread)."""
    return _HASHER.hash(secret)


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    """Check ``secret`` against ``stored_hash`` (or a dummy when None), in about constant time."""
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, secret) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_password_policy(password: str, address: str) -> None:
    """Refuse empty, short, over-long and guessable passwords with one clear line."""
    if not password:
        raise PasswordPolicyError("the password is empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"the password is too short (at least {MIN_PASSWORD_LENGTH} characters)")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"the password is too long (at most {MAX_PASSWORD_LENGTH} characters)")
    if "\x00" in password or "\n" in password or "\r" in password:
        raise PasswordPolicyError("the password contains a NUL or line break")
    lowered = password.casefold()
    local = address.partition("@")[0].casefold()
    if lowered in (address.casefold(), local) or len(set(password)) < 4:
        raise PasswordPolicyError("the password is too easy to guess")


def generate_app_password() -> str:
    """A new app password, e.g. ``k7mq-3xtp-u9rd-2hwa-fn4e``."""
    return "-".join(
        "".join(secrets.choice(_ALPHABET) for _ in range(4)) for _ in range(APP_PASSWORD_GROUPS)
    )


def looks_like_app_password(secret: str) -> bool:
    groups = secret.split("-")
    return len(groups) == APP_PASSWORD_GROUPS and all(
        len(g) == 4 and all(c in _ALPHABET for c in g) for g in groups
    )


def app_password_id(secret: str) -> str:
    """The public first group that says which app password this is."""
    return secret[:4]


class VerifiedCache:
    """Remembers recently verified secrets, so that a phone that logs in every
    minute costs one argon2 verification per ``ttl`` instead of one per login
    (like Dovecot's auth cache).

    Entries are keyed by an HMAC under a per-process random key over the stored
    hash and the secret: a changed password or app password misses, and the
    cache holds no secret.
    """

    def __init__(self, ttl: float = 600.0, size: int = 100_000) -> None:
        self._key = os.urandom(32)
        self._ttl = ttl
        self._size = size
        self._entries: dict[bytes, float] = {}

    def _token(self, stored_hash: str, secret: str) -> bytes:
        return hmac.new(self._key, stored_hash.encode() + b"\x00" + secret.encode(), hashlib.sha256).digest()

    def hit(self, stored_hash: str, secret: str, now: float) -> bool:
        expiry = self._entries.get(self._token(stored_hash, secret))
        return expiry is not None and expiry > now

    def add(self, stored_hash: str, secret: str, now: float) -> None:
        if len(self._entries) >= self._size:
            self._entries = {k: v for k, v in self._entries.items() if v > now}
            if len(self._entries) >= self._size:
                self._entries.clear()
        self._entries[self._token(stored_hash, secret)] = now + self._ttl

    def clear(self) -> None:
        self._entries.clear()


def app_password_id_of(entry: object) -> str:
    """The id stored in front of an app password's hash (``id$argon2...``)."""
    return str(getattr(entry, "hash")).partition("$")[0]


def app_password_hash_of(entry: object) -> str:
    return str(getattr(entry, "hash")).partition("$")[2]
