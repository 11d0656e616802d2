"""One command at a time: input that arrives while a store write is pending waits, and reading stops."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from imap_helpers import Conn, message
from schoolsuite.storage import mail


class HeldWriter:
    """A StoreWriter stand-in that runs each job only when the test releases it."""

    def __init__(self) -> None:
        self.held: list[tuple[defer.Deferred[Any], Any]] = []

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.held.append((d, lambda: fn(*args, **kwargs)))
        return d

    def release(self) -> None:
        while self.held:
            d, job = self.held.pop(0)
            d.callback(job())


def _with_messages(services, alice, n):
    with services.store.write() as txn:
        user = txn.user(alice)
        box = mail.find_mailbox(user, "INBOX")
        for i in range(n):
            mail.append(user, box, message(f"m{i}"), flags=mail.SEEN)
        mail.save_mailbox(user, box)


def test_waiting_client_costs_no_pause(services, alice):
    """A client that waits for each reply never gets its connection paused and resumed."""
    _with_messages(services, alice, 2)
    c = Conn(services)
    c.login()
    c.cmd("S SELECT INBOX")
    writer = services.writer = HeldWriter()
    reply = c.send(b"A STORE 1 +FLAGS (\\Flagged)\r\n")
    assert reply == b"" and writer.held
    assert c.transport.producerState == "producing"
    writer.release()
    assert b"A OK" in c.read()
    assert c.transport.producerState == "producing"


def test_pipelined_input_waits_and_pauses_reading(services, alice):
    """Commands pipelined behind a pending STORE run after it, in order, and reading pauses meanwhile."""
    _with_messages(services, alice, 2)
    c = Conn(services)
    c.login()
    c.cmd("S SELECT INBOX")
    writer = services.writer = HeldWriter()
    assert c.send(b"A STORE 1 +FLAGS.SILENT (\\Flagged)\r\n") == b""
    assert c.send(b"B FETCH 1 (FLAGS)\r\nC NOOP\r\n") == b""  # nothing runs before A is done
    assert c.transport.producerState == "paused"
    writer.release()
    out = c.read().decode()
    assert out.index("A OK") < out.index("\\Flagged") < out.index("B OK") < out.index("C OK"), out
    assert c.transport.producerState == "producing"
