#!/usr/bin/env python3
"""One 30 MB message fetched from ``schoolsuite serve``: time and the server's memory.

Stores one message of about 30 MB (a short text part and a base64 attachment), then,
each on a freshly started server (so that memory kept by an earlier command does not
hide a peak), over a plain loopback connection:

- ``FETCH 1 BODY.PEEK[]`` read as fast as the client can: time, and the server's peak
  anonymous RSS above what it was before the command (sampled every 5 ms from /proc; the
  store's data file is mapped, and the pages of it that a FETCH touches count in VmRSS but are
  page cache, not the server's memory);
- the same FETCH by a client that reads nothing for 3 s: the RSS above the baseline
  while it does not read (what a stalled phone costs), then the time to read it all;
- ``FETCH 1 BINARY.PEEK[2]`` (the attachment, decoded) read at once: time and peak.

    python benchmarks/imap_fetch_large_message.py [--mb 30]
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from imap_vs_dovecot import Client, _proc_kib, start_schoolsuite, wait_port  # noqa: E402


def big_message(mb: int) -> bytes:
    raw = os.urandom(mb * 3 // 4 << 20)
    b64 = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    return (b"From: a@example.org\r\nTo: bench@school.example\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            b"See attached.\r\n--b\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"--b--\r\n")


class Peak:
    """The highest anonymous RSS (RssAnon: the heap, not the store's mapped file pages, which the kernel
    can drop at will) of ``pid`` while running, in KiB."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _proc_kib(self.pid, "RssAnon"))
            time.sleep(0.005)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, _proc_kib(self.pid, "RssAnon"))


def restart(base: Path, proc, port: int):  # type: ignore[no-untyped-def]
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    config = base / "inst" / "schoolsuite.toml"
    proc = subprocess.Popen([sys.executable, "-m", "schoolsuite", "serve", "-c", str(config)],
                                          stdout=open(base / "serve.log", "ab"),
                                          stderr=subprocess.STDOUT)
    wait_port(port, proc, "schoolsuite")
    return proc


def selected(port: int) -> Client:
    c = Client(port)
    c.login()
    c.command("EXAMINE INBOX")
    return c


def fetch_fast(port: int, pid: int, what: str) -> tuple[float, int]:
    c = selected(port)
    time.sleep(0.3)
    base = _proc_kib(pid, "RssAnon")
    peak = Peak(pid)
    started = time.perf_counter()
    c.command(f"FETCH 1 {what}")
    took = time.perf_counter() - started
    c.close()
    return took, (peak.stop() - base) // 1024


def fetch_stalled(port: int, pid: int) -> tuple[int, float]:
    c = selected(port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    time.sleep(0.3)
    base = _proc_kib(pid, "RssAnon")
    peak = Peak(pid)
    c.n += 1
    c.sock.sendall(b"t%d FETCH 1 BODY.PEEK[]\r\n" % c.n)
    time.sleep(3)
    stalled = (peak.stop() - base) // 1024
    started = time.perf_counter()
    while not c.readline().startswith(b"t%d " % c.n):
        pass
    took = time.perf_counter() - started
    c.close()
    return stalled, took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=30)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="imap-bigfetch-"))
    proc, port = start_schoolsuite(base, idle=10)
    try:
        msg = big_message(args.mb)
        c = Client(port)
        c.login()
        c.multiappend("INBOX", [msg])
        c.close()
        print(f"message: {len(msg) / 1e6:.1f} MB")
        rows = []
        proc = restart(base, proc, port)
        took, peak = fetch_fast(port, proc.pid, "BODY.PEEK[]")
        rows.append(("FETCH BODY.PEEK[], fast reader", f"{took * 1000:.0f} ms", f"peak +{peak} MiB"))
        proc = restart(base, proc, port)
        stalled, took = fetch_stalled(port, proc.pid)
        rows.append(("FETCH BODY.PEEK[], reader stalled 3 s", f"then {took * 1000:.0f} ms", f"+{stalled} MiB"))
        proc = restart(base, proc, port)
        took, peak = fetch_fast(port, proc.pid, "BINARY.PEEK[2]")
        rows.append(("FETCH BINARY.PEEK[2] (decoded), fast reader", f"{took * 1000:.0f} ms", f"peak +{peak} MiB"))
        for row in rows:
            print(f"{row[0]:46s} {row[1]:>14s} {row[2]:>16s}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
