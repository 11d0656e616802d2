"""Searches in large mailboxes: which messages are opened at all, and long scans not holding up other sessions."""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

from schoolsuite.protocols.imap import ops_search
from schoolsuite.protocols.imap.commands import parse_command
from schoolsuite.protocols.imap.errors import No
from schoolsuite.storage import mail

from imap_helpers import message
from imap_server import PASSWORD, USER, start, tls_context


@pytest.fixture
def opened(monkeypatch):
    """Counts the messages whose stored record a search opens, and those whose bytes it reads."""
    counts = {"records": 0, "bytes": 0}
    get_message, read_message = mail.get_message, mail.read_message

    def counting_get(*args, **kwargs):
        counts["records"] += 1
        return get_message(*args, **kwargs)

    def counting_read(*args, **kwargs):
        counts["bytes"] += 1
        return read_message(*args, **kwargs)

    monkeypatch.setattr(mail, "get_message", counting_get)
    monkeypatch.setattr(mail, "read_message", counting_read)
    return counts


def _fill(conn, delivery, alice, n: int) -> None:
    for i in range(n):
        body = f"Message {i} about the {'xylophone' if i % 10 == 3 else 'piano'} lesson.\r\n"
        delivery.deliver(alice, message(f"Subject {i}", body))
    conn.cmd("s SELECT INBOX")


def test_uid_range_limits_the_messages_opened(conn, delivery, alice, opened):
    """A body search ANDed with a UID range opens only the messages in that range, whatever the key order."""
    _fill(conn, delivery, alice, 40)
    assert conn.cmd("a UID SEARCH BODY xylophone UID 31:35") == ["* SEARCH 34", "a OK UID SEARCH completed"]
    assert opened["records"] == 5
    assert conn.cmd("b SEARCH 1:2 BODY piano") == ["* SEARCH 1 2", "b OK SEARCH completed"]
    assert opened["records"] == 7


def test_flag_keys_are_tried_before_the_body(conn, delivery, alice, opened):
    """In an AND a flag key is evaluated first: only the flagged messages are decrypted for BODY."""
    _fill(conn, delivery, alice, 20)
    conn.cmd("f STORE 4,14 +FLAGS.SILENT (\\Flagged)")
    assert conn.cmd("a SEARCH BODY xylophone FLAGGED") == ["* SEARCH 4 14", "a OK SEARCH completed"]
    assert opened["records"] == 2
    assert conn.cmd("b SEARCH OR FLAGGED 7") == ["* SEARCH 4 7 14", "b OK SEARCH completed"]
    assert opened["records"] == 2  # index-only keys open no message record


def test_or_tries_the_cheaper_side_first(conn, delivery, alice, opened):
    """OR BODY x SUBJECT y: messages whose subject matches are not read; only the others are."""
    _fill(conn, delivery, alice, 10)
    assert conn.cmd('a SEARCH OR BODY xylophone SUBJECT "Subject 1"') == ["* SEARCH 2 4", "a OK SEARCH completed"]
    assert opened["records"] == 10 and opened["bytes"] == 9


def test_subject_comes_from_the_envelope(conn, delivery, alice, opened):
    """SUBJECT is answered from the stored envelope (RFC 3501 §6.4.4): no message bytes are read."""
    delivery.deliver(alice, message("=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?="))
    delivery.deliver(alice, message("Elternabend"))
    conn.cmd("s SELECT INBOX")
    assert conn.cmd("a SEARCH SUBJECT KÖLN") == ["* SEARCH 1", "a OK SEARCH completed"]
    assert conn.cmd("b SEARCH SUBJECT elternabend") == ["* SEARCH 2", "b OK SEARCH completed"]
    assert opened["bytes"] == 0 and opened["records"] == 4


def test_body_search_case_folding(conn, delivery, alice):
    """ASCII text is matched without regard to case; non-ASCII text by Unicode case folding (ß = SS)."""
    delivery.deliver(alice, message("ascii", "Hello World\r\n"))
    delivery.deliver(alice, message("utf8", "Gr\u00fc\u00dfe aus der Stra\u00dfe\r\n"))
    conn.cmd("s SELECT INBOX")
    assert conn.cmd("a SEARCH BODY wORLD") == ["* SEARCH 1", "a OK SEARCH completed"]
    assert conn.cmd("b SEARCH CHARSET UTF-8 BODY STRASSE") == ["* SEARCH 2", "b OK SEARCH completed"]
    assert conn.cmd("c SEARCH BODY hello TEXT ascii") == ["* SEARCH 1", "c OK SEARCH completed"]


