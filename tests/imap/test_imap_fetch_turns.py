"""Large FETCHes are written in batches, one per reactor turn, so other sessions are served in between;
and on shutdown every IMAP connection gets ``* BYE`` once its running command has answered."""

from __future__ import annotations

import re
import signal
import socket
import time

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from imap_helpers import Conn, HeldWriter, message
from imap_server import start, tls_session
from schoolsuite.protocols.imap import ops_fetch
from schoolsuite.protocols.imap.commands import parse_command
from schoolsuite.protocols.imap.protocol import CLOSE_GRACE_SECONDS, SHUTDOWN_WAIT_SECONDS, IMAPFactory, ImapLimits
from schoolsuite.storage import mail

BYE = "* BYE [UNAVAILABLE] Server shutting down"


@pytest.fixture
def small_turns(monkeypatch):
    """FETCHes of more than 50 messages go in turns; a turn ends at the first budget check (every 32 FLAGS-only
    messages, after every message when bodies are asked)."""
    monkeypatch.setattr(ops_fetch, "SMALL_FETCH", 50)
    monkeypatch.setattr(ops_fetch, "TURN_SECONDS", 0.0)


def _fill(services, alice, n: int, flags: int = 0) -> None:
    with services.store.write() as txn:
        user = txn.user(alice)
        box = mail.find_mailbox(user, "INBOX")
        for i in range(n):
            mail.append(user, box, message(f"m{i}", f"body {i}\r\n"), flags=flags)
        mail.save_mailbox(user, box)


def _conn(services, clock, factory=None) -> Conn:
    c = Conn(services, clock=clock, factory=factory)
    c.login()
    c.cmd("S SELECT INBOX")
    return c


def _turns(clock: Clock, c: Conn, tag: bytes, limit: int = 10_000) -> bytes:
    """Run reactor turns until ``tag``'s tagged reply has been written; everything written meanwhile."""
    out = b""
    for _ in range(limit):
        out += c.read()
        if re.search(rb"(^|\r\n)" + tag + rb" ", out):
            return out
        clock.advance(0)
    raise AssertionError(f"no tagged reply: {out[-300:]!r}")


def _fetched(out: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"\* (\d+) FETCH", out)]


def _paused_then_resumed(clock: Clock, c: Conn, tag: bytes) -> bytes:
    """While the transport's buffer is full (pauseProducing) nothing is rendered; after resumeProducing the
    command goes on where it stopped: what it wrote until its tagged reply."""
    producer = c.transport.producer
    assert producer is not None and c.transport.streaming
    producer.pauseProducing()
    for _ in range(5):
        clock.advance(0)
    assert c.read() == b""
    producer.resumeProducing()
    return _turns(clock, c, tag)


def test_large_fetch_goes_in_turns(services, alice, small_turns):
    """UID FETCH 1:* over more than SMALL_FETCH messages writes one batch now and the rest in later turns;
    another session is answered in between, and the fetching session's next command waits its turn."""
    _fill(services, alice, 200)
    clock = Clock()
    c, other = _conn(services, clock), _conn(services, clock)
    first = c.send(b"F UID FETCH 1:* (FLAGS)\r\n")
    assert _fetched(first) == list(range(1, 33)) and b"F OK" not in first
    assert other.cmd("N NOOP") == ["N OK NOOP completed"]
    assert c.send(b"X NOOP\r\n") == b""  # queued behind the FETCH
    rest = _turns(clock, c, b"X")
    assert _fetched(first + rest) == list(range(1, 201))
    assert rest.endswith(b"F OK UID FETCH completed\r\nX OK NOOP completed\r\n")
    assert c.transport.producer is None  # unregistered after the last batch


def test_small_fetch_is_answered_at_once(services, alice, small_turns):
    """A FETCH of up to SMALL_FETCH messages is written whole, with its tagged OK, in the same turn."""
    _fill(services, alice, 50)
    c = _conn(services, Clock())
    out = c.send(b"F FETCH 1:* (FLAGS BODY.PEEK[TEXT])\r\n")
    assert _fetched(out) == list(range(1, 51)) and out.endswith(b"F OK FETCH completed\r\n")


