#!/usr/bin/env python3
"""Acceptance rate of schoolsuite's MX against Debian's Postfix, same load, same machine, one run.

    python benchmarks/smtp_vs_postfix.py [--small N] [--large N] [--concurrency C] [--rounds R] [--quick]

Postfix (installed with apt-get if missing) runs as a private instance from a
temporary config directory: it listens on 127.0.0.1 only, has no relayhost,
holds every accepted message in its own spool (``check_recipient_access
static:HOLD``) and every transport is ``discard:`` — nothing can leave the
machine. schoolsuite runs ``schoolsuite serve`` on a fresh instance; its MX
checks SPF/DKIM/DMARC against a loopback DNS server (tests/smtp/dns_zone_server.py)
and delivers into a sealed INBOX. The same parallel load (C connections, each
sending messages back to back) of 10 KB and 1 MB messages goes to both; the
script prints messages per second for each and the ratio, then checks that
every accepted message is durable: in Postfix's hold queue, and in the
recipient's INBOX after schoolsuite was stopped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ports import free_port  # benchmarks/ports.py

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

RECIPIENT = "bob@school.example"
SENDER = "bench@bench.example"
PASSWORD = "Bench-pw-4r7t9z2x"


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(100)
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


# -- Postfix ------------------------------------------------------------------


def ensure_postfix() -> None:
    if shutil.which("postfix"):
        return
    print("installing Debian's postfix (no configuration; it is configured privately below)...", flush=True)
    subprocess.run(["debconf-set-selections"], input="postfix postfix/main_mailer_type select No configuration\n",
                   text=True, check=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "postfix"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


class Postfix:
    """A private Postfix instance that accepts into its hold queue and can never deliver anywhere."""

    def __init__(self, base: Path, port: int) -> None:
        self.dir = base / "postfix"
        self.conf = self.dir / "conf"
        self.spool = self.dir / "spool"
        self.port = port
        self.conf.mkdir(parents=True)
        (self.dir / "data").mkdir()
        shutil.chown(self.dir / "data", "postfix", "postfix")
        os.chmod(base, 0o755)  # the postfix user must reach its spool below the temporary directory
        self.spool.mkdir()  # root-owned; postfix creates the queue subdirectories on start
        never = "discard:benchmark instance never delivers"  # held anyway; discard never leaves the machine
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.spool),
            "data_directory": str(self.dir / "data"),
            "maillog_file": str(self.dir / "maillog"),
            "maillog_file_prefixes": str(self.dir),
            "myhostname": "postfix-bench.localhost",
            "mydomain": "localhost",
            "mydestination": "",
            "relayhost": "",  # never relay
            "inet_interfaces": "127.0.0.1",  # loopback only
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": "check_recipient_access static:HOLD",  # keep every message
            "default_transport": never,
            "relay_transport": never,
            "local_transport": never,
            "virtual_transport": never,
            "smtp_dns_support_level": "disabled",
            "alias_maps": "",
            "alias_database": "",
            "message_size_limit": str(60 << 20),
            "default_process_limit": "200",
            "smtpd_client_connection_count_limit": "0",
        }
        (self.conf / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        lines = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            fields = line.split()
            if line.startswith(("#", " ", "\t")) or not fields:
                lines.append(line)
                continue
            if fields[:2] == ["smtp", "inet"]:
                fields[0] = f"127.0.0.1:{port}"
            if len(fields) >= 8:
                fields[4] = "n"  # no chroot: the private spool is not set up for one
            lines.append("  ".join(fields))
        (self.conf / "master.cf").write_text("\n".join(lines) + "\n")

    def postfix(self, *args: str) -> None:
        proc = subprocess.run(["postfix", "-c", str(self.conf), *args], capture_output=True, text=True)
        if proc.returncode:
            log = self.dir / "maillog"
            tail = log.read_text()[-2000:] if log.exists() else "(no maillog; postfix logs fatal errors to a tty)"
            raise SystemExit(f"postfix {' '.join(args)} failed: {proc.stderr.strip()} {tail}")

    def start(self) -> None:
        self.postfix("check")
        self.postfix("start")
        wait_port(self.port)

    def stop(self) -> None:
        try:
            self.postfix("stop")
        except SystemExit:
            pass

    def held(self) -> int:
        hold = self.spool / "hold"
        return sum(1 for p in hold.rglob("*") if p.is_file()) if hold.exists() else 0


# -- schoolsuite ------------------------------------------------------------------


class Schoolsuite:
    def __init__(self, base: Path) -> None:
        self.dir = base / "schoolsuite"
        self.ports = {name: free_port() for name in
                      ("imap", "imaps", "submission", "submissions", "mx", "https", "metrics")}
        self.dns_port = free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.dns: subprocess.Popen[str] | None = None

    def cli(self, *args: str, stdin: str | None = None) -> None:
        subprocess.run([sys.executable, "-m", "schoolsuite", *args], input=stdin, text=True, check=True,
                       capture_output=True)

    def setup(self) -> None:
        from schoolsuite.instance import init_instance

        config = init_instance(self.dir, "school.example", "localhost")
        text = config.read_text()
        for name, port in self.ports.items():
            head = f"[listeners.{name}]\n"
            start = text.index(head)
            end = text.find("\n[", start + len(head))
            section = text[start:end]
            old = [line for line in section.splitlines() if line.startswith("endpoint = ")][0]
            text = text[:start] + section.replace(old, f'endpoint = "tcp:{port}:interface=127.0.0.1"') + text[end:]
        text = text.replace('dns_servers = ""', f'dns_servers = "127.0.0.1:{self.dns_port}"')
        text = text.replace("max_connections_per_client = 20", "max_connections_per_client = 200")
        config.write_text(text)
        self.config = config
        self.cli("-c", str(config), "user", "add", RECIPIENT, "--password-stdin", stdin=PASSWORD + "\n")
        zones = self.dir / "zones.json"
        zones.write_text('{"zones": {"bench.example": [["bench.example", "TXT", "v=spf1 ip4:127.0.0.1 -all"],'
                         ' ["_dmarc.bench.example", "TXT", "v=DMARC1; p=none"]]}}')
        self.dns = subprocess.Popen([sys.executable, str(ROOT / "tests" / "smtp" / "dns_zone_server.py"), str(zones),
                                     str(self.dns_port)], stdout=subprocess.PIPE, text=True)
        assert self.dns.stdout is not None and self.dns.stdout.readline().strip() == "ready"

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "schoolsuite", "serve", "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_port(self.ports["mx"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        if self.dns is not None and self.dns.poll() is None:
            self.dns.terminate()
            self.dns.wait(5)

    def inbox_count(self) -> int:
        from schoolsuite.storage import Store, load_master_key
        from schoolsuite.storage import accounts as directory
        from schoolsuite.storage import mail

        store = Store.open(self.dir / "data", load_master_key(self.dir / "secrets" / "master.key"))
        try:
            with store.read() as txn:
                user = txn.user(directory.find_account_id(txn, RECIPIENT))
                return len(mail.load_index(user, mail.require_mailbox(user, "INBOX").id).uids)
        finally:
            store.close()


# -- load ---------------------------------------------------------------------------


def make_message(size: int, n: int) -> bytes:
    head = (f"From: Bench <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: benchmark {n}\r\n"
            f"Message-ID: <bench-{n}-{time.time_ns()}@bench.example>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog while the class takes notes. 0123456789\r\n"
    body = line * (max(0, size - len(head)) // len(line) + 1)
    return head + body[: max(0, size - len(head))]


def load(port: int, count: int, size: int, concurrency: int, timeout: float) -> tuple[int, int, float]:
    """Send ``count`` messages over ``concurrency`` connections; (accepted, refused, seconds)."""
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "bad": 0}
    template = make_message(size, 0)
    deadline = time.monotonic() + timeout

    def worker() -> None:
        try:
            client = smtplib.SMTP("127.0.0.1", port, local_hostname="bench.example", timeout=120)
            client.ehlo("bench.example")
        except (OSError, smtplib.SMTPException):
            with lock:
                state["bad"] += 1
            return
        with client:
            while time.monotonic() < deadline:
                with lock:
                    if state["next"] >= count:
                        return
                    state["next"] += 1
                try:
                    refused = client.sendmail(SENDER, [RECIPIENT], template)
                    result = "ok" if not refused else "bad"
                except (OSError, smtplib.SMTPException):
                    result = "bad"
                with lock:
                    state[result] += 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return state["ok"], state["bad"], time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=400, help="10 KB messages per server (default 400)")
    parser.add_argument("--large", type=int, default=40, help="1 MB messages per server (default 40)")
    parser.add_argument("--concurrency", type=int, default=8, help="parallel connections (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per size; medians reported")
    parser.add_argument("--quick", action="store_true", help="100 small and 10 large messages, one round")
    parser.add_argument("--timeout", type=float, default=300, help="time bound per run in seconds")
    args = parser.parse_args()
    if args.quick:
        args.small, args.large, args.rounds = 100, 10, 1
    if os.geteuid() != 0:
        print("run as root: Postfix is installed and started as a private instance", file=sys.stderr)
        return 2
    ensure_postfix()
    base = Path(tempfile.mkdtemp(prefix="smtp-bench-"))
    postfix = Postfix(base, free_port())
    suite = Schoolsuite(base)
    results = []
    try:
        postfix.start()
        suite.setup()
        suite.start()
        # warm both up (connections, caches, thread pools) outside the measurement
        load(postfix.port, 8, 10_000, 2, 60)
        load(suite.ports["mx"], 8, 10_000, 2, 60)
        warm_pf, warm_ss = postfix.held(), 8
        for label, size, count in (("10 KB", 10_000, args.small), ("1 MB", 1_000_000, args.large)):
            rounds = []
            for _ in range(args.rounds):  # alternate the two servers so that load from others hits both
                rounds.append((load(postfix.port, count, size, args.concurrency, args.timeout),
                               load(suite.ports["mx"], count, size, args.concurrency, args.timeout)))
            results.append((label, count, rounds))
        held = postfix.held() - warm_pf
        suite.stop()
        stored = suite.inbox_count() - warm_ss
    finally:
        suite.stop()
        postfix.stop()
    print(f"\nSMTP acceptance, {args.concurrency} parallel connections, loopback, {os.cpu_count()} CPUs, "
          f"median of {args.rounds} alternating rounds")
    print(f"{'size':>6} {'msgs':>5} | {'postfix msg/s':>13} {'refused':>7} | {'schoolsuite msg/s':>17} "
          f"{'refused':>7} | {'ratio':>5} | rounds (postfix/schoolsuite msg/s)")
    accepted_pf = accepted_ss = 0
    for label, count, rounds in results:
        pf_rates = [ok / secs for (ok, _, secs), _ in rounds]
        ss_rates = [ok / secs for _, (ok, _, secs) in rounds]
        accepted_pf += sum(ok for (ok, _, _), _ in rounds)
        accepted_ss += sum(ok for _, (ok, _, _) in rounds)
        pf_bad = sum(bad for (_, bad, _), _ in rounds)
        ss_bad = sum(bad for _, (_, bad, _) in rounds)
        pf_rate, ss_rate = statistics.median(pf_rates), statistics.median(ss_rates)
        each = " ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(pf_rates, ss_rates))
        print(f"{label:>6} {count:>5} | {pf_rate:>13.1f} {pf_bad:>7} | {ss_rate:>17.1f} {ss_bad:>7} | "
              f"{ss_rate / pf_rate:>5.2f} | {each}")
    print(f"durable: postfix hold queue {held}/{accepted_pf} accepted; "
          f"schoolsuite INBOX {stored}/{accepted_ss} accepted (counted after stopping the server)")
    shutil.rmtree(base, ignore_errors=True)
    return 0 if held >= accepted_pf and stored >= accepted_ss else 1


if __name__ == "__main__":
    sys.exit(main())
