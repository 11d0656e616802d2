"""Key material and sealing: the only module that touches raw keys.

Key hierarchy (architecture.md, "Encryption at rest"):

- the master key lives outside the store (``secrets/master.key`` or a
  systemd credential); from it HKDF derives the directory key (seals account
  records), the directory index key (keyed hash of addresses) and the key
  wrapping key;
- every account has a random 256-bit data key, stored only wrapped by the
  key wrapping key, with the account id as associated data;
- every user value is sealed with AES-256-GCM under the account's data key,
  with the record's identity (its full LMDB key) as associated data, so a
  sealed value moved to another record or another account fails to open.

Names that must be looked up go through :meth:`Sealer.name_hash`, an HMAC
keyed by a key derived from the data key, so the store never holds them in
clear.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import StoreOpenError

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
SEAL_VERSION = b"\x01"
SEAL_OVERHEAD = len(SEAL_VERSION) + NONCE_SIZE + TAG_SIZE
NAME_HASH_SIZE = 16
_SEAL_VERSION_BYTE = SEAL_VERSION[0]
_CIPHERTEXT = len(SEAL_VERSION) + NONCE_SIZE  # where the ciphertext starts

_MASTER_KEY_HEADER = "schoolsuite-master-key-v1"


class MasterKeyError(StoreOpenError):
    """The master key is missing, unreadable, malformed, or not this store's."""


class SealError(Exception):
    """A sealed value failed authentication: corrupt, tampered with, or moved."""


def generate_key() -> bytes:
    """A fresh random 256-bit key."""
    return os.urandom(KEY_SIZE)


def write_master_key(path: Path) -> None:
    """Create a new master key file (mode 0600); never overwrite one."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = f"{_MASTER_KEY_HEADER}:{base64.b64encode(generate_key()).decode()}\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise MasterKeyError(f"master key {path} exists already; refusing to overwrite it") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def load_master_key(path: Path) -> bytes:
    """Read a master key file, refusing one that others may read."""
    path = Path(path)
    try:
        st = path.stat()
        raw = path.read_text("ascii").strip()
    except FileNotFoundError:
        raise MasterKeyError(f"master key file {path} is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MasterKeyError(f"cannot read master key file {path}: {getattr(e, 'strerror', e)}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MasterKeyError(
            f"master key file {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            "chmod 600 it"
        )
    header, _, b64 = raw.partition(":")
    try:
        key = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if header != _MASTER_KEY_HEADER or len(key) != KEY_SIZE:
        raise MasterKeyError(f"master key file {path} is not a schoolsuite master key")
    return key


def derive(key: bytes, purpose: bytes) -> bytes:
    """A 256-bit subkey of ``key`` for one purpose (HKDF-SHA256, RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=purpose).derive(key)


class Sealer:
    """Seals and opens values under one key, and hashes names under a derived key."""

    __slots__ = ("_aead", "_index_key")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("a sealing key has 32 bytes")
        self._aead = AESGCM(derive(key, b"schoolsuite seal v1"))
        self._index_key = derive(key, b"schoolsuite name index v1")

    def __repr__(self) -> str:
        return "<Sealer (key hidden)>"

    def seal(self, plaintext: bytes, identity: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext`` bound to ``identity``."""
        nonce = os.urandom(NONCE_SIZE)
        return SEAL_VERSION + nonce + self._aead.encrypt(nonce, plaintext, identity)

    def open(self, sealed: bytes, identity: bytes) -> bytes:
        """Return the plaintext, or raise :class:`SealError`."""
        if len(sealed) < SEAL_OVERHEAD or sealed[0] != _SEAL_VERSION_BYTE:
            raise SealError("not a sealed value")
        try:
            return self._aead.decrypt(sealed[1:_CIPHERTEXT], sealed[_CIPHERTEXT:], identity)
        except InvalidTag:
            raise SealError("sealed value failed authentication") from None

    def name_hash(self, *parts: bytes | str) -> bytes:
        """Keyed hash of a name for lookups; equal names give equal hashes."""
        mac = hmac.new(self._index_key, digestmod=hashlib.sha256)
        for part in parts:
            data = part.encode("utf-8") if isinstance(part, str) else part
            mac.update(len(data).to_bytes(4, "big"))
            mac.update(data)
        return mac.digest()[:NAME_HASH_SIZE]


class MasterKeys:
    """What the store derives from the master key."""

    __slots__ = ("directory", "_wrap")

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != KEY_SIZE:
            raise MasterKeyError("a master key has 32 bytes")
        self.directory = Sealer(derive(master_key, b"schoolsuite directory v1"))
        self._wrap = Sealer(derive(master_key, b"schoolsuite key wrapping v1"))

    def __repr__(self) -> str:
        return "<MasterKeys (hidden)>"

    def wrap(self, data_key: bytes, account_id: bytes) -> bytes:
        """Wrap an account's data key for storage."""
        return self._wrap.seal(data_key, b"datakey/" + account_id)

    def unwrap(self, wrapped: bytes, account_id: bytes) -> bytes:
        """Unwrap an account's data key; :class:`SealError` if it is not this account's."""
        return self._wrap.open(wrapped, b"datakey/" + account_id)