def test_a_few_big_messages_go_in_turns_by_their_bytes(services, alice):
    """Fewer than SMALL_FETCH messages, but their text is several TURN_BYTES: a batch holds about TURN_BYTES
    (a phone fetching ten 25 MB messages never has them all built in memory at once), and while the
    transport's buffer is full no further message is read."""
    big = b"x" * 200_000 + b"\r\n"
    with services.store.write() as txn:
        user = txn.user(alice)
        box = mail.find_mailbox(user, "INBOX")
        for i in range(12):
            mail.append(user, box, message(f"m{i}", big.decode()))
        mail.save_mailbox(user, box)
    clock = Clock()
    c = _conn(services, clock)
    first = c.send(b"F FETCH 1:* (BODY.PEEK[TEXT])\r\n")
    assert 1 <= len(_fetched(first)) <= ops_fetch.TURN_BYTES // len(big) + 1 and b"F OK" not in first
    rest = _paused_then_resumed(clock, c, b"F")
    assert _fetched(first + rest) == list(range(1, 13))
    assert (first + rest).count(big) == 12 and rest.endswith(b"F OK FETCH completed\r\n")


def test_full_write_buffer_pauses_the_batches(services, alice, small_turns):
    """While the transport says its write buffer is full (pauseProducing), no batch is rendered; on
    resumeProducing the FETCH goes on where it stopped."""
    _fill(services, alice, 200)
    clock = Clock()
    c = _conn(services, clock)
    first = c.send(b"F FETCH 1:* (FLAGS)\r\n")
    rest = _paused_then_resumed(clock, c, b"F")
    assert _fetched(first + rest) == list(range(1, 201)) and rest.endswith(b"F OK FETCH completed\r\n")


def test_messages_expunged_between_turns_are_left_out(services, alice, small_turns):
    """Messages another session expunges while a FETCH is in turns are not reported (RFC 2180 §4.1.2);
    the others keep their sequence numbers, and the EXPUNGEs come after the last FETCH response."""
    _fill(services, alice, 200)
    clock = Clock()
    c, other = _conn(services, clock), _conn(services, clock)
    first = c.send(b"F UID FETCH 1:* (FLAGS)\r\n")
    assert other.cmd("D STORE 100:200 +FLAGS.SILENT (\\Deleted)")[-1] == "D OK STORE completed"
    assert other.cmd("E EXPUNGE")[-1] == "E OK EXPUNGE completed"
    rest = _turns(clock, c, b"F")
    assert _fetched(first + rest) == list(range(1, 100))
    assert rest.count(b" EXPUNGE\r\n") == 101 and rest.rindex(b"FETCH (") < rest.index(b"EXPUNGE")
    assert rest.endswith(b"F OK UID FETCH completed\r\n")


def test_written_seen_wins_over_an_older_snapshot_in_every_batch(services, alice, small_turns):
    """The entries a FETCH wrote (\\Seen) are reported in every batch even when the snapshot predates their
    commit; a snapshot entry newer than the written one (a later change) is reported instead."""
    _fill(services, alice, 100)
    clock = Clock()
    c = _conn(services, clock)
    with services.store.read() as txn:
        user = txn.user(alice)
        box = mail.find_mailbox(user, "INBOX")
        entries = mail.index_entries(user, box.id, range(1, 101))
    written = {u: e._replace(flags=e.flags | mail.SEEN, modseq=e.modseq + 1000) for u, e in entries.items()}
    written[80] = entries[80]._replace(flags=mail.SEEN, modseq=entries[80].modseq - 1)  # older than the snapshot
    cmd = parse_command(b"F FETCH 1:* (UID FLAGS MODSEQ)\r\n")
    pending = ops_fetch._render(c.proto.session, cmd, list(range(1, 101)), list(cmd.items), written)
    assert pending is not None  # in turns
    done = []
    pending.addCallback(done.append)
    out = c.read()
    while not done:
        clock.advance(0)
        out += c.read()
    got = {int(u): (flags, int(m)) for u, flags, m in
           re.findall(rb"UID (\d+) FLAGS \(([^)]*)\) MODSEQ \((\d+)\)", out)}
    assert sorted(got) == list(range(1, 101))
    for uid, (flags, modseq) in got.items():
        if uid == 80:
            assert b"\\Seen" not in flags and modseq == entries[80].modseq
        else:
            assert b"\\Seen" in flags and modseq == entries[uid].modseq + 1000, uid


def test_non_peek_fetch_in_turns_sets_and_reports_seen(services, alice, small_turns):
    """FETCH BODY[TEXT] over many unseen messages, in turns: every response carries \\Seen and the store has it."""
    _fill(services, alice, 60)
    clock = Clock()
    c = _conn(services, clock)
    first = c.send(b"F FETCH 1:* (BODY[TEXT])\r\n")
    assert b"F OK" not in first
    out = first + _turns(clock, c, b"F")
    assert out.count(b"FLAGS (\\Seen \\Recent)") == 60 and out.endswith(b"F OK FETCH completed\r\n")
    assert c.cmd("U SEARCH UNSEEN") == ["* SEARCH", "U OK SEARCH completed"]


