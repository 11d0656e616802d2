"""CalDAV/CardDAV: schoolsuite against stock Radicale, same data, one run, figures printed.

    /tmp/venv/bin/python benchmarks/dav_vs_radicale.py [--events 5000] [--contacts 10000]
                                                        [--writers 4] [--max-load-seconds 1200]

Stock Radicale runs as its own server with its file storage (multifilesystem,
htpasswd, owner_only) over plain HTTP on loopback; schoolsuite runs as
``schoolsuite serve`` over HTTPS (TLS is only extra work for schoolsuite).
Both get the same events (10 % weekly recurring) and contacts. Rows:

- loading the events with N writers (events/s), and PUT latency by calendar size;
- initial and incremental sync-collection (after 10 changes);
- CTag PROPFIND (Depth 0) and Depth-1 PROPFIND of every ETag;
- a one-month calendar-query with expanded recurrences;
- calendar-multiget of 100 events;
- a 10,000-contact address book (one import PUT), its Depth-1 listing and a text query.

Every figure is a median of a few runs; the ratio is Radicale's time over
schoolsuite's (above 1: schoolsuite is faster). Everything listens on
127.0.0.1 only, and the load is bounded by count and by --max-load-seconds.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import random
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ports import free_port  # benchmarks/ports.py

USER = "bench@school.example"
PASSWORD = "Bench-mark-2026-passphrase"


@dataclass
class Target:
    name: str
    host: str
    port: int
    tls: ssl.SSLContext | None
    home: str  # "/dav/USER/" or "/USER/"
    local: threading.local = field(default_factory=threading.local)

    @property
    def calendar(self) -> str:
        return self.home + "calendar/"

    @property
    def contacts(self) -> str:
        return self.home + "contacts/"

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            if self.tls is not None:
                conn = http.client.HTTPSConnection(self.host, self.port, context=self.tls, timeout=600)
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
            self.local.conn = conn
        return conn

    def request(self, method: str, path: str, body: str | bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        hdrs = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
        hdrs.update(headers or {})
        data = body.encode() if isinstance(body, str) else body
        for attempt in range(2):
            conn = self._conn()
            try:
                conn.request(method, urllib.parse.quote(path), body=data, headers=hdrs)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


# -- data ---------------------------------------------------------------------------


def make_events(count: int, seed: int = 7) -> list[tuple[str, str]]:
    """(href, iCalendar) pairs: spread over 2026, every tenth weekly recurring."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        day = rng.randrange(0, 360)
        hour = rng.randrange(7, 17)
        start = time.gmtime(time.mktime((2026, 1, 1, hour, 0, 0, 0, 0, 0)) + day * 86400)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", start)
        end = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.mktime(start) + 3600))
        lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//schoolsuite bench//EN", "BEGIN:VEVENT",
                 f"UID:bench-{n}@school.example", "DTSTAMP:20260101T000000Z", f"DTSTART:{stamp}",
                 f"DTEND:{end}", f"SUMMARY:Unterricht {n} Klasse {rng.randrange(5, 13)}{'abc'[n % 3]}",
                 f"LOCATION:Raum {rng.randrange(100, 400)}", "DESCRIPTION:" + "Material mitbringen. " * 4]
        if n % 10 == 0:
            lines.append("RRULE:FREQ=WEEKLY;COUNT=30")
        lines += ["END:VEVENT", "END:VCALENDAR"]
        out.append((f"bench-{n}.ics", "\r\n".join(lines) + "\r\n"))
    return out


def make_contacts(count: int) -> str:
    cards = []
    for n in range(count):
        cards.append("\r\n".join([
            "BEGIN:VCARD", "VERSION:3.0", f"UID:contact-{n}", f"FN:Kontakt {n} Müller",
            f"N:Müller;Kontakt {n};;;", f"EMAIL:kontakt{n}@example.org", f"TEL:+49 30 {n:07d}", "END:VCARD"]))
    return "\r\n".join(cards) + "\r\n"


# -- servers ------------------------------------------------------------------------


