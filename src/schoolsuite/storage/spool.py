"""A write-then-read spool for one HTTP request body, never plaintext on disk.

Twisted spools request bodies to temporary files; the site uses this class
instead (protocols/http/body.py). It lives in the storage layer because it
holds key material: a random AES-256-GCM key made for one request that exists
only in this process's memory, so what reaches the disk is unreadable once
the process forgets the key.
"""

from __future__ import annotations

import io
import tempfile
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: Plaintext block of the encrypted spool (each is sealed with its own nonce).
SPOOL_BLOCK = 256 * 1024
_TAG = 16


class SealedSpool:
    """A write-then-read file for one request body, never plaintext on disk.

    Bodies up to ``memory_max`` stay in a ``BytesIO``; beyond that every
    :data:`SPOOL_BLOCK` is sealed with AES-256-GCM under a key made for this
    request (nonce = block number, so no nonce repeats under a key) and
    written to an unlinked temporary file. ``seek(0)`` switches to reading.
    """

    def __init__(self, memory_max: int, spool_dir: str | None = None) -> None:
        self._memory_max = memory_max
        self._dir = spool_dir
        self._mem: io.BytesIO | None = io.BytesIO()
        self._file: Any = None
        self._aead: AESGCM | None = None
        self._pending = bytearray()
        self._blocks = 0
        self.size = 0
        self._reading = False
        self._pos = 0  # read position
        self._block_cache: tuple[int, bytes] | None = None

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def write(self, data: bytes) -> int:
        if self._reading:
            raise ValueError("spool is being read")
        self.size += len(data)
        if self._mem is not None:
            self._mem.write(data)
            if self._mem.tell() <= self._memory_max:
                return len(data)
            data, self._mem = self._mem.getvalue(), None
            self._aead = AESGCM(AESGCM.generate_key(bit_length=256))
            self._file = tempfile.TemporaryFile(dir=self._dir, prefix="body-")
        self._pending += data
        while len(self._pending) >= SPOOL_BLOCK:
            self._seal_block(bytes(self._pending[:SPOOL_BLOCK]))
            del self._pending[:SPOOL_BLOCK]
        return len(data)

    def _seal_block(self, plain: bytes) -> None:
        assert self._aead is not None
        nonce = self._blocks.to_bytes(12, "big")
        self._file.write(self._aead.encrypt(nonce, plain, None))
        self._blocks += 1

    def tell(self) -> int:
        return self._pos if self._reading else self.size

    def seek(self, offset: int, whence: int = 0) -> int:
        """Only ``seek(0)`` (start reading) and ``seek(0, 2)`` are needed by Twisted."""
        if not self._reading:
            self._reading = True
            if self._file is not None and self._pending:
                self._seal_block(bytes(self._pending))
                self._pending.clear()
        if whence == 0:
            self._pos = max(0, min(offset, self.size))
        elif whence == 1:
            self._pos = max(0, min(self._pos + offset, self.size))
        else:
            self._pos = max(0, min(self.size + offset, self.size))
        return self._pos

    def _block(self, index: int) -> bytes:
        if self._block_cache is not None and self._block_cache[0] == index:
            return self._block_cache[1]
        assert self._aead is not None
        self._file.seek(index * (SPOOL_BLOCK + _TAG))
        sealed = self._file.read(SPOOL_BLOCK + _TAG)
        plain = self._aead.decrypt(index.to_bytes(12, "big"), sealed, None)
        self._block_cache = (index, plain)
        return plain

    def read(self, size: int | None = -1) -> bytes:
        if not self._reading:
            self.seek(0)
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        if self._mem is not None:
            data = self._mem.getvalue()[self._pos:end]
            self._pos = end
            return data
        out = []
        while self._pos < end:
            index, offset = divmod(self._pos, SPOOL_BLOCK)
            piece = self._block(index)[offset:offset + end - self._pos]
            out.append(piece)
            self._pos += len(piece)
        return b"".join(out)

    def readline(self, size: int | None = -1) -> bytes:
        start = self._pos
        limit = self.size if size is None or size < 0 else min(self.size, start + size)
        out = bytearray()
        while self._pos < limit:
            piece = self.read(min(8192, limit - self._pos))
            cut = piece.find(b"\n")
            if cut >= 0:
                out += piece[:cut + 1]
                self._pos = start + len(out)
                return bytes(out)
            out += piece
        return bytes(out)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.readline, b"")

    def close(self) -> None:
        self._mem = None
        self._aead = None
        self._block_cache = None
        self._pending.clear()
        if self._file is not None:
            self._file.close()
            self._file = None
