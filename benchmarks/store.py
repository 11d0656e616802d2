"""Benchmark of the sealed store against raw LMDB, run in a temporary directory.

    python benchmarks/store.py [--quick] [--content-mib N] [--dir PATH]

Prints, for the same operations in the same run, the sealed store's rate,
raw LMDB's rate (same flags, no crypto, no record layer) and their ratio:
small-record (200 B) writes batched 1000 per transaction and one per
durable transaction, random-key reads (all in one read transaction, and one
read transaction each), chunked content write and read for CHUNK_SIZE 64 KiB,
256 KiB and 1 MiB, and the time of one argon2id verification with
argon2-cffi's default parameters.

Targets (storage issue): sealed reads at least half the raw rate; chunked
content at least 200 MB/s.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from schoolsuite.storage import accounts
from schoolsuite.storage import content as content_mod
from schoolsuite.storage import store as store_mod
from schoolsuite.storage.store import Store
from schoolsuite.tuning import tune_malloc

SPACE = 0x10
RECORD = 200
MAP_SIZE = 1 << 36
MIB = 1024 * 1024


def raw_env(path: Path) -> tuple[lmdb.Environment, object]:
    """Raw LMDB with the store's flags."""
    env = lmdb.open(str(path), map_size=MAP_SIZE, max_dbs=4, subdir=True, sync=True, metasync=True,
                    readahead=False, meminit=True)
    return env, env.open_db(b"records")


def timed(fn: Callable[[], int]) -> float:
    """Run ``fn`` (returning how many operations or bytes it did); return the count per second."""
    start = time.perf_counter()
    count = fn()
    return count / (time.perf_counter() - start)


@contextmanager
def chunk_size(size: int) -> Iterator[None]:
    """Use ``size`` as CHUNK_SIZE (store.py defines it; content.py imports it by name)."""
    saved = store_mod.CHUNK_SIZE, content_mod.CHUNK_SIZE
    store_mod.CHUNK_SIZE = content_mod.CHUNK_SIZE = size
    try:
        yield
    finally:
        store_mod.CHUNK_SIZE, content_mod.CHUNK_SIZE = saved


