"""A 30 MB message through a real ``schoolsuite serve``: fetched byte for byte by imaplib over TLS and by
mbsync, with the server's memory bounded while a client does not read (the literal is streamed)."""

from __future__ import annotations

import base64
import imaplib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imap_server import PASSWORD, USER, ImapServer, mbsync_config, offlineimap, start, tls_context, tls_session
from support import require_program, schoolsuite_cmd, stop_process

STREAMER = "stream@school.example"


RAW = os.urandom(22 << 20)


def _message() -> bytes:
    """About 30 MB: a text part, a base64 attachment of 22 MB, a quoted-printable part."""
    b64 = base64.encodebytes(RAW).replace(b"\n", b"\r\n")
    qp = b"caf=C3=A9 au lait=\r\n and more\r\n" * 1000
    return (b"From: a@example.org\r\nTo: " + STREAMER.encode() + b"\r\nSubject: thirty megabytes\r\n"
            b"Message-ID: <big@example.org>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            b"See attached.\r\n--b\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"--b\r\nContent-Type: text/plain\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp + b"--b--\r\n")


BIG = _message()
PART2 = BIG[BIG.index(b"base64\r\n\r\n") + 10:BIG.index(b"\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImapServer]:
    """A real server whose user STREAMER has the 30 MB message and a small one in INBOX."""
    s = start(tmp_path_factory.mktemp("imap-stream"), users=(USER, STREAMER))
    try:
        m = _imap(s)
        m.append("INBOX", None, None, BIG)
        m.append("INBOX", None, None, b"From: s@example.org\r\nSubject: small\r\n\r\nsmall\r\n")
        m.logout()
        yield s
    finally:
        s.stop()


def _imap(server: ImapServer) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=tls_context(), timeout=60)
    m.login(STREAMER, PASSWORD)
    return m


def test_imaplib_over_tls_gets_30_mb_byte_identical(server):
    """imaplib over implicit TLS: BODY.PEEK[] of 30 MB, a 5 MB partial, the attachment part (BODY[2]), its
    decoded bytes (BINARY[2]) and the FETCH of both messages are exact, and the connection stays usable."""
    m = _imap(server)
    m.select("INBOX", readonly=True)
    typ, data = m.fetch("1", "(UID BODY.PEEK[])")
    assert typ == "OK" and data[0][1] == BIG
    typ, data = m.fetch("1", "(BODY.PEEK[]<1000000.5000000>)")
    assert data[0][0].endswith(b"BODY[]<1000000> {5000000}") and data[0][1] == BIG[1000000:6000000]
    typ, data = m.fetch("1", "(BODY.PEEK[2] BODY.PEEK[2.MIME])")
    assert data[0][1] == PART2 and data[1][1] == b"Content-Type: application/octet-stream\r\n" \
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    typ, data = m.fetch("1", "(BINARY.PEEK[2])")  # RFC 3516: decoded, literal8 since it holds NULs
    assert data[0][0].endswith(b"BINARY[2] ~{%d}" % len(RAW)) and data[0][1] == RAW
    typ, data = m.fetch("1:2", "(RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK" and data[0][1] == BIG and data[2][1].endswith(b"small\r\n")
    assert m.noop()[0] == "OK"
    m.logout()


def _rss_anon_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^RssAnon:\s+(\d+) kB", text, re.M).group(1))  # type: ignore[union-attr]


def _restart(server: ImapServer) -> None:
    """Restart ``schoolsuite serve`` on the same instance: a fresh heap (the C allocator keeps what the
    APPEND of 30 MB used, which would hide a FETCH's own peak)."""
    stop_process(server.proc)
    log = open(server.instance.dir.parent / "serve.log", "ab")
    server.proc = subprocess.Popen(schoolsuite_cmd("serve", "-c", str(server.instance.config)), stdout=log,
                                   stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, "server exited"
        try:
            socket.create_connection(("127.0.0.1", server.imaps_port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("server did not come back")


def test_memory_stays_bounded_while_a_client_does_not_read(server):
    """A client over TLS that asks for the 30 MB message and reads nothing for 2 s costs a freshly started
    server less than 16 MiB of heap (the response was built whole before: about 90 MiB); then it reads all
    of it intact."""
    _restart(server)
    sock, f = tls_session(server, STREAMER, PASSWORD, b"s EXAMINE INBOX\r\n", small_rcvbuf=True)
    time.sleep(0.3)
    before = _rss_anon_kib(server.proc.pid)
    sock.sendall(b"f FETCH 1 (BODY.PEEK[])\r\n")
    peak = before
    for _ in range(20):
        time.sleep(0.1)
        peak = max(peak, _rss_anon_kib(server.proc.pid))
    assert (peak - before) < 16 << 10, f"server heap grew by {(peak - before) >> 10} MiB"
    head = f.readline()
    assert head == b"* 1 FETCH (BODY[] {%d}\r\n" % len(BIG)
    assert f.read(len(BIG)) == BIG
    assert f.readline() == b")\r\n" and f.readline() == b"f OK FETCH completed\r\n"
    sock.close()


def test_mbsync_pulls_a_30_mb_message_intact(server, tmp_path):
    """mbsync (isync) syncs the mailbox holding the 30 MB message into a Maildir; the file is the message."""
    mbsync = require_program("mbsync")
    config, maildir = mbsync_config(server, STREAMER, PASSWORD, tmp_path, channel="Patterns INBOX\nCreate Near\n")
    run = subprocess.run([mbsync, "-c", str(config), "-a"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    files = sorted([*(maildir / "INBOX" / "cur").glob("*"), *(maildir / "INBOX" / "new").glob("*")],
                   key=lambda p: p.stat().st_size)
    assert len(files) == 2
    # mbsync stores Maildir files with LF line ends, and adds its X-TUID header to track new messages.
    got = re.sub(rb"\nX-TUID: [^\n]*\n", b"\n", files[1].read_bytes(), count=1)
    assert got == BIG.replace(b"\r\n", b"\n")


def test_compressed_tls_fetch_of_30_mb(server):
    """COMPRESS=DEFLATE over TLS: the 30 MB message inflates to the stored bytes, and a pipelined command
    after the streamed FETCH is answered after it, in order."""
    import zlib

    sock, f = tls_session(server, STREAMER, PASSWORD, b"z COMPRESS DEFLATE\r\n")
    zin, zout = zlib.decompressobj(-15), zlib.compressobj(6, zlib.DEFLATED, -15)
    sock.sendall(zout.compress(b"s EXAMINE INBOX\r\nf FETCH 1 (BODY.PEEK[])\r\nn NOOP\r\n")
                 + zout.flush(zlib.Z_SYNC_FLUSH))
    out = bytearray()
    while not out.endswith(b"n OK NOOP completed\r\n"):
        data = sock.recv(1 << 20)
        assert data, bytes(out[-200:])
        out += zin.decompress(data)
    head = b"* 1 FETCH (BODY[] {%d}\r\n" % len(BIG)
    i = out.index(head) + len(head)
    assert out[i:i + len(BIG)] == BIG
    assert out[i + len(BIG):].startswith(b")\r\nf OK FETCH completed\r\nn OK NOOP completed\r\n")
    sock.close()


def test_offlineimap_mirrors_a_30_mb_message_intact(server, tmp_path):
    """offlineimap mirrors the mailbox holding the 30 MB message into a Maildir; the file is the message."""
    maildir = offlineimap(server, STREAMER, PASSWORD, tmp_path, only_inbox=True, timeout=180)
    files = sorted([*(maildir / "INBOX" / "cur").glob("*"), *(maildir / "INBOX" / "new").glob("*")],
                   key=lambda p: p.stat().st_size)
    assert len(files) == 2
    got = files[1].read_bytes()
    assert got in (BIG, BIG.replace(b"\r\n", b"\n")), (len(got), len(BIG))


def test_sigterm_mid_literal_finishes_the_response_first(tmp_path):
    """SIGTERM while a 30 MB literal is being sent to a client over TLS: the client still reads the whole
    response, then NO [UNAVAILABLE] (not the next message) and * BYE; the server exits 0, store closed."""
    s = start(tmp_path, users=(STREAMER,))
    try:
        m = _imap(s)
        m.append("INBOX", None, None, BIG)
        m.append("INBOX", None, None, BIG)
        m.logout()
        sock, f = tls_session(s, STREAMER, PASSWORD, b"s EXAMINE INBOX\r\n", small_rcvbuf=True)
        sock.sendall(b"f FETCH 1:2 (BODY.PEEK[])\r\n")
        assert f.readline() == b"* 1 FETCH (BODY[] {%d}\r\n" % len(BIG)
        first = f.read(1 << 20)
        s.proc.send_signal(signal.SIGTERM)
        rest = f.read(len(BIG) - len(first))
        assert first + rest == BIG
        assert f.readline() == b")\r\n"
        assert f.readline() == b"f NO [UNAVAILABLE] Server shutting down\r\n"
        assert f.readline() == b"* BYE [UNAVAILABLE] Server shutting down\r\n"
        assert s.proc.wait(30) == 0
        sock.close()
        log = (tmp_path / "serve.log").read_text()
        assert "store closed" in log and "Traceback" not in log, log
    finally:
        s.stop()


def test_sigterm_with_a_stalled_reader_cuts_after_the_wait(tmp_path):
    """SIGTERM while a client has stopped reading a 30 MB literal: the server waits SHUTDOWN_WAIT_SECONDS for
    it, then closes the connection without a BYE inside the literal (what the client got is a true prefix
    of the message) and exits 0."""
    from schoolsuite.protocols.imap.protocol import SHUTDOWN_WAIT_SECONDS

    s = start(tmp_path, users=(STREAMER,))
    try:
        m = _imap(s)
        m.append("INBOX", None, None, BIG)
        m.logout()
        sock, f = tls_session(s, STREAMER, PASSWORD, b"s EXAMINE INBOX\r\n", small_rcvbuf=True)
        sock.sendall(b"f FETCH 1 (BODY.PEEK[])\r\n")
        assert f.readline() == b"* 1 FETCH (BODY[] {%d}\r\n" % len(BIG)
        got = f.read(1 << 20)
        started = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(30) == 0
        assert time.monotonic() - started < SHUTDOWN_WAIT_SECONDS + 5
        try:
            while chunk := f.read1(1 << 20):  # what was already on its way, then the end of the connection
                got += chunk
        except OSError:  # the server aborts a TLS connection whose close it cannot finish (ssl errors too)
            pass
        assert len(got) < len(BIG) and BIG.startswith(got)
        sock.close()
    finally:
        s.stop()
