"""Process-wide tuning of glibc's allocator for ``schoolsuite serve``.

A large upload moves through the process in 256 KiB pieces: the received
blocks, the sealed chunks, LMDB's dirty pages for them. With glibc's
defaults, the mmap threshold adapts to such sizes and the top of the heap is
given back to the kernel as soon as a batch is freed, so every 16 MiB batch
is taken from the kernel anew and faulted in page by page (zeroed, and on a
virtual machine often backed afresh by the host). Measured here, streaming
1 GiB into the store: sealing and putting took 0.57 s with the defaults and
0.15 s with the thresholds below; a 1 GiB PUT through ``/files/`` (data file
filled ahead, storage/filegrow.py) went from 615–800 to 640–1100 MB/s, mostly
870–1100.

The price: memory the process has used once stays with it (up to
:data:`TRIM_THRESHOLD` free at the top of each heap, glibc's own dynamic
maximum) instead of going back to the kernel at once. Resident memory during
a 1 GiB upload stays about 120 MB. With the data file filled ahead, a 32, 64
or 256 MiB trim threshold gave the same upload speed (560–1030 MB/s, the
overwriting round slowest), so 64 MiB, the most glibc's own adaptive
threshold reaches, was kept.

An operator who sets glibc's own knobs (``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``) keeps them: nothing is
changed then. On a C library without ``mallopt`` (musl has a stub) nothing
happens either.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

#: Allocations at least this big are mmap'd (and unmapped when freed).
MMAP_THRESHOLD = 4 << 20
#: Free memory at the top of a heap beyond this goes back to the kernel.
TRIM_THRESHOLD = 64 << 20

_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_OPERATOR_KNOBS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def tune_malloc(environ: Mapping[str, str] = os.environ) -> str:
    """Set the thresholds above; returns what was done, for the log."""
    if any(name in environ for name in _OPERATOR_KNOBS):
        return "left as the environment sets it"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "not tuned (no mallopt)"
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "not tuned (mallopt refused)"
    return f"mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"
