"""A state machine of one account's records against a dict model (hypothesis)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from storehelp import BACKENDS, make_account

from schoolsuite.storage.store import INLINE_MAX

SPACE = 0x10
OTHER_SPACE = 0x11

keys = st.binary(max_size=3).map(lambda b: bytes(b"ab\x00\xff"[x % 4] for x in b))
prefixes = st.sampled_from([b"", b"a", b"b", b"ab", b"\x00", b"\xff", b"\xff\xff", b"aa"])
sizes = st.sampled_from([0, 1, 40, INLINE_MAX, INLINE_MAX + 1, 2 * INLINE_MAX])


def value_of(size: int, seed: int) -> bytes:
    return (seed.to_bytes(2, "big") * (size // 2 + 1))[:size]


class Aborted(Exception):
    pass


class OneAccount(RuleBasedStateMachine):
    """The records of one account in one space behave like a sorted dict."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="store-state-"))
        self.master_key = os.urandom(32)
        self.model: dict[bytes, bytes] = {}
        self.seed = 0

    @initialize(backend=st.sampled_from(sorted(BACKENDS)))
    def open_store(self, backend: str) -> None:
        self.opener = BACKENDS[backend]
        self.store = self.opener(self.dir, self.master_key)
        self.account = make_account(self.store, "a@school.example")
        # A neighbour space and a neighbour account that must never show up.
        other = make_account(self.store, "b@school.example")
        with self.store.write() as txn:
            txn.user(self.account).put(OTHER_SPACE, b"a", b"other space")
            for key in (b"", b"a", b"\xff"):
                txn.user(other).put(SPACE, key, b"other account")

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _value(self, size: int) -> bytes:
        self.seed += 1
        return value_of(size, self.seed)

    @rule(key=keys, size=sizes)
    def put(self, key: bytes, size: int) -> None:
        value = self._value(size)
        with self.store.write() as txn:
            txn.user(self.account).put(SPACE, key, value)
        self.model[key] = value

    @rule(items=st.lists(st.tuples(keys, sizes), min_size=1, max_size=5))
    def put_many(self, items: list[tuple[bytes, int]]) -> None:
        with self.store.write() as txn:
            user = txn.user(self.account)
            for key, size in items:
                value = self._value(size)
                user.put(SPACE, key, value)
                self.model[key] = value

    @rule(key=keys, size=sizes, delete=keys)
    def aborted(self, key: bytes, size: int, delete: bytes) -> None:
        try:
            with self.store.write() as txn:
                user = txn.user(self.account)
                user.put(SPACE, key, self._value(size))
                user.delete(SPACE, delete)
                raise Aborted
        except Aborted:
            pass

    @rule(key=keys)
    def delete(self, key: bytes) -> None:
        with self.store.write() as txn:
            assert txn.user(self.account).delete(SPACE, key) == (key in self.model)
        self.model.pop(key, None)

    @rule(prefix=prefixes)
    def delete_prefix(self, prefix: bytes) -> None:
        doomed = [k for k in self.model if k.startswith(prefix)]
        with self.store.write() as txn:
            assert txn.user(self.account).delete_prefix(SPACE, prefix) == len(doomed)
        for key in doomed:
            del self.model[key]

    @rule(key=keys)
    def get(self, key: bytes) -> None:
        with self.store.read() as txn:
            view = txn.user(self.account)
            assert view.get(SPACE, key) == self.model.get(key)
            assert view.exists(SPACE, key) == (key in self.model)

    @rule(prefix=prefixes, start=st.none() | keys, reverse=st.booleans())
    def scan(self, prefix: bytes, start: bytes | None, reverse: bool) -> None:
        expected = sorted((k, v) for k, v in self.model.items() if k.startswith(prefix))
        if start is not None:
            expected = [(k, v) for k, v in expected if (k <= start if reverse else k >= start)]
        if reverse:
            expected.reverse()
        with self.store.read() as txn:
            assert list(txn.user(self.account).scan(SPACE, prefix, start=start, reverse=reverse)) == expected

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self.opener(self.dir, self.master_key)

    @invariant()
    def keys_and_count_agree(self) -> None:
        if not hasattr(self, "store"):
            return
        with self.store.read() as txn:
            view = txn.user(self.account)
            assert list(view.keys(SPACE)) == sorted(self.model)
            assert view.count(SPACE) == len(self.model)


OneAccount.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestOneAccount = OneAccount.TestCase
TestOneAccount.__doc__ = "put/delete/delete_prefix/scan of one account's records match a dict model."
