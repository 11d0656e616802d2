"""Request bodies of the HTTPS site: no plaintext spool, gates answer before the body is read."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolsuite.storage.spool import SPOOL_BLOCK, SealedSpool
from support import free_port

HERE = Path(__file__).parent
MARKER = b"PLAINTEXT-MARKER-7f3a9c" * 64  # recognisable; repeated through the body


@pytest.fixture
def body_server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str], Path]]:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, str(HERE / "body_server.py"), str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening"), proc.stderr.read() if proc.stderr else line
    yield port, proc, tmp
    proc.kill()
    proc.wait()


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def head(method: str, path: str, length: int | None, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    else:
        lines.append("Transfer-Encoding: chunked")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(s: socket.socket, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = s.recv(65536)
        if not piece:
            break
        data += piece
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(fields.get("content-length", "0"))
    while len(rest) < length:
        piece = s.recv(65536)
        if not piece:
            break
        rest += piece
    return status, fields, rest[:length]


def body_of(size: int) -> bytes:
    return (MARKER * (size // len(MARKER) + 1))[:size]


def open_fds_under(pid: int, directory: Path) -> list[Path]:
    """The server's open file descriptors whose (possibly deleted) file lies under ``directory``."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(directory)):
            found.append(fd)
    return found


def test_spool_roundtrip_and_ciphertext(tmp_path: Path) -> None:
    """A body over memory_max spools to an encrypted temp file and reads back byte-identical."""
    data = body_of(3 * SPOOL_BLOCK + 12345)
    spool = SealedSpool(memory_max=1000, spool_dir=str(tmp_path))
    for i in range(0, len(data), 7777):
        spool.write(data[i:i + 7777])
    assert spool.on_disk and spool.tell() == len(data)
    spool.seek(0)
    spool._file.seek(0)
    raw = spool._file.read()
    assert MARKER[:40] not in raw and len(raw) >= len(data)
    spool.seek(0)
    assert spool.read(10) == data[:10]
    assert spool.read() == data[10:]
    spool.seek(0)
    assert spool.readline() == data[:data.index(b"\n") + 1] if b"\n" in data else spool.read() == data
    spool.close()


def test_small_spool_stays_in_memory(tmp_path: Path) -> None:
    """A body under memory_max never creates a file."""
    spool = SealedSpool(memory_max=1 << 20, spool_dir=str(tmp_path))
    spool.write(b"hello")
    spool.seek(0)
    assert not spool.on_disk and spool.read() == b"hello" and not list(tmp_path.iterdir())


def test_large_plain_body_spooled_without_plaintext(body_server) -> None:  # type: ignore[no-untyped-def]
    """A 6 MiB body to a mount without a gate is spooled encrypted: no plaintext in any temp file."""
    port, proc, tmp = body_server
    data = body_of(6 << 20)
    s = connect(port)
    s.sendall(head("PUT", "/plain/x", len(data)))
    s.sendall(data[: 5 << 20])
    time.sleep(0.5)  # the server holds 5 MiB of the body now; look at its temp files
    fds = open_fds_under(proc.pid, tmp)
    assert fds, "expected an (encrypted) spool file"
    for fd in fds:
        content = fd.read_bytes()
        assert len(content) > 1 << 20
        assert MARKER[:40] not in content
    s.sendall(data[5 << 20:])
    status, _, body = read_response(s)
    assert status == 200
    assert body == b"%d %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode())
    assert not open_fds_under(proc.pid, tmp)


def test_streamed_body_touches_no_disk(body_server) -> None:  # type: ignore[no-untyped-def]
    """An accepted gated body streams to the application: no temp file at all, and it arrives whole."""
    port, proc, tmp = body_server
    data = body_of(900 * 1024)
    s = connect(port)
    s.sendall(head("PUT", "/gated/x", len(data), Authorization="Bearer good"))
    s.sendall(data[:600 * 1024])
    time.sleep(0.3)
    assert not open_fds_under(proc.pid, tmp)
    s.sendall(data[600 * 1024:])
    status, _, body = read_response(s)
    assert status == 200
    assert body == b"%d %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode())


def test_streamed_body_read_in_large_pieces(body_server) -> None:  # type: ignore[no-untyped-def]
    """While a body streams the socket is read 256 KiB at a time; the next request is back to Twisted's 64 KiB."""
    port, _, _ = body_server
    data = body_of(500 * 1024)
    s = connect(port)
    s.sendall(head("PUT", "/gated/x", len(data), Authorization="Bearer good") + data)
    status, headers, _ = read_response(s)
    assert status == 200 and headers["x-read-size"] == str(256 * 1024)
    s.sendall(head("PUT", "/plain/x", 10, Connection="close") + b"0123456789")
    status, headers, _ = read_response(s)
    assert status == 200 and headers["x-read-size"] == str(64 * 1024)


def test_chunked_streamed_body(body_server) -> None:  # type: ignore[no-untyped-def]
    """A chunked body (macOS Finder uploads this way) streams through the gate intact."""
    port, _, _ = body_server
    data = body_of(300 * 1024)
    s = connect(port)
    s.sendall(head("PUT", "/gated/x", None, Authorization="Bearer good"))
    for i in range(0, len(data), 50000):
        piece = data[i:i + 50000]
        s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
    s.sendall(b"0\r\n\r\n")
    status, _, body = read_response(s)
    assert status == 200 and body.startswith(b"%d " % len(data))


