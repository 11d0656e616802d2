"""The store writer: writes run off the calling thread, one at a time, and shutdown drains them."""

import queue
import threading
import time

import pytest

from schoolsuite.services import SessionRegistry
from schoolsuite.services.writer import StoreWriter


class ThreadReactor:
    """Just enough reactor for deferToThreadPool: callFromThread queues, drain() runs."""

    def __init__(self):
        self.calls = queue.Queue()

    def callFromThread(self, f, *args, **kwargs):  # noqa: N802
        self.calls.put((f, args, kwargs))

    def drain(self, until, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not until():
            f, args, kwargs = self.calls.get(timeout=max(0.01, deadline - time.monotonic()))
            f(*args, **kwargs)


def test_runs_on_another_thread_and_fires_after(store):
    """A write runs on the writer thread and its Deferred fires with the result after commit."""
    reactor = ThreadReactor()
    writer = StoreWriter(reactor)
    caller = threading.get_ident()

    def write():
        with store.write() as txn:
            txn.meta_put(b"test", b"1")
        return threading.get_ident()

    box = []
    writer.run(write).addBoth(box.append)
    reactor.drain(lambda: box)
    assert box[0] != caller
    with store.read() as txn:
        assert txn.meta_get(b"test") == b"1"
    done = []
    writer.shutdown().addBoth(done.append)
    reactor.drain(lambda: done)


def test_writes_are_serial_and_shutdown_waits(store):
    """Queued writes run one after another; shutdown fires only when all have run, then refuses more."""
    reactor = ThreadReactor()
    writer = StoreWriter(reactor)
    order, results = [], []
    for i in range(5):
        def job(i=i):
            time.sleep(0.02)
            order.append(i)
            return i
        writer.run(job).addBoth(results.append)
    done = []
    writer.shutdown().addBoth(done.append)
    reactor.drain(lambda: done)
    assert order == [0, 1, 2, 3, 4] and sorted(results) == [0, 1, 2, 3, 4]
    failed = []
    writer.run(lambda: 1).addErrback(failed.append)
    assert failed and failed[0].check(RuntimeError)


def test_failure_reaches_the_caller(store):
    """An exception in a write is the Deferred's failure and the writer keeps working."""
    reactor = ThreadReactor()
    writer = StoreWriter(reactor)
    box = []
    writer.run(lambda: 1 / 0).addBoth(box.append)
    reactor.drain(lambda: box)
    assert box[0].check(ZeroDivisionError)
    box.clear()
    writer.run(lambda: 7).addBoth(box.append)
    reactor.drain(lambda: box)
    assert box == [7]
    done = []
    writer.shutdown().addBoth(done.append)
    reactor.drain(lambda: done)


def test_session_registry_closes_an_accounts_sessions():
    """close_all closes every open session of that account and no other."""
    reg = SessionRegistry()
    closed = []
    reg.add(b"a", lambda: closed.append("a1"))
    remove = reg.add(b"a", lambda: closed.append("a2"))
    reg.add(b"b", lambda: closed.append("b1"))
    remove()
    assert reg.count(b"a") == 1
    assert reg.close_all(b"a") == 1 and closed == ["a1"] and reg.count(b"b") == 1


def test_run_early_answers_before_the_job_ends(store):
    """run_early: the answer arrives while the job still runs; 'settled' only when it has returned."""
    reactor = ThreadReactor()
    writer = StoreWriter(reactor)
    gate = threading.Event()

    def job(tell):
        with store.write(durable=False) as txn:
            txn.meta_put(b"early", b"1")
            tell("answer")
            assert gate.wait(5)

    answer, settled = writer.run_early(job)
    got, done = [], []
    answer.addBoth(got.append)
    settled.addBoth(done.append)
    reactor.drain(lambda: got)
    assert got == ["answer"] and not done
    gate.set()
    reactor.drain(lambda: done)
    assert done == [None]
    with store.read() as txn:
        assert txn.meta_get(b"early") == b"1"
    finished = []
    writer.shutdown().addBoth(finished.append)
    reactor.drain(lambda: finished)


def test_run_early_failures(store):
    """A failure before the answer is the answer's; one after it (a failed commit) is 'settled''s."""
    reactor = ThreadReactor()
    writer = StoreWriter(reactor)
    answer, settled = writer.run_early(lambda tell: 1 / 0)
    got, done = [], []
    answer.addBoth(got.append)
    settled.addBoth(done.append)
    reactor.drain(lambda: got and done)
    assert got[0].check(ZeroDivisionError) and done == [None]

    def late(tell):
        tell("ok")
        raise OSError("commit failed")

    answer, settled = writer.run_early(late)
    got, done = [], []
    answer.addBoth(got.append)
    settled.addBoth(done.append)
    reactor.drain(lambda: got and done)
    assert got == ["ok"] and done[0].check(OSError)
    finished = []
    writer.shutdown().addBoth(finished.append)
    reactor.drain(lambda: finished)
