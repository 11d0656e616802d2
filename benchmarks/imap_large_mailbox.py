#!/usr/bin/env python3
"""A 100,000-message INBOX on ``schoolsuite serve``: the everyday commands stay fast.

Loads N messages with MULTIAPPEND, then times, over a plain loopback IMAP
connection: SELECT, UID FETCH 1:* (FLAGS), the newest 50 headers, one UID STORE,
FETCH CHANGEDSINCE, STATUS, another session's change seen by NOOP, SEARCH UNSEEN,
a subject search (stored envelopes only), a body search (which decrypts every
message), the same limited to the newest 1,000 UIDs, and how long another
session's NOOP takes while a body search runs (the scan runs in a worker thread)
and while a ``UID FETCH 1:* (FLAGS)`` runs (rendered in batches between which the
reactor serves the other sessions).

    python benchmarks/imap_large_mailbox.py [--messages 100000] [--searches-only | --fetches-only]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from imap_vs_dovecot import Client, load, make_messages, start_schoolsuite  # noqa: E402


def timed(label: str, fn) -> None:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    print(f"{label:44s} {1000 * (time.perf_counter() - start):9.1f} ms", flush=True)


def searches(port: int, c: Client, n: int) -> None:
    timed("SEARCH UNSEEN", lambda: c.command("SEARCH UNSEEN"))
    timed("UID SEARCH SUBJECT (envelopes only)", lambda: c.command("UID SEARCH SUBJECT xylophone"))
    timed("UID SEARCH BODY (decrypts every message)", lambda: c.command("UID SEARCH BODY xylophone"))
    timed("UID SEARCH UID newest 1000 BODY", lambda: c.command(f"UID SEARCH BODY xylophone UID {n - 999}:*"))
    # Another session's NOOP while the body search runs: the scan must not hold up the reactor.
    other = Client(port)
    other.login()
    other.command("SELECT INBOX")
    scan = threading.Thread(target=lambda: c.command("UID SEARCH BODY xylophone"))
    scan.start()
    time.sleep(0.05)
    timed("another session's NOOP during that body search", lambda: other.command("NOOP"))
    scan.join()
    other.close()


def during(port: int, c: Client, label: str, command: str) -> None:
    """Another session's NOOP while ``command`` runs in session ``c`` (median of 5 NOOPs)."""
    other = Client(port)
    other.login()
    other.command("SELECT INBOX")
    took = []
    for _ in range(5):
        busy = threading.Thread(target=lambda: c.command(command))
        busy.start()
        time.sleep(0.02)
        start = time.perf_counter()
        other.command("NOOP")
        took.append(time.perf_counter() - start)
        busy.join()
    took.sort()
    print(f"{label:44s} {1000 * took[2]:9.1f} ms (max {1000 * took[-1]:.1f})", flush=True)
    other.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--searches-only", action="store_true", help="skip the SELECT/FETCH/STORE rows")
    only.add_argument("--fetches-only", action="store_true", help="only the UID FETCH 1:* rows")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="imapbig-"))
    proc = None
    try:
        proc, port = start_schoolsuite(base, 10)
        messages = make_messages(min(args.messages, 5000))
        batches = [messages[i % len(messages)] for i in range(args.messages)]
        took, _ = load(port, batches, batch=500)
        print(f"loaded {args.messages} messages in {took:.1f} s", flush=True)
        n = args.messages
        c = Client(port)
        c.login()
        timed("SELECT INBOX", lambda: c.command("SELECT INBOX"))
        if args.searches_only:
            searches(port, c, n)
            c.close()
            return 0
        timed("UID FETCH 1:* (FLAGS)", lambda: c.command("UID FETCH 1:* (FLAGS)"))
        during(port, c, "another session's NOOP during UID FETCH 1:* (FLAGS)", "UID FETCH 1:* (FLAGS)")
        if args.fetches_only:
            timed("UID FETCH 1:* (FLAGS) again", lambda: c.command("UID FETCH 1:* (FLAGS)"))
            c.close()
            return 0
        timed("UID FETCH newest 50 (headers)", lambda: c.command(
            f"UID FETCH {n - 49}:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])"))
        line, _ = c.command("STATUS INBOX (HIGHESTMODSEQ)")
        timed("UID STORE one message", lambda: c.command(f"UID STORE {n // 2} +FLAGS (\\Seen)"))
        timed("UID FETCH 1:* (FLAGS) (CHANGEDSINCE recent)", lambda: c.command(
            f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {n})"))
        timed("STATUS INBOX (MESSAGES UNSEEN)", lambda: c.command("STATUS INBOX (MESSAGES UNSEEN)"))
        other = Client(port)
        other.login()
        other.command("SELECT INBOX")
        other.command(f"UID STORE {n // 3} +FLAGS (\\Flagged)")
        timed("NOOP that reports another session's STORE", lambda: c.command("NOOP"))
        other.close()
        searches(port, c, n)
        c.close()
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