class Bench:
    def __init__(self, root: Path, quick: bool, content_mib: int) -> None:
        self.root = root
        self.records = 20_000 if quick else 100_000
        self.single = 100 if quick else 300
        self.reads = 50_000 if quick else 200_000
        self.content_bytes = content_mib * MIB
        self.rows: list[tuple[str, str, float, float | None]] = []

    def row(self, name: str, unit: str, sealed: float, raw: float | None) -> None:
        self.rows.append((name, unit, sealed, raw))
        ratio = f"{sealed / raw:6.2f}" if raw else "     -"
        raw_text = f"{raw:>14,.1f}" if raw is not None else f"{'-':>14}"
        print(f"{name:<44} {unit:<9} {sealed:>14,.1f} {raw_text} {ratio}", flush=True)

    def open_store(self, name: str) -> tuple[Store, bytes]:
        store = Store.open(self.root / name, os.urandom(32), map_size=MAP_SIZE)
        with store.write() as txn:
            account = accounts.create_account(txn, f"{name}@bench.example").id
        return store, account

    # -- small records ---------------------------------------------------------

    def small_records(self) -> None:
        store, account = self.open_store("records")
        env, db = raw_env(self.root / "raw-records")
        prefix = account + bytes((SPACE,))
        keys = [b"%010d" % i for i in range(self.records)]
        value = os.urandom(RECORD)

        def sealed_batched() -> int:
            for first in range(0, len(keys), 1000):
                with store.write() as txn:
                    user = txn.user(account)
                    for key in keys[first : first + 1000]:
                        user.put(SPACE, key, value)
            return len(keys)

        def raw_batched() -> int:
            for first in range(0, len(keys), 1000):
                with env.begin(write=True, db=db) as txn:
                    for key in keys[first : first + 1000]:
                        txn.put(prefix + key, value)
            return len(keys)

        self.row("write 200 B, 1000 per txn", "rec/s", timed(sealed_batched), timed(raw_batched))

        def sealed_single() -> int:
            for i in range(self.single):
                with store.write() as txn:
                    txn.user(account).put(SPACE, b"single%06d" % i, value)
            return self.single

        def raw_single() -> int:
            for i in range(self.single):
                with env.begin(write=True, db=db) as txn:
                    txn.put(prefix + b"single%06d" % i, value)
            return self.single

        self.row("write 200 B, 1 per txn (fsync)", "txn/s", timed(sealed_single), timed(raw_single))

        rng = random.Random(1)
        sample = [rng.choice(keys) for _ in range(self.reads)]
        full_sample = [prefix + k for k in sample]

        def sealed_reads() -> int:
            with store.read() as txn:
                view = txn.user(account)
                get = view.get
                for key in sample:
                    get(SPACE, key)
            return len(sample)

        def raw_reads() -> int:
            with env.begin(db=db) as txn:
                get = txn.get
                for key in full_sample:
                    get(key)
            return len(sample)

        self.row("read 200 B random keys, one txn", "rec/s", timed(sealed_reads), timed(raw_reads))
        few = sample[: self.reads // 4]
        few_full = full_sample[: self.reads // 4]

        def sealed_read_txns() -> int:
            for key in few:
                with store.read() as txn:
                    txn.user(account).get(SPACE, key)
            return len(few)

        def raw_read_txns() -> int:
            for key in few_full:
                with env.begin(db=db) as txn:
                    txn.get(key)
            return len(few)

        self.row("read 200 B random keys, one txn each", "rec/s", timed(sealed_read_txns), timed(raw_read_txns))

        def sealed_scan() -> int:
            with store.read() as txn:
                return sum(1 for _ in txn.user(account).scan(SPACE))

        def raw_scan() -> int:
            with env.begin(db=db) as txn:
                cursor = txn.cursor()
                cursor.set_range(prefix)
                return sum(1 for k, _ in cursor if k.startswith(prefix))

        self.row("scan 200 B records", "rec/s", timed(sealed_scan), timed(raw_scan))
        store.close()
        env.close()

    # -- chunked content -------------------------------------------------------

    def content(self, size: int) -> tuple[float, float]:
        name = f"content-{size // 1024}k"
        piece = os.urandom(MIB)
        with chunk_size(size):
            store, account = self.open_store(name)

            def write() -> int:
                writer = content_mod.ContentWriter(store, account)
                for _ in range(self.content_bytes // MIB):
                    writer.write(piece)
                with store.write() as txn:
                    self.content_id = writer.commit(txn).content_id
                return self.content_bytes

            def read() -> int:
                return sum(len(c) for c in content_mod.stream_content(store, account, self.content_id))

            w = timed(write) / MIB
            r = timed(read) / MIB
            store.close()
        shutil.rmtree(self.root / name)
        return w, r

    def raw_content(self, size: int) -> tuple[float, float]:
        env, db = raw_env(self.root / "raw-content")
        piece = os.urandom(MIB)
        doubled = piece + piece
        per_txn = max(1, 8 * MIB // size)
        chunks = self.content_bytes // size

        def write() -> int:
            for first in range(0, chunks, per_txn):
                with env.begin(write=True, db=db) as txn:
                    for index in range(first, min(first + per_txn, chunks)):
                        offset = (index * size) % MIB
                        txn.put(index.to_bytes(4, "big"), doubled[offset : offset + size])
            return chunks * size

        def read() -> int:
            total = 0
            for first in range(0, chunks, 8):
                with env.begin(db=db) as txn:
                    for index in range(first, min(first + 8, chunks)):
                        total += len(txn.get(index.to_bytes(4, "big")))
            return total

        w = timed(write) / MIB
        r = timed(read) / MIB
        env.close()
        shutil.rmtree(self.root / "raw-content")
        return w, r

    def contents(self) -> None:
        best = None
        for size in (64 * 1024, 256 * 1024, MIB):
            w, r = self.content(size)
            rw, rr = self.raw_content(size)
            label = f"{size // 1024} KiB"
            self.row(f"content write {self.content_bytes // MIB} MiB, chunk {label}", "MB/s", w, rw)
            self.row(f"content read {self.content_bytes // MIB} MiB, chunk {label}", "MB/s", r, rr)
            score = min(w, r)
            if best is None or score > best[0]:
                best = (score, label)
        print(f"best CHUNK_SIZE (highest min(write, read)): {best[1]}", flush=True)

    # -- argon2 ----------------------------------------------------------------

    def argon2(self) -> None:
        from argon2 import PasswordHasher

        hasher = PasswordHasher()
        digest = hasher.hash("correct horse battery staple")
        runs = 5
        start = time.perf_counter()
        for _ in range(runs):
            hasher.verify(digest, "correct horse battery staple")
        ms = (time.perf_counter() - start) / runs * 1000
        print(
            f"argon2id verify (argon2-cffi defaults: t={hasher.time_cost}, m={hasher.memory_cost} KiB, "
            f"p={hasher.parallelism}): {ms:.1f} ms",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts and 32 MiB of content")
    parser.add_argument("--content-mib", type=int, help="content size in MiB (default 256, quick 32)")
    parser.add_argument("--dir", type=Path, help="parent of the temporary directory (default: system temp)")
    args = parser.parse_args()
    content_mib = args.content_mib or (32 if args.quick else 256)
    root = Path(tempfile.mkdtemp(prefix="schoolsuite-bench-", dir=args.dir))
    try:
        bench = Bench(root, args.quick, content_mib)
        print(f"malloc (as schoolsuite serve sets it): {tune_malloc()}")
        print(f"in {root}; CHUNK_SIZE default {store_mod.CHUNK_SIZE // 1024} KiB, INLINE_MAX {store_mod.INLINE_MAX}")
        print(f"{'operation':<44} {'unit':<9} {'sealed':>14} {'raw LMDB':>14} {'ratio':>6}")
        bench.small_records()
        bench.contents()
        bench.argon2()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
