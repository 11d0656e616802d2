"""Benchmark of provisioning through SCIM over HTTPS, against a real ``schoolsuite serve``.

    python benchmarks/provisioning.py [--accounts N] [--with-password M] [--clients C] [--dir PATH]

Makes a fresh instance, an admin token, starts the server, then:

1. creates N accounts without a password (the portal sets passwords later, or
   teachers use app passwords): no argon2 hash is computed;
2. creates M accounts with a password: argon2id (64 MiB, t=3, p=4) per account,
   on the reactor's thread pool;

each by C portal clients in parallel (one keep-alive HTTPS connection each),
and prints accounts per second, the projected time for 33,000 accounts (a
school year's start; target: under one hour on this machine) and the store
bytes per account (LMDB pages in use, and the compacted backup's size).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from schoolsuite.instance import init_instance

TARGET = 33_000
LISTENERS = ("imap", "imaps", "submission", "submissions", "mx", "https", "metrics")
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _set_endpoints(config: Path) -> dict[str, int]:
    text = config.read_text()
    ports = {}
    for name in LISTENERS:
        ports[name] = _free_port()
        head = f"[listeners.{name}]\n"
        start = text.index(head) + len(head)
        end = text.find("\n[", start)
        end = len(text) if end < 0 else end
        section = re.sub(r'^endpoint = .*$', f'endpoint = "tcp:{ports[name]}:interface=127.0.0.1"',
                         text[start:end], flags=re.M)
        text = text[:start] + section + text[end:]
    config.write_text(text)
    return ports


def _cli(config: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "schoolsuite", "-c", str(config), *args], capture_output=True,
                          text=True, check=True)
    return proc.stdout


def _used_bytes(metrics_port: int) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).read().decode()
    return int(float(re.search(r"^schoolsuite_store_map_used_bytes (\S+)$", text, re.M).group(1)))


def _create(inst_dir: Path, port: int, token: str, prefix: str, count: int, clients: int,
            password: bool) -> float:
    """Create ``count`` accounts with ``clients`` parallel connections; returns the seconds taken."""
    ctx = ssl.create_default_context(cafile=str(inst_dir / "tls" / "cert.pem"))
    errors: list[str] = []
    done: list[float] = []

    def worker(first: int) -> None:
        conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=120)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
        for i in range(first, count, clients):
            body = {"schemas": [USER], "userName": f"{prefix}{i:06d}@school.example",
                    "name": {"givenName": "Teacher", "familyName": f"No {i}"}, "externalId": f"hr-{prefix}{i}"}
            if password:
                body["password"] = f"initial password {i:06d}!"
            conn.request("POST", "/admin/scim/v2/Users", json.dumps(body), headers)
            reply = conn.getresponse()
            reply.read()
            if reply.status != 201:
                errors.append(f"{reply.status} for {i}")
                return
            done.append(time.monotonic())

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"creation failed: {errors[:3]}")
    if count >= 2000:  # does the rate hold as the store grows?
        done.sort()
        step = count // 5
        marks = [started] + [done[min(k * step, count) - 1] for k in range(1, 6)]
        rates = [step / (b - a) for a, b in zip(marks, marks[1:])]
        print(f"  {prefix}: accounts/s per fifth of the run: " + ", ".join(f"{r:.0f}" for r in rates))
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=3000, help="accounts without a password (default 3000)")
    parser.add_argument("--with-password", type=int, default=200, help="accounts with a password (default 200)")
    parser.add_argument("--clients", type=int, default=4, help="parallel portal connections (default 4)")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args()

    work = Path(args.dir or tempfile.mkdtemp(prefix="schoolsuite-bench-"))
    inst_dir = work / "inst"
    config = init_instance(inst_dir, "school.example", "localhost")
    ports = _set_endpoints(config)
    token = _cli(config, "admin-token", "add", "bench").strip()
    proc = subprocess.Popen([sys.executable, "-m", "schoolsuite", "serve", "-c", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("listening: metrics"):
                break
        # Drain the access log so that a full pipe never stalls the server.
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
        base = _used_bytes(ports["metrics"])
        print(f"machine: {os.cpu_count()} CPUs; {args.clients} portal clients over HTTPS (keep-alive)")
        rows = []
        if args.accounts:
            seconds = _create(inst_dir, ports["https"], token, "np", args.accounts, args.clients, False)
            used = _used_bytes(ports["metrics"])
            rows.append(("without password", args.accounts, seconds, (used - base) / args.accounts))
            base = used
        if args.with_password:
            seconds = _create(inst_dir, ports["https"], token, "pw", args.with_password, args.clients, True)
            used = _used_bytes(ports["metrics"])
            rows.append(("with password (argon2id)", args.with_password, seconds, (used - base) / args.with_password))
        backup = work / "backup"
        _cli(config, "backup", str(backup))
        total = args.accounts + args.with_password
        compact = (backup / "data.mdb").stat().st_size
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    print(f"{'accounts':<26}{'count':>7}{'seconds':>9}{'per s':>8}{'33,000 in':>12}{'LMDB B/acct':>13}")
    for label, count, seconds, per in rows:
        rate = count / seconds
        print(f"{label:<26}{count:>7}{seconds:>9.1f}{rate:>8.1f}{TARGET / rate / 60:>9.1f} min{per:>13.0f}")
    print(f"compacted backup: {compact} bytes for {total} accounts = {compact / total:.0f} bytes per account")
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
