#!/usr/bin/env python3
"""schoolsuite's /files/ against stock WsgiDAV, same machine, same client, one run.

    python benchmarks/webdav_vs_wsgidav.py [--size-mib 1024] [--files 1000] [--repeat 2] [--stock-plain]
                                           [--stock-fsync]

Stock WsgiDAV 4.4 runs as its own server (``wsgidav`` CLI, cheroot) with the
filesystem provider over a temporary directory, on loopback, over TLS with the
same self-signed certificate as schoolsuite (``--stock-plain``: plain HTTP, as
it ships). schoolsuite runs ``schoolsuite serve`` on a fresh instance and every
byte it stores is sealed. Rows:

- PUT and GET of one SIZE MiB file (MB/s), peak resident anonymous memory
  (RssAnon: not the page cache, not LMDB's file-backed map) of the server
  process during the big PUT (MB, sampled every 20 ms);
- PUT of N files of 10 KB each over one keep-alive connection (files/s);
- PROPFIND Depth 1 over those N files (ms, best of 3).

Both servers run at once and every row alternates between them (A, B, A,
B, ...) for ``--repeat`` rounds; the best round counts, so that a busy moment
on a shared machine hurts neither side alone. Before each row: one warm-up request (schoolsuite checks the password once)
and ``sync`` so that no row pays for the previous row's writeback. Note that
schoolsuite commits with fsync before it answers (a 201 means durable); stock
WsgiDAV leaves the bytes in the page cache (``--stock-fsync``: it fsyncs each
PUT's file and directory before answering, benchmarks/wsgidav_fsync.py).

The ratio column is schoolsuite / stock for rates and stock / schoolsuite for
times, so above 1 means schoolsuite is faster. Target: >= 0.8 on every row and
under 200 MB resident during the big PUT.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ports import free_port  # benchmarks/ports.py

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

USER = "bench@school.example"
PASSWORD = "Bench-pw-4r7t9z2x"
BLOCK = 1 << 20




def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not start")


class Target:
    """A server under test: where it listens, how to log in, which process to watch."""

    def __init__(self, name: str, port: int, base: str, tls: ssl.SSLContext | None, auth: str | None,
                 proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
        self.name, self.port, self.base, self.tls, self.auth, self.proc = name, port, base, tls, auth, proc

    def connection(self) -> http.client.HTTPConnection:
        if self.tls is not None:
            return http.client.HTTPSConnection("localhost", self.port, context=self.tls, timeout=600)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)

    def headers(self, **extra: str) -> dict[str, str]:
        h = dict(extra)
        if self.auth:
            h["Authorization"] = self.auth
        return h


def rss_mb(pid: int) -> float:
    """Resident anonymous memory (file pages of LMDB's map or the page cache are not the process's own)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def big_put(t: Target, size: int) -> tuple[float, float]:
    """(MB/s, peak RSS MB) of one PUT of ``size`` bytes."""
    block = os.urandom(BLOCK)
    peak = [rss_mb(t.proc.pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(t.proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    conn = t.connection()
    started = time.perf_counter()
    conn.putrequest("PUT", t.base + "big.bin", skip_accept_encoding=True)
    for k, v in t.headers(**{"Content-Length": str(size), "Content-Type": "application/octet-stream"}).items():
        conn.putheader(k, v)
    conn.endheaders()
    sent = 0
    while sent < size:
        piece = block[: min(BLOCK, size - sent)]
        conn.send(piece)
        sent += len(piece)
    resp = conn.getresponse()
    resp.read()
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    conn.close()
    if resp.status not in (200, 201, 204):
        raise SystemExit(f"{t.name}: big PUT answered {resp.status}")
    return size / elapsed / 1e6, peak[0]


def big_get(t: Target, size: int) -> float:
    conn = t.connection()
    started = time.perf_counter()
    conn.request("GET", t.base + "big.bin", headers=t.headers())
    resp = conn.getresponse()
    got = 0
    while True:
        piece = resp.read(BLOCK)
        if not piece:
            break
        got += len(piece)
    elapsed = time.perf_counter() - started
    conn.close()
    if resp.status != 200 or got != size:
        raise SystemExit(f"{t.name}: big GET answered {resp.status} with {got} bytes")
    return size / elapsed / 1e6


def small_puts(t: Target, count: int, folder: str) -> float:
    conn = t.connection()
    conn.request("MKCOL", t.base + folder + "/", headers=t.headers())
    conn.getresponse().read()
    body = os.urandom(10_000)
    started = time.perf_counter()
    for i in range(count):
        conn.request("PUT", f"{t.base}{folder}/f{i:05d}.txt", body=body, headers=t.headers())
        resp = conn.getresponse()
        resp.read()
        if resp.status not in (200, 201, 204):
            raise SystemExit(f"{t.name}: small PUT answered {resp.status}")
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


def propfind(t: Target, count: int, folder: str) -> float:
    best = float("inf")
    conn = t.connection()
    for _ in range(3):
        started = time.perf_counter()
        conn.request("PROPFIND", t.base + folder + "/", headers=t.headers(Depth="1"))
        resp = conn.getresponse()
        body = resp.read()
        best = min(best, time.perf_counter() - started)
        if resp.status != 207 or body.count(b"<D:response") < count + 1:
            raise SystemExit(f"{t.name}: PROPFIND answered {resp.status} with {body.count(b'<D:response')} responses")
    conn.close()
    return best * 1000


def start_stock(work: Path, cert: Path, key: Path, plain: bool, fsync: bool = False) -> Target:
    root = work / "stock-root"
    root.mkdir()
    port = free_port()
    conf = work / "wsgidav.yaml"
    lines = ["host: 127.0.0.1", f"port: {port}", "verbose: 1", "provider_mapping:", f"  '/': '{root}'",
             "http_authenticator:", "  domain_controller: null", "simple_dc:", "  user_mapping:", "    '*': true",
             "property_manager: true", "lock_storage: true", "logging:", "  enable: false",
             "dir_browser:", "  enable: false"]
    if not plain:
        lines += [f"ssl_certificate: '{cert}'", f"ssl_private_key: '{key}'", "ssl_adapter: builtin"]
    conf.write_text("\n".join(lines) + "\n")
    if fsync:  # the same server, with PUTs made durable before the answer (benchmarks/wsgidav_fsync.py)
        command = [sys.executable, str(Path(__file__).with_name("wsgidav_fsync.py"))]
    else:
        command = [str(Path(sys.executable).parent / "wsgidav")]
    proc = subprocess.Popen([*command, "--config", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port)
    tls = None if plain else ssl.create_default_context(cafile=str(cert))
    return Target("stock WsgiDAV", port, "/", tls, None, proc)


def start_ours(work: Path) -> tuple[Target, Path, Path]:
    from schoolsuite.instance import init_instance

    config = init_instance(work / "inst", "school.example", "localhost")
    text = config.read_text()
    port = free_port()
    text = text.replace("tcp:8443:", f"tcp:{port}:")
    for name, default in (("imap", 1143), ("imaps", 1993), ("submission", 1587), ("submissions", 1465),
                          ("mx", 1025), ("metrics", 9464)):
        text = text.replace(f"tcp:{default}:", f"tcp:{free_port()}:")
    config.write_text(text)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, "-m", "schoolsuite", "-c", str(config), "user", "add", USER,
                    "--password-stdin"], input=PASSWORD + "\n", text=True, check=True, env=env,
                   capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "schoolsuite", "serve", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_port(port)
    cert, key = work / "inst" / "tls" / "cert.pem", work / "inst" / "tls" / "key.pem"
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    tls = ssl.create_default_context(cafile=str(cert))
    return Target("schoolsuite", port, f"/files/{USER}/", tls, auth, proc), cert, key


def settle() -> None:
    """Flush the page cache's dirty pages, so that no row pays for the previous one's writeback."""
    os.sync()
    time.sleep(1.0)


def warm_up(t: Target) -> None:
    """One request first (schoolsuite checks the password once; stock has no login)."""
    conn = t.connection()
    conn.request("PROPFIND", t.base, headers=t.headers(Depth="0"))
    conn.getresponse().read()
    conn.close()


def run_rows(targets: list[Target], size: int, files: int, repeat: int) -> list[dict[str, float]]:
    """Every row for every target, interleaved (A, B, A, B, ...) and repeated; best of the repeats.

    The machine may be shared: interleaving gives both servers the same
    background, and the best of ``repeat`` runs drops a bad moment.
    """
    results: list[dict[str, float]] = [{"put": 0.0, "get": 0.0, "rss": 0.0, "small": 0.0,
                                        "propfind": float("inf")} for _ in targets]
    for t in targets:
        warm_up(t)
    for round_ in range(repeat):
        for i, t in enumerate(targets):
            settle()
            put_rate, peak = big_put(t, size)
            results[i]["put"] = max(results[i]["put"], put_rate)
            results[i]["rss"] = max(results[i]["rss"], peak)
        for i, t in enumerate(targets):
            settle()
            results[i]["get"] = max(results[i]["get"], big_get(t, size))
        for i, t in enumerate(targets):
            settle()
            results[i]["small"] = max(results[i]["small"], small_puts(t, files, f"many{round_}"))
        for i, t in enumerate(targets):
            results[i]["propfind"] = min(results[i]["propfind"], propfind(t, files, f"many{round_}"))
    return results


def stop(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--stock-plain", action="store_true", help="stock WsgiDAV over plain HTTP (as shipped)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds, interleaved; the best round counts")
    parser.add_argument("--stock-fsync", action="store_true",
                        help="stock WsgiDAV fsyncs each PUT before answering, as schoolsuite does "
                             "(benchmarks/wsgidav_fsync.py): the like-for-like durability comparison")
    args = parser.parse_args()
    size = args.size_mib << 20
    work = Path(tempfile.mkdtemp(prefix="webdav-bench-"))
    procs = []
    try:
        ours, cert, key = start_ours(work)
        procs.append(ours.proc)
        stock = start_stock(work, cert, key, args.stock_plain, args.stock_fsync)
        procs.append(stock.proc)
        mine, theirs = run_rows([ours, stock], size, args.files, args.repeat)
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)

    mode = ("plain HTTP" if args.stock_plain else "TLS") + (", fsync before answering" if args.stock_fsync else "")
    print(f"\nschoolsuite /files/ (TLS, sealed) vs stock WsgiDAV 4.4 (cheroot, filesystem, {mode}); "
          f"{args.size_mib} MiB file, {args.files} x 10 KB; best of {args.repeat} interleaved rounds")
    print(f"{'row':<34}{'schoolsuite':>14}{'stock':>14}{'ratio':>9}")
    rows = [
        (f"PUT {args.size_mib} MiB (MB/s)", "put", True),
        (f"GET {args.size_mib} MiB (MB/s)", "get", True),
        (f"PUT {args.files} x 10 KB (files/s)", "small", True),
        (f"PROPFIND Depth 1, {args.files} (ms)", "propfind", False),
        ("peak RssAnon during big PUT (MB)", "rss", False),
    ]
    for label, key_, higher_better in rows:
        a, b = mine[key_], theirs[key_]
        ratio = (a / b) if higher_better else (b / a if a else 0.0)
        print(f"{label:<34}{a:>14.1f}{b:>14.1f}{ratio:>8.2f}x")
    print("\nratio > 1: schoolsuite better. Targets: >= 0.8x on every rate/time row; RSS < 200 MB.")


if __name__ == "__main__":
    main()
