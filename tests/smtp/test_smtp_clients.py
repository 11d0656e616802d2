"""Real Debian clients submitting through both submission ports: swaks and msmtp."""

from __future__ import annotations

import os
import subprocess

import pytest

from smtp_e2e import PASSWORDS, MailSystem, inbox, wait_for
from support import require_program

ALICE, BOB = "alice@school.example", "bob@school.example"
pytestmark = pytest.mark.realclient


@pytest.mark.parametrize("port_name", ["submission", "submissions"])
def test_swaks_submits(mailsys: MailSystem, port_name: str) -> None:
    """swaks (pipelining, AUTH PLAIN over TLS) submits on both ports and bob receives the message."""
    swaks = require_program("swaks")
    subject = f"swaks via {port_name}"
    tls = ["--tls"] if port_name == "submission" else ["--tls-on-connect"]
    proc = subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(mailsys.port(port_name)), *tls,
                           "--pipeline", "--auth", "PLAIN", "--auth-user", ALICE, "--auth-password", PASSWORDS[ALICE],
                           "--from", ALICE, "--to", BOB, "--header", f"Subject: {subject}",
                           "--header", f"From: {ALICE}", "--body", "sent by swaks", "--timeout", "20"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "250 2.0.0 Ok: queued" in proc.stdout
    assert wait_for(lambda: [m for m in inbox(mailsys.inst.dir, BOB) if subject.encode() in m])


def test_swaks_auth_refused_without_tls(mailsys: MailSystem) -> None:
    """swaks trying AUTH on the submission port without STARTTLS is refused (AUTH not offered)."""
    swaks = require_program("swaks")
    proc = subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(mailsys.port("submission")),
                           "--auth", "PLAIN", "--auth-user", ALICE, "--auth-password", PASSWORDS[ALICE],
                           "--from", ALICE, "--to", BOB, "--timeout", "20"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "235" not in proc.stdout


@pytest.mark.parametrize("port_name", ["submission", "submissions"])
def test_msmtp_submits(mailsys: MailSystem, port_name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """msmtp (certificate verified against the instance's) submits on both ports; bob receives it."""
    msmtp = require_program("msmtp")
    conf = tmp_path / "msmtprc"
    conf.write_text(
        "account default\n"
        "host localhost\n"
        f"port {mailsys.port(port_name)}\n"
        "tls on\n"
        f"tls_starttls {'on' if port_name == 'submission' else 'off'}\n"
        f"tls_trust_file {mailsys.inst.cert}\n"
        "auth plain\n"
        f"user {ALICE}\n"
        f"password {PASSWORDS[ALICE]}\n"
        f"from {ALICE}\n")
    os.chmod(conf, 0o600)
    subject = f"msmtp via {port_name}"
    body = f"From: {ALICE}\r\nTo: {BOB}\r\nSubject: {subject}\r\n\r\nsent by msmtp\r\n"
    proc = subprocess.run([msmtp, "-C", str(conf), BOB], input=body, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert wait_for(lambda: [m for m in inbox(mailsys.inst.dir, BOB) if subject.encode() in m])