def test_closing_connection_stops_the_batches(services, alice, small_turns):
    """A connection closed mid-FETCH (account disabled, or lost) stops rendering and unregisters its producer,
    so the transport can close."""
    _fill(services, alice, 200)
    clock = Clock()
    c = _conn(services, clock)
    c.send(b"F FETCH 1:* (FLAGS)\r\n")
    c.proto.close_session()
    assert c.read() == b"* BYE Account closed\r\n" and c.transport.disconnecting
    assert c.transport.producer is None
    c2 = _conn(services, clock)
    c2.send(b"F FETCH 1:* (FLAGS)\r\n")
    c2.proto.connectionLost(Failure(ConnectionDone()))
    assert c2.transport.producer is None
    for _ in range(10):
        clock.advance(0)
    assert c.read() == b"" and c2.read() == b""


# -- shutdown: BYE (RFC 3501 §7.1.5) ------------------------------------------------------------------


def _factory(services) -> IMAPFactory:
    return IMAPFactory(services, ImapLimits(), tls=None, implicit_tls=True)


def test_shutdown_says_bye_to_every_connection(services, alice):
    """The IMAP shutdown drain sends * BYE [UNAVAILABLE] to idle, selected and not-yet-authenticated
    connections, closes them, and fires once they are gone."""
    _fill(services, alice, 2)
    clock = Clock()
    factory = _factory(services)
    idle = _conn(services, clock, factory)
    assert idle.cmd("I IDLE") == ["+ idling"]
    plain = Conn(services, factory=factory, clock=clock)
    drained = []
    factory.drain().addCallback(drained.append)
    for c in (idle, plain):
        assert c.read().decode() == BYE + "\r\n" and c.transport.disconnecting
    assert not drained
    for c in (idle, plain):
        c.proto.connectionLost(Failure(ConnectionDone()))
    assert drained and not factory.connections


def test_shutdown_answers_a_pending_write_first(services, alice):
    """A command waiting for its store write when the server stops gets its tagged answer, then the BYE."""
    c = Conn(services, factory=_factory(services), clock=Clock())
    c.login()
    writer = services.writer = HeldWriter()
    body = message("durable")
    assert c.send(b"A APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n") == b""
    c.factory.drain()
    assert c.read() == b""  # still waiting for the write
    writer.release()
    out = c.read().decode()
    assert re.fullmatch(r"A OK \[APPENDUID \d+ 1\] APPEND completed\r\n" + re.escape(BYE) + r"\r\n", out), out
    assert c.transport.disconnecting


def test_shutdown_starts_no_waiting_command(services, alice):
    """A command that waits for another session's flag change to commit is not started once the server is
    stopping: after that commit its connection gets the BYE, not the command's answer."""
    _fill(services, alice, 2)
    clock = Clock()
    factory = _factory(services)
    a, b = _conn(services, clock, factory), _conn(services, clock, factory)
    writer = services.writer = HeldWriter()
    a.send(b"A STORE 1 +FLAGS (\\Flagged)\r\n")
    writer.release()
    assert a.read().endswith(b"A OK STORE completed\r\n")  # answered, its commit pending
    assert b.send(b"B STORE 2 +FLAGS (\\Flagged)\r\n") == b""  # waits for that commit
    factory.drain()
    assert a.read().decode() == BYE + "\r\n"
    assert b.read() == b""
    writer.commit()
    assert b.read().decode() == BYE + "\r\n" and not writer.held


