#!/usr/bin/env python3
"""schoolsuite IMAP against Debian's Dovecot on loopback: same mailbox, same workloads, one run.

Installs ``dovecot-imapd`` with apt if it is missing, starts a private Dovecot
(its own config, Maildir and ports under a temporary directory; plaintext on
127.0.0.1 only) and a private ``schoolsuite serve`` (its own instance; the
IMAP listener without TLS, as Dovecot here), loads the same messages into
both INBOXes, then measures on both:

1. first sync as Thunderbird does it: ``UID FETCH 1:* (FLAGS)`` then
   ``UID FETCH`` of size, flags and the header fields it shows, in chunks;
2. ``UID SEARCH BODY`` of a word in about 1 % of the bodies;
3. flag changes: single-message ``UID STORE`` commands, one after the other;
4. many concurrent IDLE connections: resident memory per connection (RSS
   of our one process; Pss and RSS summed over Dovecot's processes) and the
   time until every IDLE connection has seen an APPEND.

Prints each figure for both servers and the ratio (schoolsuite / Dovecot).

    python benchmarks/imap_vs_dovecot.py [--messages 10000] [--idle 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ports import free_port  # benchmarks/ports.py

USER = "bench@school.example"
PASSWORD = "benchmark password 42"
HEADER_FIELDS = ("From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups "
                 "In-Reply-To Content-Type Reply-To")
WORDS = ("school lesson teacher parent homework class trip exam grade holiday meeting schedule project "
         "science history music sport library report timetable canteen").split()
NEEDLE = "xylophone"


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not start")


# -- a small blocking IMAP client ------------------------------------------------


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), 60)
        self.buf = b""
        self.n = 0
        self.readline()

    def readline(self) -> bytes:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def readexact(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed the connection")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def command(self, text: str, literals: list[bytes] | None = None) -> tuple[bytes, int]:
        """Run a command; returns (tagged line, number of untagged responses)."""
        self.n += 1
        tag = b"t%d" % self.n
        payload = tag + b" " + text.encode()
        self.sock.sendall(payload + b"\r\n")
        untagged = 0
        while True:
            line = self.readline()
            m = re.search(rb"\{(\d+)\}$", line)
            while m:  # skip literals inside the response
                self.readexact(int(m.group(1)))
                line = self.readline()
                m = re.search(rb"\{(\d+)\}$", line)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text[:60]!r}: {line[:200]!r}")
                return line, untagged
            if line.startswith(b"*"):
                untagged += 1

    def multiappend(self, mailbox: str, messages: list[bytes]) -> None:
        self.n += 1
        tag = b"t%d" % self.n
        parts = [tag + b" APPEND " + mailbox.encode()]
        for m in messages:
            parts.append(b" {%d+}\r\n" % len(m) + m)
        self.sock.sendall(b"".join(parts) + b"\r\n")
        while True:
            line = self.readline()
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(line)
                return

    def login(self) -> None:
        self.command(f'LOGIN {USER} "{PASSWORD}"')

    def close(self) -> None:
        try:
            self.command("LOGOUT")
        except (ConnectionError, RuntimeError, OSError):
            pass
        self.sock.close()


# -- the mailbox content ---------------------------------------------------------------


def make_messages(count: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(150, 600))]
        if i % 100 == 37:
            words.insert(rng.randrange(len(words)), NEEDLE)
        body = "\r\n".join(" ".join(words[j:j + 12]) for j in range(0, len(words), 12))
        day = 1 + i % 28
        refs = f"References: <m{i - 1}@school.example>\r\n" if i % 3 else ""
        out.append((f"From: Teacher {i % 50} <t{i % 50}@school.example>\r\nTo: {USER}\r\n"
                    f"Subject: {rng.choice(WORDS)} {rng.choice(WORDS)} #{i}\r\n"
                    f"Date: {['Mon','Tue','Wed','Thu','Fri','Sat','Sun'][i % 7]}, {day:02d} Oct 2026 10:{i % 60:02d}:00 +0000\r\n"
                    f"Message-ID: <m{i}@school.example>\r\n{refs}MIME-Version: 1.0\r\n"
                    f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode())
    return out


def load(port: int, messages: list[bytes], batch: int = 200) -> tuple[float, object]:
    c = Client(port)
    c.login()
    start = time.perf_counter()
    for i in range(0, len(messages), batch):
        c.multiappend("INBOX", messages[i:i + batch])
    took = time.perf_counter() - start
    line, n = c.command("STATUS INBOX (MESSAGES)")
    c.close()
    return took, n


# -- workloads ---------------------------------------------------------------------------


def first_sync(port: int, chunk: int = 500) -> float:
    c = Client(port)
    c.login()
    start = time.perf_counter()
    c.command("SELECT INBOX")
    _, n = c.command("UID FETCH 1:* (FLAGS)")
    uids = list(range(1, n + 1))
    fetched = 0
    for i in range(0, len(uids), chunk):
        lo, hi = uids[i], uids[min(i + chunk, len(uids)) - 1]
        _, got = c.command(f"UID FETCH {lo}:{hi} (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})])")
        fetched += got
    took = time.perf_counter() - start
    c.close()
    return took, fetched


def body_search(port: int, runs: int = 3) -> float:
    c = Client(port)
    c.login()
    c.command("SELECT INBOX")
    times = []
    found = 0
    for _ in range(runs):
        start = time.perf_counter()
        c.n += 1
        tag = b"t%d" % c.n
        c.sock.sendall(tag + f" UID SEARCH BODY {NEEDLE}\r\n".encode())
        while True:
            line = c.readline()
            if line.startswith(b"* SEARCH"):
                found = len(line.split()) - 2
            if line.startswith(tag):
                break
        times.append(time.perf_counter() - start)
    c.close()
    return statistics.median(times), found


def flag_changes(ports: tuple[int, int], count: int, total: int, block: int = 50) -> tuple[list[float], list[int]]:
    """The same STOREs against both servers, interleaved in blocks so that both meet the same
    moments of a shared machine's noise; returns each server's total time and FLAGGED count."""
    clients = [Client(p) for p in ports]
    for c in clients:
        c.login()
        c.command("SELECT INBOX")
    rng = random.Random(3)
    uids = [rng.randint(1, total) for _ in range(count)]
    took = [0.0, 0.0]
    for start in range(0, count, block):
        for i, c in enumerate(clients):
            t = time.perf_counter()
            for uid in uids[start:start + block]:
                c.command(f"UID STORE {uid} +FLAGS.SILENT (\\Flagged)")
            took[i] += time.perf_counter() - t
    flagged = [c.command("UID SEARCH FLAGGED")[1] for c in clients]
    for c in clients:
        c.close()
    return took, flagged


async def _idle_one(port: int, ready: asyncio.Event, woke: list[float], opened: list[int],
                    setup: asyncio.Semaphore) -> None:
    # At most a few connections in setup at once: a server that speaks first must have
    # accepted a connection before the client waits for its greeting (listen backlog).
    async with setup:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        writer.write(f'a LOGIN {USER} "{PASSWORD}"\r\nb SELECT INBOX\r\n'.encode())
        while not (await reader.readline()).startswith(b"b OK"):
            pass
        writer.write(b"c IDLE\r\n")
        while not (await reader.readline()).startswith(b"+"):
            pass
    opened.append(1)
    await ready.wait()
    while True:
        line = await reader.readline()
        if not line or line.endswith(b"EXISTS\r\n"):
            woke.append(time.perf_counter())
            break
    writer.write(b"DONE\r\nd LOGOUT\r\n")
    try:
        await writer.drain()
        await asyncio.wait_for(reader.read(), 10)
    except (asyncio.TimeoutError, ConnectionError):
        pass
    writer.close()


async def _idle_all(port: int, n: int, measure, deliver) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    ready = asyncio.Event()
    woke: list[float] = []
    opened: list[int] = []
    setup = asyncio.Semaphore(20)
    tasks = [asyncio.create_task(_idle_one(port, ready, woke, opened, setup)) for _ in range(n)]
    while len(opened) < n:
        await asyncio.sleep(0.1)
        if any(t.done() and t.exception() for t in tasks):
            raise next(t.exception() for t in tasks if t.done() and t.exception())
    await asyncio.sleep(1.0)
    memory = measure()
    ready.set()
    start = time.perf_counter()
    await asyncio.get_running_loop().run_in_executor(None, deliver)
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return memory, max(woke) - start


def idle_connections(port: int, n: int, measure) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    def deliver() -> None:
        c = Client(port)
        c.login()
        c.multiappend("INBOX", [b"Subject: wake up\r\n\r\nhello\r\n"])
        c.close()

    return asyncio.run(_idle_all(port, n, measure, deliver))


# -- memory ------------------------------------------------------------------------------


def _proc_kib(pid: int, field: str) -> int:
    try:
        if field == "Pss":
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        else:
            text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(rf"^{'VmRSS' if field == 'Rss' else field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def _descendants(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            child = int(entry.name)
            out.append(child)
            out.extend(_descendants(child))
    return out


# -- servers ----------------------------------------------------------------------------------


def start_dovecot(base: Path, fsync: str = "optimized") -> tuple[subprocess.Popen[bytes], int]:
    if shutil.which("dovecot") is None or not Path("/usr/lib/dovecot/imap").exists():
        print("installing dovecot-imapd ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "dovecot-imapd"], check=True, capture_output=True)
    port = free_port()
    for d in ("run", "state", "mail"):
        (base / d).mkdir(parents=True, mode=0o755)
    base.chmod(0o755)
    shutil.chown(base / "mail", "nobody", "nogroup")
    (base / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    conf = base / "dovecot.conf"
    conf.write_text(f"""protocols = imap
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{base}/mail/%u
mail_fsync = {fsync}
first_valid_uid = 1
default_process_limit = 1500
default_client_limit = 3000
passdb {{
  driver = passwd-file
  args = {base}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={base}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = 1500
}}
protocol imap {{
  mail_max_userip_connections = 3000
}}
""")
    proc = subprocess.Popen(["dovecot", "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_port(port, proc, "dovecot")
    return proc, port


def start_schoolsuite(base: Path, idle: int) -> tuple[subprocess.Popen[bytes], int]:
    inst = base / "inst"
    run = [sys.executable, "-m", "schoolsuite"]
    subprocess.run([*run, "init", str(inst), "--domain", "school.example", "--hostname", "localhost"], check=True,
                   capture_output=True)
    config = inst / "schoolsuite.toml"
    text = config.read_text()
    port = free_port()
    ports = {name: free_port() for name in ("imaps", "submission", "submissions", "mx", "https", "metrics")}

    def section(name: str, body: str) -> None:
        nonlocal text
        head = f"[listeners.{name}]\n"
        start = text.index(head) + len(head)
        end = text.find("\n[", start)
        text = text[:start] + body + text[end:]

    section("imap", f'endpoint = "tcp:{port}:interface=127.0.0.1"\ntls = "none"\nenabled = true\n')
    for name, p in ports.items():
        tls = {"imaps": "implicit", "submissions": "implicit", "https": "implicit", "metrics": "none"}.get(name,
                                                                                                         "starttls")
        section(name, f'endpoint = "tcp:{p}:interface=127.0.0.1"\ntls = "{tls}"\n'
                      f'enabled = {"true" if name in ("https", "metrics", "imaps") else "false"}\n')
    text = re.sub(r"^max_connections_per_client = \d+$", f"max_connections_per_client = {idle + 100}", text,
                  flags=re.M)
    text = re.sub(r"^max_connections_per_account = \d+$", f"max_connections_per_account = {idle + 100}", text,
                  flags=re.M)
    config.write_text(text)
    subprocess.run([*run, "user", "add", USER, "--password-stdin", "-c", str(config)], input=PASSWORD.encode(),
                   check=True, capture_output=True)
    proc = subprocess.Popen([*run, "serve", "-c", str(config)], stdout=open(base / "serve.log", "wb"),
                            stderr=subprocess.STDOUT)
    wait_port(port, proc, "schoolsuite")
    return proc, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--dovecot-fsync", choices=("optimized", "always", "never"), default="optimized",
                        help="Dovecot's mail_fsync (Debian's default: optimized, which like schoolsuite syncs "
                             "new mail before answering but not flag changes; 'always' syncs those too)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.idle + 1000)), hard))
    base = Path(tempfile.mkdtemp(prefix="imapbench-"))
    base.chmod(0o755)  # Dovecot's unprivileged processes must reach their files
    procs: list[subprocess.Popen[bytes]] = []
    try:
        dove, dport = start_dovecot(base / "dovecot", args.dovecot_fsync)
        procs.append(dove)
        ours, oport = start_schoolsuite(base / "schoolsuite", args.idle)
        procs.append(ours)
        messages = make_messages(args.messages)
        size = sum(map(len, messages))
        print(f"mailbox: {len(messages)} messages, {size / 1e6:.1f} MB, same content in both; "
              f"dovecot mail_fsync={args.dovecot_fsync}", flush=True)
        results: list[tuple[str, float, float, str]] = []

        def both(name: str, unit: str, fn, *a) -> None:  # type: ignore[no-untyped-def]
            ours_v, ours_check = fn(oport, *a)
            dove_v, dove_check = fn(dport, *a)
            results.append((name, ours_v, dove_v, unit))
            same = "" if ours_check == dove_check else f"  (RESULTS DIFFER: {ours_check} vs {dove_check})"
            print(f"{name:44s} schoolsuite {ours_v:9.3f} {unit:5s} dovecot {dove_v:9.3f} {unit:5s} "
                  f"ratio {ours_v / dove_v if dove_v else float('nan'):6.2f}{same}", flush=True)

        both("load (MULTIAPPEND, 200 per command)", "s", lambda p: load(p, messages))
        both("first sync (flags, then headers in chunks)", "s", first_sync)
        both("UID SEARCH BODY (median of 3)", "s", body_search)
        took, flagged = flag_changes((oport, dport), args.stores, len(messages))
        results.append((f"{args.stores} single-message UID STORE", took[0], took[1], "s"))
        same = "" if flagged[0] == flagged[1] else f"  (RESULTS DIFFER: {flagged[0]} vs {flagged[1]})"
        print(f"{f'{args.stores} single-message UID STORE (interleaved)':44s} schoolsuite {took[0]:9.3f} s     "
              f"dovecot {took[1]:9.3f} s     ratio {took[0] / took[1]:6.2f}{same}", flush=True)

        # A fresh schoolsuite process for the IDLE figure: heap left over from the
        # workloads above would otherwise absorb the connections' growth.
        ours.send_signal(signal.SIGTERM)
        ours.wait(30)
        ours = subprocess.Popen(ours.args, stdout=open(base / "schoolsuite" / "serve2.log", "wb"),
                                stderr=subprocess.STDOUT)
        procs.append(ours)
        wait_port(oport, ours, "schoolsuite")
        warm = Client(oport)
        warm.login()
        warm.command("SELECT INBOX")
        warm.close()
        time.sleep(0.5)

        def ours_mem() -> float:
            return _proc_kib(ours.pid, "Rss")

        def dove_mem() -> float:
            pids = _descendants(dove.pid)
            return sum(_proc_kib(p, "Pss") for p in pids)

        def dove_rss() -> float:
            return sum(_proc_kib(p, "Rss") for p in _descendants(dove.pid))

        before_ours, before_dove, before_dove_rss = ours_mem(), dove_mem(), dove_rss()
        rss_ours, wake_ours = idle_connections(oport, args.idle, ours_mem)
        rss_dove_rss = [0.0]

        def dove_measure() -> float:
            rss_dove_rss[0] = dove_rss()
            return dove_mem()

        pss_dove, wake_dove = idle_connections(dport, args.idle, dove_measure)
        per_ours = (rss_ours - before_ours) / args.idle
        per_dove = (pss_dove - before_dove) / args.idle
        per_dove_rss = (rss_dove_rss[0] - before_dove_rss) / args.idle
        print(f"{'memory per IDLE connection (' + str(args.idle) + ')':44s} schoolsuite {per_ours:9.1f} KiB   "
              f"dovecot {per_dove:9.1f} KiB (Pss; Rss {per_dove_rss:.1f}) ratio {per_ours / per_dove:6.2f}")
        print(f"{'all IDLE connections told of an APPEND':44s} schoolsuite {wake_ours:9.3f} s     "
              f"dovecot {wake_dove:9.3f} s     ratio {wake_ours / wake_dove:6.2f}")
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
