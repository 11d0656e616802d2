"""Durability modes: a durable write is synced before it returns; ``durable=False`` is synced soon after."""

from __future__ import annotations

import time

from storehelp import wait_until

from schoolsuite.storage import store as store_module


class CountingEnv:
    """Wraps the LMDB environment and counts forced syncs."""

    def __init__(self, env):
        self._env = env
        self.syncs = 0

    def sync(self, force=False):
        self.syncs += 1
        return self._env.sync(force)

    def __getattr__(self, name):
        return getattr(self._env, name)


def _counting(store):
    env = CountingEnv(store._env)
    store._env = env
    return env


def test_durable_write_syncs_before_returning(lmdb_store):
    """The default write has synced the environment (data and root) by the time the block returns."""
    env = _counting(lmdb_store)
    with lmdb_store.write() as txn:
        txn.meta_put(b"t", b"1")
    assert env.syncs == 1


def test_unchanged_write_costs_no_sync(lmdb_store):
    """A write transaction that changed nothing touches no disk, durable or not."""
    env = _counting(lmdb_store)
    with lmdb_store.write():
        pass
    with lmdb_store.write(durable=False):
        pass
    time.sleep(store_module.FLUSH_DELAY * 3)
    assert env.syncs == 0


def test_non_durable_write_is_visible_at_once_and_synced_within_the_delay(lmdb_store):
    """durable=False returns without the extra sync, is readable at once, and the flusher syncs it soon."""
    env = _counting(lmdb_store)
    started = time.monotonic()
    with lmdb_store.write(durable=False) as txn:
        txn.meta_put(b"t", b"2")
    assert env.syncs == 0
    with lmdb_store.read() as txn:
        assert txn.meta_get(b"t") == b"2"
    wait_until(lambda: env.syncs == 1)
    assert time.monotonic() - started < store_module.FLUSH_DELAY + 1.0
    time.sleep(store_module.FLUSH_DELAY * 3)
    assert env.syncs == 1, "nothing more was owed"


def test_many_non_durable_writes_share_one_flush(lmdb_store):
    """A burst of flag-like writes within the delay costs one sync, not one each."""
    env = _counting(lmdb_store)
    for i in range(50):
        with lmdb_store.write(durable=False) as txn:
            txn.meta_put(b"t", b"%d" % i)
    wait_until(lambda: env.syncs >= 1)
    time.sleep(store_module.FLUSH_DELAY * 3)
    assert env.syncs <= 2


def test_durable_write_covers_earlier_non_durable_ones(lmdb_store):
    """A durable commit syncs what came before it, so the flusher finds nothing left to do."""
    env = _counting(lmdb_store)
    with lmdb_store.write(durable=False) as txn:
        txn.meta_put(b"a", b"1")
    with lmdb_store.write() as txn:
        txn.meta_put(b"b", b"1")
    assert env.syncs == 1
    time.sleep(store_module.FLUSH_DELAY * 3)
    assert env.syncs == 1


def test_close_flushes_what_is_owed(tmp_path, master_key):
    """Closing right after a non-durable write syncs it, and it is there after reopening."""
    from storehelp import open_lmdb

    s = open_lmdb(tmp_path, master_key)
    env = _counting(s)
    with s.write(durable=False) as txn:
        txn.meta_put(b"t", b"kept")
    s.close()
    assert env.syncs >= 1
    s = open_lmdb(tmp_path, master_key)
    try:
        with s.read() as txn:
            assert txn.meta_get(b"t") == b"kept"
    finally:
        s.close()