@pytest.mark.parametrize("headers,status", [
    ({}, 401),
    ({"Authorization": "Bearer bad"}, 401),
    ({"Authorization": "Bearer good", "X_Quota": "over"}, 507),
])
def test_gate_answers_before_body(body_server, headers, status) -> None:  # type: ignore[no-untyped-def]
    """401/507 come at once from the headers, although none of the announced 50 MiB was sent."""
    port, _, _ = body_server
    s = connect(port)
    s.sendall(head("PUT", "/gated/x", 50 << 20, **headers))
    started = time.monotonic()
    code, fields, _ = read_response(s, timeout=3)
    assert code == status and time.monotonic() - started < 2
    assert fields.get("connection") == "close"


def test_oversized_body_413_before_body(body_server) -> None:  # type: ignore[no-untyped-def]
    """A Content-Length above the gate's limit gets 413 at once."""
    port, _, _ = body_server
    s = connect(port)
    s.sendall(head("PUT", "/gated/x", 5 << 20, Authorization="Bearer good"))
    code, _, _ = read_response(s, timeout=3)
    assert code == 413


def test_site_limit_413_for_mount_without_gate(body_server) -> None:  # type: ignore[no-untyped-def]
    """The site's own body limit applies to every mount (413 before the body)."""
    port, _, _ = body_server
    s = connect(port)
    s.sendall(head("PUT", "/plain/x", 65 << 20))
    code, _, _ = read_response(s, timeout=3)
    assert code == 413


def test_chunked_body_over_limit_413_midway(body_server) -> None:  # type: ignore[no-untyped-def]
    """A chunked body that grows past the limit is cut off with 413 and the connection closed."""
    port, _, _ = body_server
    s = connect(port)
    s.sendall(head("PUT", "/gated/x", None, Authorization="Bearer good"))
    piece = b"x" * 60000
    try:
        for _ in range(40):  # 2.4 MB > 1 MiB
            s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
    except OSError:
        pass
    code, _, _ = read_response(s, timeout=5)
    assert code == 413


def test_expect_continue_gets_final_answer_not_100(body_server) -> None:  # type: ignore[no-untyped-def]
    """With Expect: 100-continue a refused request gets its 401 and never a 100 (RFC 9110 §10.1.1)."""
    port, _, _ = body_server
    s = connect(port)
    s.sendall(head("PUT", "/gated/x", 10 << 20, Expect="100-continue"))
    code, _, _ = read_response(s, timeout=3)
    assert code == 401


def test_expect_continue_accepted_gets_100(body_server) -> None:  # type: ignore[no-untyped-def]
    """With Expect: 100-continue an accepted request gets 100 first, then its answer."""
    port, _, _ = body_server
    s = connect(port)
    data = b"abc" * 1000
    s.sendall(head("PUT", "/gated/x", len(data), Expect="100-continue", Authorization="Bearer good"))
    code, _, _ = read_response(s, timeout=3)
    assert code == 100
    s.sendall(data)
    code, _, body = read_response(s, timeout=3)
    assert code == 200 and body.startswith(b"3000 ")


def test_bodiless_401_keeps_connection(body_server) -> None:  # type: ignore[no-untyped-def]
    """A 401 to a request without a body leaves the connection usable (clients retry on it)."""
    port, _, _ = body_server
    s = connect(port)
    s.sendall(b"GET /gated/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
    code, fields, _ = read_response(s)
    assert code == 401 and fields.get("connection") != "close"
    s.sendall(b"GET /gated/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer good\r\n\r\n")
    code, _, body = read_response(s)
    assert code == 200 and body.startswith(b"0 ")


def test_encoded_mount_name_still_gated(body_server) -> None:  # type: ignore[no-untyped-def]
    """'/%67ated/' reaches the gated mount through its gate, not around it."""
    port, _, _ = body_server
    s = connect(port)
    s.sendall(head("PUT", "/%67ated/x", 10))
    code, _, _ = read_response(s)
    assert code == 401


def test_stalled_streamed_body_is_cut_off(body_server) -> None:  # type: ignore[no-untyped-def]
    """A client that stops sending a streamed body loses the connection instead of holding a thread."""
    port, _, _ = body_server
    s = connect(port)
    s.sendall(head("PUT", "/gated/x", 100_000, Authorization="Bearer good"))
    s.sendall(b"x" * 1000)
    s.settimeout(5)
    started = time.monotonic()
    data = b""
    try:
        while True:
            piece = s.recv(4096)
            if not piece:
                break
            data += piece
    except OSError:
        pass
    assert time.monotonic() - started < 4  # closed after the 1 s idle limit, not never
    # The server is still fine for the next client.
    s2 = connect(port)
    s2.sendall(head("PUT", "/gated/y", 3, Authorization="Bearer good") + b"abc")
    assert read_response(s2)[0] == 200


def test_answer_before_streamed_body_is_read(body_server) -> None:  # type: ignore[no-untyped-def]
    """An application answering before reading a streamed body: the answer arrives, the connection closes, no error."""
    port, proc, _ = body_server
    s = connect(port)
    s.sendall(head("PUT", "/early/x", 1_000_000, Authorization="Bearer good"))
    try:
        for _ in range(10):
            s.sendall(b"z" * 100_000)
    except OSError:
        pass  # closed on us while sending: allowed (RFC 9112 §9.6)
    code, fields, body = read_response(s)
    assert code == 200 and body == b"early\n" and fields.get("connection") == "close"
    time.sleep(0.3)
    proc.kill()
    _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err and "Unhandled" not in err, err[-2000:]
