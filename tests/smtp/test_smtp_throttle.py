"""AUTH failures on the submission port are throttled by the shared authentication service."""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import pytest

from smtp_e2e import ALICE, PASSWORDS, start_mail_system, tls_context


def test_wrong_passwords_are_delayed_then_right_one_works(tmp_path: Path) -> None:
    """After 3 failed AUTH attempts the 4th answer is delayed (>= 1 s); the right password still logs in."""
    system = start_mail_system(tmp_path)
    m = next(system)
    try:
        timings = []
        with smtplib.SMTP_SSL("localhost", m.port("submissions"), context=tls_context(m), timeout=30) as client:
            client.ehlo()
            client.user, client.password = ALICE, "wrong-password-123"
            for _ in range(4):  # AUTH PLAIN only (login() would also try LOGIN after each failure)
                started = time.monotonic()
                with pytest.raises(smtplib.SMTPAuthenticationError) as info:
                    client.auth("PLAIN", client.auth_plain)
                timings.append(time.monotonic() - started)
                assert info.value.smtp_code == 535
        assert timings[3] >= 1.0 and timings[3] >= min(timings[:3]) + 0.7  # the 1 s delay, argon2 time aside
        with smtplib.SMTP_SSL("localhost", m.port("submissions"), context=tls_context(m), timeout=30) as client:
            assert client.login(ALICE, PASSWORDS[ALICE])[0] == 235
    finally:
        system.close()