def test_shutdown_gives_a_stuck_command_bounded_time(services, alice):
    """A command whose write does not come back within SHUTDOWN_WAIT_SECONDS does not hold the shutdown up."""
    clock = Clock()
    c = Conn(services, factory=_factory(services), clock=clock)
    c.login()
    services.writer = HeldWriter()
    body = message("stuck")
    c.send(b"A APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
    c.factory.drain()
    clock.advance(SHUTDOWN_WAIT_SECONDS - 0.1)
    assert c.read() == b""
    clock.advance(0.1)
    assert c.read().decode() == BYE + "\r\n" and c.transport.disconnecting


def test_shutdown_ends_a_fetch_in_turns(services, alice, small_turns):
    """A FETCH still in turns when the server stops ends with NO [UNAVAILABLE], then the BYE."""
    _fill(services, alice, 200)
    clock = Clock()
    c = _conn(services, clock, _factory(services))
    c.send(b"F FETCH 1:* (FLAGS)\r\n")
    c.factory.drain()
    assert c.read().decode() == "F NO [UNAVAILABLE] Server shutting down\r\n" + BYE + "\r\n"
    assert c.transport.producer is None and c.transport.disconnecting


def test_shutdown_starts_no_batches_after_a_pending_seen_write(services, alice, small_turns):
    """A FETCH that sets \\Seen, whose write comes back after the shutdown began, writes its first batch and
    then NO [UNAVAILABLE] and the BYE instead of going on in turns."""
    _fill(services, alice, 200)
    clock = Clock()
    c = _conn(services, clock, _factory(services))
    writer = services.writer = HeldWriter()
    assert c.send(b"F FETCH 1:* (BODY[TEXT])\r\n") == b""
    c.factory.drain()
    writer.release()
    out = c.read().decode()
    assert out.count(" FETCH (") == 1, out
    assert out.endswith("F NO [UNAVAILABLE] Server shutting down\r\n" + BYE + "\r\n"), out
    assert c.transport.producer is None
    assert not [call for call in clock.getDelayedCalls() if call.getTime() <= clock.seconds()]  # no next turn


# -- end to end: one real server, stopped by the last test ------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A real ``schoolsuite serve`` whose INBOX holds 1,200 messages (more than SMALL_FETCH)."""
    server = start(tmp_path_factory.mktemp("imap-turns"))
    try:
        sock, f = tls_session(server)
        data = b"".join(b" {%d+}\r\n" % len(m) + m for m in (message(f"m{i}", "x" * 400 + "\r\n")
                                                                 for i in range(1200)))
        sock.sendall(b"p APPEND INBOX" + data + b"\r\n")
        while not (line := f.readline()).startswith(b"p "):
            pass
        assert line.startswith(b"p OK"), line
        sock.close()
        yield server
    finally:
        server.stop()


def test_fetch_in_turns_over_tls_to_a_slow_reader(served):
    """Over implicit TLS, a FETCH of 1,200 bodies (~0.7 MB) to a client that reads only after a pause (the
    write buffer fills, the batches wait) arrives whole and in order, and the connection stays usable."""
    sock, f = tls_session(served)
    sock.sendall(b"s SELECT INBOX\r\nf FETCH 1:* (BODY.PEEK[TEXT])\r\n")
    time.sleep(0.5)
    seqs = []
    while not (line := f.readline()).startswith(b"f "):
        m = re.match(rb"\* (\d+) FETCH \(BODY\[TEXT\] \{(\d+)\}", line)
        if m:
            seqs.append(int(m.group(1)))
            assert f.read(int(m.group(2))) == b"x" * 400 + b"\r\n"
    assert line == b"f OK FETCH completed\r\n" and seqs == list(range(1, 1201))
    sock.sendall(b"n NOOP\r\n")
    assert f.readline() == b"n OK NOOP completed\r\n"
    sock.close()


def test_sigterm_says_bye_to_an_idle_client(served):
    """SIGTERM to ``schoolsuite serve``: an IDLE client over implicit TLS and a plain connection get
    * BYE [UNAVAILABLE] before the connection closes, the store is closed and the process exits 0
    (runs last: it stops the module's server)."""
    sock, f = tls_session(served)
    sock.sendall(b"s SELECT INBOX\r\ni IDLE\r\n")
    while not f.readline().startswith(b"+ "):
        pass
    plain = socket.create_connection(("127.0.0.1", served.imap_port), 20).makefile("rb")
    assert plain.readline().startswith(b"* OK")
    started = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    assert f.readline() == BYE.encode() + b"\r\n"
    assert f.readline() == b""  # then the server closes the connection
    assert plain.readline() == BYE.encode() + b"\r\n"
    assert served.proc.wait(30) == 0
    stopped = time.monotonic() - started
    # The TLS client never answers close_notify: the shutdown waits SHUTDOWN_CLOSE_GRACE_SECONDS for it, not
    # CLOSE_GRACE_SECONDS (every restart took 2 s longer).
    assert stopped < CLOSE_GRACE_SECONDS, stopped
    log = (served.instance.dir.parent / "serve.log").read_text()
    assert "store closed" in log and "Traceback" not in log, log
