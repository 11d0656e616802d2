"""A 2 GiB upload: streamed into sealed chunks with bounded memory, never plaintext on disk, read back intact."""

from __future__ import annotations

import hashlib
import http.client
import os
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import stop_process
from webdav_server import start_files_server
from webdav_helpers import FilesServer

SIZE = 2 << 30
BLOCK = 1 << 20
MARKER = b"SCHOOLSUITE-PLAINTEXT-MARKER-"  # repeated through every block the client sends
#: Resident anonymous memory the server may use during the upload (baseline is about 50 MB).
RSS_LIMIT_MB = 250


def pattern_block() -> bytes:
    line = MARKER + b"0123456789abcdef" * 3 + b"\n"
    return (line * (BLOCK // len(line) + 1))[:BLOCK]


def rss_anon_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return 0.0


def files_holding(directory: Path, needle: bytes) -> list[Path]:
    """Files under ``directory`` that contain ``needle`` (read in 64 MiB windows)."""
    hits = []
    for path in directory.rglob("*"):
        if not path.is_file():
            continue
        with open(path, "rb") as f:
            tail = b""
            while True:
                block = f.read(64 << 20)
                if not block:
                    break
                if needle in tail + block:
                    hits.append(path)
                    break
                tail = block[-len(needle):]
    return hits


@pytest.fixture
def big_server(tmp_path: Path) -> Iterator[FilesServer]:
    """A server of its own (2 GiB go into its store), removed afterwards."""
    server, proc = start_files_server(tmp_path)
    yield server
    stop_process(proc, 30)


@pytest.mark.slow
def test_two_gib_upload_bounded_and_sealed(big_server: FilesServer) -> None:
    """2 GiB PUT: RssAnon stays under the limit, no temp file appears, the store holds no plaintext, GET matches."""
    dav = big_server.client()
    block = pattern_block()
    expected = hashlib.sha256()
    for _ in range(SIZE // BLOCK):
        expected.update(block)

    peak = [0.0]
    temp_files_seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_anon_mb(big_server.pid))
            for fd in Path(f"/proc/{big_server.pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith(str(big_server.temp_dir)):
                    temp_files_seen.append(target)
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ctx = ssl.create_default_context(cafile=str(big_server.cert))
    conn = http.client.HTTPSConnection("localhost", big_server.port, context=ctx, timeout=600)
    try:
        conn.putrequest("PUT", dav.home("big.bin"))
        conn.putheader("Authorization", dav.auth_headers()["Authorization"])
        conn.putheader("Content-Length", str(SIZE))
        conn.endheaders()
        for _ in range(SIZE // BLOCK):
            conn.send(block)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 201
    finally:
        done.set()
        watcher.join()
        conn.close()
    print(f"peak RssAnon during the 2 GiB upload: {peak[0]:.0f} MB")
    assert peak[0] < RSS_LIMIT_MB, f"server used {peak[0]:.0f} MB"
    assert not temp_files_seen and not list(big_server.temp_dir.iterdir())

    got = hashlib.sha256()
    conn = http.client.HTTPSConnection("localhost", big_server.port, context=ctx, timeout=600)
    conn.request("GET", dav.home("big.bin"), headers=dav.auth_headers())
    resp = conn.getresponse()
    total = 0
    while piece := resp.read(BLOCK):
        got.update(piece)
        total += len(piece)
    conn.close()
    assert total == SIZE and got.digest() == expected.digest()
    assert files_holding(big_server.data_dir, MARKER) == []
    assert files_holding(big_server.temp_dir, MARKER) == []