def start_schoolsuite(tmp: Path) -> tuple[subprocess.Popen[bytes], Target]:
    cli = [sys.executable, "-m", "schoolsuite"]
    subprocess.run([*cli, "init", str(tmp / "ss"), "--domain", "school.example", "--hostname", "localhost"],
                   check=True, capture_output=True)
    config = tmp / "ss" / "schoolsuite.toml"
    text = config.read_text()
    port = free_port()
    text = re.sub(r'tcp:8443:interface=127\.0\.0\.1', f"tcp:{port}:interface=127.0.0.1", text)
    for other in ("imap", "imaps", "submission", "submissions", "mx", "metrics"):
        text = re.sub(rf"(\[listeners\.{other}\][^\[]*?enabled = )true", r"\1false", text, flags=re.S)
    config.write_text(text)
    subprocess.run([*cli, "user", "add", USER, "--password-stdin", "-c", str(config)], input=PASSWORD.encode(),
                   check=True, capture_output=True)
    log = open(tmp / "ss.log", "wb")
    proc = subprocess.Popen([*cli, "serve", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    tls = ssl.create_default_context(cafile=str(tmp / "ss" / "tls" / "cert.pem"))
    wait_port(port)
    return proc, Target("schoolsuite", "localhost", port, tls, f"/dav/{USER}/")


def start_radicale(tmp: Path) -> tuple[subprocess.Popen[bytes], Target]:
    (tmp / "users").write_text(f"{USER}:{PASSWORD}\n")
    port = free_port()
    log = open(tmp / "radicale.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "radicale", "--server-hosts", f"127.0.0.1:{port}",
                             "--storage-filesystem-folder", str(tmp / "radicale"), "--auth-type", "htpasswd",
                             "--auth-htpasswd-filename", str(tmp / "users"), "--auth-htpasswd-encryption", "plain",
                             "--rights-type", "owner_only", "--logging-level", "warning"],
                            stdout=log, stderr=subprocess.STDOUT)
    wait_port(port)
    target = Target("radicale", "127.0.0.1", port, None, f"/{USER}/")
    target.request("PROPFIND", target.home, headers={"Depth": "0"})
    target.request("MKCALENDAR", target.calendar)
    target.request("MKCOL", target.contacts, (
        '<mkcol xmlns="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><set><prop><resourcetype><collection/>'
        '<CR:addressbook/></resourcetype></prop></set></mkcol>'), {"Content-Type": "application/xml"})
    return proc, target


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server on port {port} did not start")


# -- measurements ---------------------------------------------------------------------


def timed(fn, runs: int = 5) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of ``runs`` calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_events(target: Target, events: list[tuple[str, str]], writers: int, max_seconds: float
                ) -> tuple[float, int, dict[int, list[float]]]:
    """PUT every event with ``writers`` threads: (events/s, stored, latencies by 1000-event bucket)."""
    counter = {"next": 0, "done": 0}
    lock = threading.Lock()
    buckets: dict[int, list[float]] = {}
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        while True:
            with lock:
                n = counter["next"]
                if n >= len(events) or time.monotonic() > deadline:
                    return
                counter["next"] += 1
                size = counter["done"]
            href, text = events[n]
            start = time.perf_counter()
            status, _ = target.request("PUT", target.calendar + href, text,
                                       {"Content-Type": "text/calendar", "If-None-Match": "*"})
            elapsed = time.perf_counter() - start
            if status != 201:
                raise SystemExit(f"{target.name}: PUT {href} answered {status}")
            with lock:
                counter["done"] += 1
                buckets.setdefault(size // 1000, []).append(elapsed)

    start = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        for future in [pool.submit(worker) for _ in range(writers)]:
            future.result()
    return counter["done"] / (time.perf_counter() - start), counter["done"], buckets


SYNC = ('<sync-collection xmlns="DAV:"><sync-token>{token}</sync-token><sync-level>1</sync-level>'
        '<prop><getetag/></prop></sync-collection>')
CTAG = ('<propfind xmlns="DAV:" xmlns:CS="http://calendarserver.org/ns/"><prop><CS:getctag/><sync-token/>'
        '</prop></propfind>')
ETAGS = '<propfind xmlns="DAV:"><prop><getetag/><resourcetype/></prop></propfind>'
MONTH = ('<C:calendar-query xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><prop><getetag/><C:calendar-data>'
         '<C:expand start="20260301T000000Z" end="20260401T000000Z"/></C:calendar-data></prop><C:filter>'
         '<C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"><C:time-range start="20260301T000000Z" '
         'end="20260401T000000Z"/></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>')
CARD_QUERY = ('<CR:addressbook-query xmlns="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><prop><getetag/>'
              '<CR:address-data/></prop><CR:filter><CR:prop-filter name="FN"><CR:text-match '
              'collation="i;unicode-casemap" match-type="contains">kontakt 4711 </CR:text-match></CR:prop-filter>'
              '</CR:filter></CR:addressbook-query>')


def multiget(target: Target, hrefs: list[str]) -> str:
    inner = "".join(f"<href>{urllib.parse.quote(target.calendar + h)}</href>" for h in hrefs)
    return ('<C:calendar-multiget xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><prop><getetag/>'
            f"<C:calendar-data/></prop>{inner}</C:calendar-multiget>")


def report(target: Target, path: str, body: str, expect: int = 207) -> bytes:
    status, data = target.request("REPORT", path, body, {"Depth": "1", "Content-Type": "application/xml"})
    if status != expect:
        raise SystemExit(f"{target.name}: REPORT answered {status}: {data[:300]!r}")
    return data


def token_of(data: bytes) -> str:
    return re.search(rb"<sync-token>([^<]+)</sync-token>", data).group(1).decode()


def measure(target: Target, events: list[tuple[str, str]], contacts: str, writers: int,
            max_seconds: float) -> dict[str, float]:
    rows: dict[str, float] = {}
    rate, stored, buckets = load_events(target, events, writers, max_seconds)
    rows["load: events/s (more is better)"] = rate
    rows["load: events stored"] = stored
    for bucket in sorted(buckets):
        lat = sorted(buckets[bucket])
        rows[f"PUT median ms at {bucket * 1000}-{bucket * 1000 + 999} events"] = statistics.median(lat) * 1000
    last = max(buckets)
    rows[f"PUT p95 ms at {last * 1000}+ events"] = sorted(buckets[last])[int(len(buckets[last]) * 0.95)] * 1000
    target.request("PROPFIND", target.calendar, CTAG, {"Depth": "0"})
    rows["initial sync-collection s"] = timed(lambda: report(target, target.calendar, SYNC.format(token="")), 3)
    token = token_of(report(target, target.calendar, SYNC.format(token="")))
    for href, text in events[:10]:
        target.request("PUT", target.calendar + href, text.replace("Unterricht", "Vertretung"),
                       {"Content-Type": "text/calendar"})
    rows["incremental sync (10 changes) s"] = timed(
        lambda: report(target, target.calendar, SYNC.format(token=token)), 5)
    rows["CTag PROPFIND depth 0 s"] = timed(lambda: target.request("PROPFIND", target.calendar, CTAG,
                                                                   {"Depth": "0"}), 9)
    rows["Depth-1 PROPFIND (all ETags) s"] = timed(lambda: target.request("PROPFIND", target.calendar, ETAGS,
                                                                          {"Depth": "1"}), 3)
    rows["month calendar-query, expanded s"] = timed(lambda: report(target, target.calendar, MONTH), 3)
    some = [h for h, _ in random.Random(3).sample(events[:stored], min(100, stored))]
    rows["calendar-multiget of 100 s"] = timed(lambda: report(target, target.calendar, multiget(target, some)), 5)
    start = time.perf_counter()
    status, data = target.request("PUT", target.contacts, contacts, {"Content-Type": "text/vcard"})
    if status not in (200, 201, 204):
        raise SystemExit(f"{target.name}: address book import answered {status}: {data[:300]!r}")
    rows["10k-contact import (one PUT) s"] = time.perf_counter() - start
    rows["10k contacts: Depth-1 PROPFIND s"] = timed(lambda: target.request("PROPFIND", target.contacts, ETAGS,
                                                                            {"Depth": "1"}), 3)
    rows["10k contacts: text query s"] = timed(lambda: report(target, target.contacts, CARD_QUERY), 3)
    rows["10k contacts: initial sync s"] = timed(lambda: report(target, target.contacts, SYNC.format(token="")), 3)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--contacts", type=int, default=10000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--max-load-seconds", type=float, default=1200.0,
                        help="stop loading events after this long per server (the count reached is printed)")
    args = parser.parse_args()
    events = make_events(args.events)
    contacts = make_contacts(args.contacts)
    tmp = Path(tempfile.mkdtemp(prefix="dav-bench-"))
    procs = []
    results: dict[str, dict[str, float]] = {}
    try:
        for start in (start_schoolsuite, start_radicale):
            proc, target = start(tmp)
            procs.append(proc)
            target.request("PROPFIND", target.home, headers={"Depth": "1"})
            print(f"measuring {target.name} ...", file=sys.stderr, flush=True)
            results[target.name] = measure(target, events, contacts, args.writers, args.max_load_seconds)
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    ours, theirs = results["schoolsuite"], results["radicale"]
    print(f"\nCalDAV/CardDAV, {args.events} events (10% recurring), {args.writers} writers, "
          f"{args.contacts} contacts; cores: {os.cpu_count()}")
    print(f"{'row':44s} {'schoolsuite':>12s} {'radicale':>12s} {'ratio':>8s}")
    for row in ours:
        a, b = ours[row], theirs.get(row)
        if b is None:
            print(f"{row:44s} {a:12.4g} {'-':>12s}")
            continue
        if "stored" in row:
            print(f"{row:44s} {a:12.0f} {b:12.0f}")
            continue
        ratio = a / b if "more is better" in row else (b / a if a else float("inf"))
        print(f"{row:44s} {a:12.4g} {b:12.4g} {ratio:7.1f}x")
    print("ratio: how many times faster schoolsuite is (above 1 = faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
