"""A literal over ops_fetch.STREAM_LITERAL is streamed from the store piece by piece, one piece per reactor
turn, instead of being built in memory; what the client reads is byte for byte what a built response is."""

from __future__ import annotations

import base64
import os
import re
import zlib
from contextlib import contextmanager

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from imap_helpers import Conn
from schoolsuite.protocols.imap import ops_fetch
from schoolsuite.protocols.imap.protocol import SHUTDOWN_WAIT_SECONDS, IMAPFactory, ImapLimits
from schoolsuite.protocols.imap.session import Session
from schoolsuite.storage import mail
from schoolsuite.storage.store import CHUNK_SIZE

BYE = b"* BYE [UNAVAILABLE] Server shutting down\r\n"


def big_message(size: int, seed: int = 1) -> bytes:
    """A multipart message of about ``size`` bytes: a short text part, a base64 attachment, a 7bit text part."""
    raw = os.urandom(size * 3 // 8)
    b64 = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    text = b"".join(b"line %d of the long text part\r\n" % i for i in range(size // 64))
    return (b"From: a@example.org\r\nTo: alice@school.example\r\nSubject: big %d\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            b"See attached.\r\n--b\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n%s--b\r\nContent-Type: text/plain\r\n\r\n%s--b--\r\n"
            % (seed, b64, text))


def _store(services, alice, *messages: bytes, box_name: str = "INBOX") -> None:
    with services.store.write() as txn:
        user = txn.user(alice)
        box = mail.find_mailbox(user, box_name)
        for m in messages:
            mail.append(user, box, m)
        mail.save_mailbox(user, box)


class _Paced(Conn):
    """A Conn whose transport behaves like a socket's: once more than 64 KiB wait unread it pauses its
    producer, and reading them resumes it (StringTransport alone never pauses)."""

    LIMIT = 1 << 16

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        write = self.transport.write

        def paced(data: bytes) -> None:
            write(data)
            producer = self.transport.producer
            if producer is not None and len(self.transport.value()) > self.LIMIT:
                producer.pauseProducing()

        self.transport.write = paced

    def read(self) -> bytes:
        data = super().read()
        if self.transport.producer is not None and data:
            self.transport.producer.resumeProducing()
        return data


def _conn(services, clock, factory=None) -> Conn:
    c = _Paced(services, clock=clock, factory=factory)
    c.login()
    c.cmd("S SELECT INBOX")
    return c


def _run(clock: Clock, c: Conn, tag: bytes, limit: int = 2000, sizes: list[int] | None = None) -> bytes:
    """Reactor turns until ``tag``'s tagged reply; everything written (each turn's size into ``sizes``)."""
    out = b""
    for _ in range(limit):
        got = c.read()
        if sizes is not None:
            sizes.append(len(got))
        out += got
        if re.search(rb"(^|\r\n)" + tag + rb" ", out):
            return out
        clock.advance(0)
    raise AssertionError(f"no tagged reply: {out[-300:]!r}")


def _begun() -> float:
    return ops_fetch.STREAMED.labels("begun")._value.get()


def _answer(services, clock: Clock, command: bytes, *, examine: bool = True, c: Conn | None = None,
            sizes: list[int] | None = None) -> bytes:
    """Everything a fresh session (or ``c``) is sent for ``command`` (tag R), up to its tagged reply."""
    if c is None:
        c = _Paced(services, clock=clock)
        c.login()
        c.cmd("S EXAMINE INBOX" if examine else "S SELECT INBOX")
    c.proto.dataReceived(command)
    return _run(clock, c, b"R", sizes=sizes)


def _built(services, monkeypatch, command: bytes, **kw) -> bytes:
    """The same answer with every literal built in memory (the reference)."""
    with monkeypatch.context() as m:
        m.setattr(ops_fetch, "STREAM_LITERAL", 1 << 40)
        return _answer(services, Clock(), command, **kw)


@pytest.fixture
def two_big(services, alice):
    """INBOX: a small message, two of about 3 MB, a small one."""
    small = b"From: s@example.org\r\nSubject: small\r\n\r\nsmall body\r\n"
    big1, big2 = big_message(3 << 20, 1), big_message(3 << 20, 2)
    _store(services, alice, small, big1, big2, small, qp_message())
    return [small, big1, big2, small]


def qp_message() -> bytes:
    """A 2 MB quoted-printable part: short lines with escapes and soft breaks, and lines of 200 KB."""
    short = b"caf=C3=A9 au lait, =3D and a soft break=\r\n then the rest  \r\n" * 12000
    long = (b"x" * 99 + b"=41 " + b"y=\t") * 2000 + b"\r\n"
    return (b"From: q@example.org\r\nSubject: qp\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + short + long * 3 + short)


def test_streamed_body_is_byte_identical_and_goes_piece_by_piece(services, two_big):
    """BODY.PEEK[] of 3 MB messages: the same bytes as a built response; the first turn writes no more than the
    text before the literal, each later turn at most one PIECE (plus the text around it)."""
    command = b"R FETCH 1:4 (UID RFC822.SIZE BODY.PEEK[] FLAGS)\r\n"
    sizes: list[int] = []
    streamed = _answer(services, Clock(), command, sizes=sizes)
    assert streamed == _built(services, pytest.MonkeyPatch(), command)
    assert streamed.count(two_big[1]) == 1 and streamed.count(two_big[2]) == 1
    assert streamed.endswith(b"R OK FETCH completed\r\n")
    assert sizes[0] < 1000  # message 1 whole, then only "* 2 FETCH (UID 2 RFC822.SIZE n BODY[] {n}"
    assert max(sizes) <= ops_fetch.PIECE + 1000 and len(sizes) > 2 * (3 << 20) // ops_fetch.PIECE


@pytest.mark.parametrize("items", [
    b"BODY.PEEK[2]", b"BODY.PEEK[3] BODY.PEEK[2.MIME] BODY.PEEK[TEXT]", b"RFC822.TEXT RFC822.HEADER",
    b"BODY.PEEK[]<1000.2000000>", b"BODY.PEEK[]<2000000.2000000>", b"BODY.PEEK[2]<7.1500000> BODY.PEEK[1]",
    b"RFC822", b"BODY.PEEK[HEADER.FIELDS (Subject)] ENVELOPE BODYSTRUCTURE BODY.PEEK[2]",
])
def test_streamed_sections_match_built_ones(services, two_big, monkeypatch, items):
    """Parts, MIME headers, TEXT, RFC822 forms and partials are streamed (a partial beyond the end, shorter);
    several streamed literals in one response; each answer byte for byte the built one."""
    command = b"R FETCH 1:4 (" + items + b")\r\n"
    begun = _begun()
    streamed = _answer(services, Clock(), command)
    assert _begun() > begun  # something was streamed
    assert streamed == _built(services, monkeypatch, command)
    assert streamed.endswith(b"R OK FETCH completed\r\n")


@pytest.mark.parametrize("command", [
    b"R FETCH 1:4 (BINARY.PEEK[2] BINARY.SIZE[2])", b"R FETCH 2 (BINARY.PEEK[2]<100.2000000> BINARY.PEEK[3])",
    b"R FETCH 3 (BINARY.PEEK[2]<500000.5000000>)", b"R FETCH 2 (BINARY.PEEK[2]<9000000.10>)",
    b"R FETCH 5 (BINARY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[])", b"R FETCH 5 (BINARY.PEEK[1]<1000.1500000>)",
])
def test_streamed_binary_matches_built(services, two_big, monkeypatch, command):
    """BINARY of large base64, quoted-printable (long lines too) and 7bit parts, partials, BINARY.SIZE: decoded
    piece by piece and streamed, each answer byte for byte the built one (literal8 when a NUL is sent)."""
    begun = _begun()
    streamed = _answer(services, Clock(), command + b"\r\n")
    assert (_begun() > begun) == (b"<9000000.10>" not in command)  # that partial is past the end: {0}
    assert streamed == _built(services, monkeypatch, command + b"\r\n")
    assert streamed.endswith(b"R OK FETCH completed\r\n")


def test_streamed_binary_is_the_decoded_part(services, two_big):
    """BINARY.PEEK[2] of a 3 MB message is the attachment's decoded bytes, sent as literal8 (they hold NULs),
    streamed at most a PIECE per turn."""
    sizes: list[int] = []
    streamed = _answer(services, Clock(), b"R FETCH 2 (BINARY.PEEK[2])\r\n", sizes=sizes)
    assert max(sizes) <= ops_fetch.PIECE and len(sizes) > 4  # streamed, not built
    encoded = two_big[1].split(b"base64\r\n\r\n", 1)[1].split(b"--b", 1)[0]
    decoded = base64.b64decode(encoded)
    assert streamed.startswith(b"* 2 FETCH (BINARY[2] ~{%d}\r\n" % len(decoded) + decoded + b")\r\n")


def test_non_peek_streamed_fetch_sets_seen_and_reports_it_after_the_literal(services, two_big, monkeypatch):
    """BODY[] (not PEEK) of a streamed message sets \\Seen; FLAGS and MODSEQ follow the literal in the same
    response, as in a built one."""
    command = b"R FETCH 2 (MODSEQ BODY[])\r\n"
    streamed = _answer(services, Clock(), command, examine=False)
    m = re.search(rb"\* 2 FETCH \(MODSEQ \((\d+)\) BODY\[\] \{(\d+)\}\r\n", streamed)
    assert m and int(m.group(2)) == len(two_big[1])
    tail = streamed[m.end() + len(two_big[1]):]
    assert re.match(rb" FLAGS \(\\Seen \\Recent\)\)\r\nR OK FETCH completed\r\n$", tail), tail[:100]
    assert streamed[m.end():m.end() + len(two_big[1])] == two_big[1]
    clock = Clock()
    assert _conn(services, clock).cmd("U SEARCH UNSEEN") == ["* SEARCH 1 3 4 5", "U OK SEARCH completed"]


class _Reads:
    """Counts the store's read transactions a session opens, and how many are open."""

    def __init__(self, monkeypatch) -> None:
        self.opened = 0
        self.open = 0
        original = Session.read

        @contextmanager
        def read(session):
            self.opened += 1
            self.open += 1
            try:
                with original(session) as txn:
                    yield txn
            finally:
                self.open -= 1

        monkeypatch.setattr(Session, "read", read)


def test_each_piece_in_a_short_read_transaction_and_only_when_the_transport_wants_more(services, two_big,
                                                                                     monkeypatch):
    """While streaming, no read transaction stays open between turns; while the transport's buffer is full
    (pauseProducing) nothing is read or written; then the stream goes on where it stopped."""
    reads = _Reads(monkeypatch)
    clock = Clock()
    c = _conn(services, clock)
    first = c.send(b"R FETCH 2 (BODY.PEEK[])\r\n")
    assert first.endswith(b"BODY[] {%d}\r\n" % len(two_big[1]))
    clock.advance(0)
    assert len(c.read()) == ops_fetch.PIECE and reads.open == 0
    producer = c.transport.producer
    producer.pauseProducing()
    before = reads.opened
    for _ in range(5):
        clock.advance(0)
    assert c.read() == b"" and reads.opened == before
    producer.resumeProducing()
    rest = _run(clock, c, b"R")
    assert reads.open == 0
    assert rest.endswith(two_big[1][-1000:] + b")\r\nR OK FETCH completed\r\n")
    assert reads.opened - before >= len(two_big[1]) // ops_fetch.PIECE


def _streaming(services, clock, factory=None, *, turns: int = 2) -> tuple[Conn, bytes]:
    """A session that has streamed the head of message 2 and ``turns`` pieces."""
    c = _conn(services, clock, factory)
    out = c.send(b"R FETCH 2:3 (BODY.PEEK[])\r\n")
    for _ in range(turns):
        clock.advance(0)
        out += c.read()
    assert c.proto.session.open_response
    return c, out


def test_expunged_mid_stream_closes_without_a_wrong_byte(services, alice, two_big):
    """Another session expunges the message being streamed (its content freed): the connection is closed
    without another byte; everything sent is the true prefix of the response, no tagged reply; counted."""
    cuts = ops_fetch.STREAMED.labels("cut")._value.get()
    clock = Clock()
    c, out = _streaming(services, clock)
    other = _conn(services, clock)
    other.cmd("D STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert other.cmd("E EXPUNGE")[-1] == "E OK EXPUNGE completed"
    for _ in range(20):
        clock.advance(0)
        out += c.read()
    head = b"* 2 FETCH (BODY[] {%d}\r\n" % len(two_big[1])
    assert out.startswith(head) and two_big[1].startswith(out[len(head):])
    assert len(out) < len(head) + len(two_big[1]) and b"R " not in out[-100:]
    assert c.transport.disconnecting and c.transport.producer is None
    assert ops_fetch.STREAMED.labels("cut")._value.get() == cuts + 1


@pytest.mark.parametrize("how", ["copy", "move"])
def test_expunged_but_copied_message_streams_on(services, alice, two_big, how):
    """A message copied then expunged, or moved, by another session mid-stream: its content is still referred
    to, so it streams to its end, intact."""
    clock = Clock()
    c, out = _streaming(services, clock)
    other = _conn(services, clock)
    if how == "copy":
        assert other.cmd("C COPY 2 Archive")[-1].startswith("C OK")
        other.cmd("D STORE 2 +FLAGS.SILENT (\\Deleted)")
        other.cmd("E EXPUNGE")
    else:
        assert other.cmd("M MOVE 2 Archive")[-1].startswith("M OK")
    out += _run(clock, c, b"R")
    assert two_big[1] in out and out.endswith(b")\r\nR OK FETCH completed\r\n")


def test_connection_lost_mid_stream_stops_reading_the_store(services, two_big, monkeypatch):
    """A connection lost mid-literal reads no further piece and unregisters its producer."""
    reads = _Reads(monkeypatch)
    clock = Clock()
    c, _ = _streaming(services, clock)
    c.proto.connectionLost(Failure(ConnectionDone()))
    before = reads.opened
    for _ in range(10):
        clock.advance(0)
    assert reads.opened == before and c.transport.producer is None and c.read() == b""


def test_account_closed_mid_stream_sends_no_bye_inside_the_literal(services, two_big):
    """An account disabled while a literal is being streamed: the connection closes with no * BYE (which the
    client would read as literal bytes)."""
    clock = Clock()
    c, out = _streaming(services, clock)
    c.proto.close_session()
    assert c.read() == b"" and c.transport.disconnecting and c.transport.producer is None


def _factory(services) -> IMAPFactory:
    return IMAPFactory(services, ImapLimits(), tls=None, implicit_tls=True)


def test_shutdown_mid_stream_finishes_the_response_then_no_and_bye(services, two_big):
    """Server shutdown while a literal is streamed: the response is finished (the client stays in sync), then
    NO [UNAVAILABLE] instead of the next messages, then * BYE."""
    clock = Clock()
    c, out = _streaming(services, clock, _factory(services))
    c.factory.drain()
    out += _run(clock, c, b"R")
    assert out.count(b" FETCH (") == 1 and two_big[1] in out
    assert out.endswith(b")\r\nR NO [UNAVAILABLE] Server shutting down\r\n" + BYE), out[-200:]
    assert c.transport.disconnecting


def test_shutdown_cuts_a_stalled_stream_after_the_wait(services, two_big):
    """A client that stops reading mid-literal does not hold the shutdown: after SHUTDOWN_WAIT_SECONDS the
    connection is closed without a BYE inside the literal."""
    clock = Clock()
    c, out = _streaming(services, clock, _factory(services))
    c.transport.producer.pauseProducing()
    c.factory.drain()
    clock.advance(SHUTDOWN_WAIT_SECONDS - 0.1)
    assert c.read() == b"" and not c.transport.disconnecting
    clock.advance(0.1)
    assert c.read() == b"" and c.transport.disconnecting and c.transport.producer is None


def test_compressed_streamed_fetch_decompresses_to_the_built_answer(services, two_big, monkeypatch):
    """Under COMPRESS=DEFLATE the streamed pieces go through the compressor: the client inflates the same
    bytes as a built answer."""
    def inflated(clock):
        c = _Paced(services, clock=clock)
        c.login()
        c.cmd("S EXAMINE INBOX")
        assert c.send(b"Z COMPRESS DEFLATE\r\n") == b"Z OK DEFLATE active\r\n"
        zin, zout = zlib.decompressobj(-15), zlib.compressobj(6, zlib.DEFLATED, -15)
        c.proto.dataReceived(zout.compress(b"R FETCH 2:3 (BODY.PEEK[2] BODY.PEEK[])\r\n")
                             + zout.flush(zlib.Z_SYNC_FLUSH))
        out = b""
        for _ in range(2000):
            out += zin.decompress(c.read())
            if b"\r\nR " in out:
                return out
            clock.advance(0)
        raise AssertionError(out[-200:])

    streamed = inflated(Clock())
    with monkeypatch.context() as m:
        m.setattr(ops_fetch, "STREAM_LITERAL", 1 << 40)
        built = inflated(Clock())
    assert streamed == built and two_big[2] in streamed


def test_pipelined_commands_after_a_streamed_fetch_answer_in_order(services, two_big):
    """Commands pipelined behind a streamed FETCH wait for its tagged OK and are answered in order."""
    clock = Clock()
    c = _conn(services, clock)
    out = c.send(b"R FETCH 2 (BODY.PEEK[])\r\nA NOOP\r\nB FETCH 3 (BODY.PEEK[2])\r\nC UID FETCH 1 (UID)\r\n")
    out += _run(clock, c, b"C")
    assert out.count(b"R OK") == 1
    r, a, b, cc = (out.index(t) for t in (b"\r\nR OK", b"\r\nA OK", b"\r\nB OK", b"\r\nC OK"))
    assert r < a < b < cc and out.index(two_big[1]) < r and a < out.index(b"* 3 FETCH (BODY[2]") < b


def test_shutdown_during_the_seen_write_still_finishes_a_begun_literal(services, two_big):
    """A non-PEEK FETCH whose \\Seen write is answered after the shutdown began: its first batch has already
    begun a streamed literal, so that response is finished before NO [UNAVAILABLE] and the BYE."""
    from imap_helpers import HeldWriter

    clock = Clock()
    c = _conn(services, clock, _factory(services))
    writer = services.writer = HeldWriter()
    assert c.send(b"R FETCH 2:3 (BODY[])\r\n") == b""
    c.factory.drain()
    writer.release()
    out = _run(clock, c, b"R")
    assert out.count(b" FETCH (") == 1 and two_big[1] in out
    assert out.endswith(b")\r\nR NO [UNAVAILABLE] Server shutting down\r\n" + BYE), out[-200:]


@pytest.mark.parametrize("cte_header, body", [
    (b"x-uuencode", b"begin 644 f\r\n" + b"M" * 61 + b"\r\n"),
    (b"base64", b"QUJD" * 19 + b"\r\n"),  # ends with a lone character: not base64
])
def test_undecodable_large_binary_part_is_refused_before_any_byte(services, alice, cte_header, body):
    """BINARY of a large part in an unknown or broken transfer encoding: NO [UNKNOWN-CTE] (RFC 3516 §4.3),
    and nothing of its response was written."""
    times = (2 << 20) // len(body)
    data = (b"From: a@example.org\r\nSubject: odd\r\nMIME-Version: 1.0\r\nContent-Type: application/x-odd\r\n"
            b"Content-Transfer-Encoding: " + cte_header + b"\r\n\r\n" + body * times
            + (b"Q\r\n" if cte_header == b"base64" else b""))
    _store(services, alice, data)
    out = _answer(services, Clock(), b"R FETCH 1 (BINARY.PEEK[1])\r\n")
    assert out == b"R NO [UNKNOWN-CTE] " + (b"Unknown Content-Transfer-Encoding" if cte_header != b"base64"
                                          else b"Cannot decode the part's content") + b"\r\n"


def test_a_long_stream_counts_as_activity_for_autologout(services, two_big):
    """Each piece written restarts the autologout timer (RFC 3501 §5.4): a client that keeps reading a long
    literal is not logged out; one that stops reading is, after the full period, without a BYE in the
    literal."""
    clock = Clock()
    c, _ = _streaming(services, clock)
    period = c.proto.limits.autologout_seconds
    producer = c.transport.producer
    producer.pauseProducing()
    clock.advance(period - 1)
    producer.resumeProducing()
    clock.advance(0)  # one more piece: the timer starts again
    assert c.read() and not c.transport.disconnecting
    producer.pauseProducing()
    clock.advance(period - 1)
    assert not c.transport.disconnecting
    clock.advance(1)
    assert c.read() == b"" and c.transport.disconnecting


@pytest.mark.parametrize("nul", [True, False])
@pytest.mark.parametrize("items", [b"BODY.PEEK[1]", b"BODY.PEEK[1]<1000.1500000>", b"BODY.PEEK[1]<9000000.5>"])
def test_large_binary_encoded_part_streams_like_built(services, alice, monkeypatch, nul, items):
    """BODY[n] of a large part in Content-Transfer-Encoding binary: sent as it is, or re-encoded in base64
    lines when it holds a NUL (RFC 3516 §4.2), streamed and byte for byte the built answer."""
    raw = os.urandom(1 << 21) if nul else bytes(range(1, 256)) * 9000
    data = (b"From: a@example.org\r\nSubject: bin\r\nMIME-Version: 1.0\r\nContent-Type: application/x-odd\r\n"
            b"Content-Transfer-Encoding: binary\r\n\r\n" + raw)
    _store(services, alice, data)
    command = b"R FETCH 1 (" + items + b")\r\n"
    sizes: list[int] = []
    streamed = _answer(services, Clock(), command, sizes=sizes)
    assert streamed == _built(services, monkeypatch, command)
    if items == b"BODY.PEEK[1]":
        assert max(sizes) <= ops_fetch.PIECE * 3 // 2  # streamed (base64 adds a third), not built
