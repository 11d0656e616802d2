"""Runs store write transactions off the reactor thread.

LMDB allows one writer at a time and a commit waits for fsync, so writes go
to one dedicated thread: the reactor never blocks on a commit, and a caller's
Deferred fires only after the transaction has committed durably (an SMTP 250,
an IMAP APPEND OK or a DAV 201 follow from that).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorThreads
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class StoreWriter:
    """A single writer thread; :meth:`run` returns a Deferred of the result."""

    def __init__(self, reactor: IReactorThreads, name: str = "store-writer") -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=name)
        self._pool.start()
        self._pending = 0
        self._closed = False
        self._drained: list[defer.Deferred[None]] = []

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
        """Run ``fn(*args, **kwargs)`` on the writer thread."""
        if self._closed:
            return defer.fail(RuntimeError("the store is shutting down"))
        self._pending += 1
        d = threads.deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)
        d.addBoth(self._done)
        return d

    def _done(self, result: Any) -> Any:
        self._pending -= 1
        if self._pending == 0:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)
        return result

    @property
    def pending(self) -> int:
        return self._pending

    def abandon(self) -> None:
        """Stop the thread now, without the reactor (a server that failed before it started)."""
        self._closed = True
        self._pool.stop()

    def shutdown(self) -> defer.Deferred[None]:
        """Refuse new work, wait for the queued transactions, stop the thread."""
        self._closed = True
        d: defer.Deferred[None] = defer.Deferred()
        if self._pending == 0:
            d.callback(None)
        else:
            self._drained.append(d)
        d.addCallback(lambda _: self._pool.stop())
        return d
