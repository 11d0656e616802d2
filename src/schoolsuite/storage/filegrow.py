"""Keeps LMDB's data file allocated and written ahead of its last page.

LMDB grows ``data.mdb`` by writing pages past the end of what it uses. A
write into such fresh space is slow, and a large upload (batches of 16 MiB,
each written with one ``writev`` and synced) is nothing but such writes.
Measured here with that pattern, 1 GiB, after the page cache was dropped:

=====================================================  ===============
space written into                                      MB/s
=====================================================  ===============
past the end of the file (ext4 allocates at sync)       374–463
allocated with fallocate(2), never written              397–813
allocated and filled with zeros beforehand              3800–4600
=====================================================  ===============

Fresh space costs block allocation (or the conversion of unwritten extents)
in every sync, and a 16 MiB ``writev`` into pages not yet in the page cache
makes the kernel allocate large folios, which on a virtual machine are often
backed anew by the host; a file already filled in 1 MiB writes has its blocks
and its cached pages in place. So once the store holds :data:`GROW_FROM`
bytes, a thread of its own keeps the file filled (fallocate, then zeros in
1 MiB writes, then fdatasync) an eighth of the used size beyond LMDB's last
page: at least ``GROW_FROM``, at most :data:`GROW_MAX`.

Safety: the zeros go only beyond the last page of the newest commit, and
only while the filler holds LMDB's writer lock (an empty write transaction),
so no other transaction can have written or be writing there. A crash leaves
zeros past LMDB's end, which it never reads. The price is disk space (up to
``GROW_MAX`` beyond the data) and writing grown space twice (zeros, data).
File systems without fallocate (some network and copy-on-write ones) and any
other failure just turn the filler off, with one warning in the log.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from pathlib import Path
from typing import Any

#: Used size from which the file is filled ahead, and the least distance ahead.
GROW_FROM = 32 << 20
#: The most the file is filled beyond LMDB's last page.
GROW_MAX = 1 << 30
#: Zeros are written under the writer lock in slices of this size (other writers wait at most one).
SLICE = 16 << 20
_ZEROS = memoryview(bytes(1 << 20))  # 1 MiB writes: see above


def _load_fallocate() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None  # not Linux/glibc: go without
    fn.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong)
    fn.restype = ctypes.c_int
    return fn


_FALLOCATE = _load_fallocate()


def fallocate(fd: int, offset: int, length: int) -> None:
    """fallocate(2) with mode 0; raises OSError (ENOTSUP where there is none)."""
    if _FALLOCATE is None:
        raise OSError(errno.ENOTSUP, "fallocate is not available")
    if _FALLOCATE(fd, 0, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def ahead(used: int) -> int:
    """How far beyond ``used`` bytes the file is kept filled."""
    return min(GROW_MAX, max(GROW_FROM, used // 8))


class FileGrower:
    """Fills ``data.mdb`` ahead of LMDB; :meth:`used` is told the used size after each commit."""

    def __init__(self, path: Path, env: Any, page_size: int) -> None:
        self._env = env
        self._page_size = page_size
        self._wanted = threading.Event()
        self._closing = False
        self._target = 0
        self.failure: str | None = None
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            # Past LMDB's last page, the file holds what an earlier filler wrote, or pages of commits a crash
            # undid: written blocks either way, nothing to fill again (a restart does not rewrite a GiB).
            self.filled = os.fstat(self._fd).st_size
        except OSError as e:
            self.filled = 0
            self._fd = -1
            self._give_up(e)
        self._thread = threading.Thread(target=self._run, name="store-filler", daemon=True)
        self._thread.start()

    def used(self, used: int) -> None:
        """Cheap: wake the filler if LMDB's ``used`` bytes came within half a step of the filled end."""
        if self.failure is not None or used < GROW_FROM:
            return
        step = ahead(used)
        if self.filled - used >= step // 2:
            return
        self._target = max(self._target, used + step)
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._closing or self.failure is not None:
                return
            try:
                while not self._closing and self._fill_slice():
                    pass
            except OSError as e:
                if e.errno != errno.ENOSPC:  # a full disk: LMDB reports it where it matters
                    self._give_up(e)
                    return

    def _fill_slice(self) -> bool:
        """Fill the next slice towards the target; False when there is nothing left to do."""
        txn = self._env.begin(write=True)  # LMDB's writer lock: nobody writes past its end meanwhile
        try:
            used = (self._env.info()["last_pgno"] + 1) * self._page_size
            start = max(self.filled, used)
            end = min(self._target, start + SLICE)
            if start >= end:
                return False
            fallocate(self._fd, start, end - start)
            for offset in range(start, end, len(_ZEROS)):
                os.pwrite(self._fd, _ZEROS[: end - offset], offset)  # a memoryview: no copy
        finally:
            txn.abort()
        os.fdatasync(self._fd)  # outside the lock: LMDB's commits need not sync our zeros
        self.filled = end
        return True

    def _give_up(self, error: OSError) -> None:
        from twisted.logger import Logger  # local: storage otherwise needs no Twisted

        self.failure = error.strerror or str(error)
        Logger(namespace="schoolsuite.storage").warn(
            "the store's data file is not filled ahead of use ({reason}): large uploads sync slower",
            reason=self.failure,
        )

    def close(self) -> None:
        """Stop the filler (before the environment closes)."""
        self._closing = True
        self._wanted.set()
        self._thread.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
