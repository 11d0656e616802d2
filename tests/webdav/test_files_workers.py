"""The /files/ worker threads: started as needed up to the limit, reused when idle, joined on stop."""

from __future__ import annotations

import threading
import time

from schoolsuite.protocols.webdav.app import _Workers


def test_workers_reuse_idle_thread_and_respect_limit() -> None:
    """Sequential work runs on one thread; concurrent work on at most ``threads`` threads; stop joins them."""
    workers = _Workers(3, name="t-webdav")
    names: list[str] = []
    done = threading.Event()
    for _ in range(5):
        done.clear()
        workers.callInThread(lambda: (names.append(threading.current_thread().name), done.set()))
        assert done.wait(5)
        time.sleep(0.01)  # the worker is idle again
    assert len(set(names)) == 1

    release = threading.Event()
    running: list[str] = []
    lock = threading.Lock()

    def block() -> None:
        with lock:
            running.append(threading.current_thread().name)
        release.wait(5)

    for _ in range(6):
        workers.callInThread(block)
    deadline = time.monotonic() + 5
    while len(running) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert len(running) == 3 and len(set(running)) == 3  # the other three wait for a worker
    release.set()
    workers.stop()
    assert len(running) == 6  # queued work finished before stop returned
    assert not any(t.name.startswith("t-webdav") and t.is_alive() for t in threading.enumerate())
    workers.callInThread(block)  # refused after stop
    time.sleep(0.05)
    assert len(running) == 6