def test_scan_gives_up_when_the_server_stops(conn, delivery, alice):
    """A scan running while the server shuts down stops with NO [UNAVAILABLE] instead of holding the store open."""
    _fill(conn, delivery, alice, 3)
    stopping = threading.Event()
    stopping.set()
    cmd = parse_command(b"a SEARCH BODY piano\r\n")
    with pytest.raises(No) as caught:
        ops_search.run_search(conn.proto.session, cmd, stopping)
    assert caught.value.code == "UNAVAILABLE"


# -- end to end: the scan pool of a real server ----------------------------------------------------


class _Client:
    def __init__(self, port: int) -> None:
        raw = socket.create_connection(("127.0.0.1", port), 20)
        self.sock = tls_context().wrap_socket(raw, server_hostname="localhost")
        self.buf = b""
        self.line()
        self.command("l", f'LOGIN {USER} "{PASSWORD}"')

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def until(self, tag: str) -> list[bytes]:
        out = []
        while True:
            line = self.line()
            out.append(line)
            if line.startswith(tag.encode() + b" "):
                return out

    def command(self, tag: str, text: str) -> list[bytes]:
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        reply = self.until(tag)
        assert reply[-1].startswith(f"{tag} OK".encode()), reply
        return reply


COUNT = ops_search.SCAN_IN_THREAD_FROM + 6000


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A real server whose INBOX holds COUNT messages, every 1000th (from the 8th) with "xylophone" in it."""
    server = start(tmp_path_factory.mktemp("imap-big"))
    try:
        a = _Client(server.imaps_port)
        filler = " ".join(["lorem ipsum dolor sit amet"] * 60)
        for first in range(0, COUNT, 500):
            parts = []
            for i in range(first, min(first + 500, COUNT)):
                data = message(f"m{i}", f"{filler} {'xylophone' if i % 1000 == 7 else 'piano'}\r\n")
                parts.append(b" {%d+}\r\n" % len(data) + data)
            a.sock.sendall(b"p APPEND INBOX" + b"".join(parts) + b"\r\n")
            assert a.until("p")[-1].startswith(b"p OK")
        a.sock.close()
        yield server
    finally:
        server.stop()


def test_long_body_search_does_not_hold_up_other_sessions(big):
    """While one session scans a mailbox larger than SCAN_IN_THREAD_FROM, another session's NOOP is answered
    before that scan ends (the scan runs in the server's scan pool, not on the reactor thread)."""
    a = _Client(big.imaps_port)
    a.command("s", "SELECT INBOX")
    b = _Client(big.imaps_port)
    b.command("s", "SELECT INBOX")
    searched: dict[str, object] = {}

    def search() -> None:  # each reply's arrival is timed by its own reader
        searched["sent"] = time.monotonic()
        a.sock.sendall(b"q UID SEARCH TEXT xylophone\r\n")
        searched["reply"] = a.until("q")
        searched["at"] = time.monotonic()

    reader = threading.Thread(target=search)
    reader.start()
    time.sleep(0.005)
    noop_sent = time.monotonic()
    b.sock.sendall(b"n NOOP\r\n")
    assert b.until("n")[-1].startswith(b"n OK")
    noop_done = time.monotonic()
    reader.join(60)
    reply, search_done = searched["reply"], searched["at"]
    expected = " ".join(str(i + 1) for i in range(COUNT) if i % 1000 == 7)
    assert reply == [f"* SEARCH {expected}".encode(), b"q OK UID SEARCH completed"]
    # On the reactor thread the NOOP would wait for the whole scan; in the pool it waits for the GIL only.
    assert noop_done < search_done and noop_done - noop_sent < (search_done - searched["sent"]) / 3
    for c in (a, b):
        c.sock.close()


def test_shutdown_during_a_scan(big):
    """SIGTERM while a scan runs: the scan stops with NO [UNAVAILABLE], the pool is joined, the store closed, exit 0
    (runs last: it stops the module's server)."""
    a = _Client(big.imaps_port)
    a.command("s", "SELECT INBOX")
    a.sock.sendall(b"q UID SEARCH TEXT xylophone\r\n")
    time.sleep(0.02)
    big.proc.send_signal(signal.SIGTERM)
    assert a.until("q") == [b"q NO [UNAVAILABLE] Server shutting down"]
    assert big.proc.wait(30) == 0
    assert "store closed" in (big.instance.dir.parent / "serve.log").read_text()
