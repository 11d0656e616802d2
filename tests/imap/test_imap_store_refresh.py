"""After a STORE the session reports other sessions' flag changes, never echoes its own."""

from __future__ import annotations

from imap_helpers import Conn, message
from schoolsuite.storage import mail


def _two(services, alice):
    with services.store.write() as txn:
        user = txn.user(alice)
        box = mail.find_mailbox(user, "INBOX")
        for i in range(3):
            mail.append(user, box, message(f"m{i}"), flags=mail.SEEN)
        mail.save_mailbox(user, box)
    a, b = Conn(services), Conn(services)
    for c in (a, b):
        c.login()
        c.cmd("S SELECT INBOX")
    return a, b


def test_own_silent_stores_report_nothing_later(services, alice):
    """A run of own STORE .SILENT leaves nothing to report: NOOP afterwards answers with no FETCH."""
    a, _ = _two(services, alice)
    for i in range(5):
        assert a.cmd(f"A{i} STORE {1 + i % 3} {'+' if i % 2 else '-'}FLAGS.SILENT (\\Flagged)") == [f"A{i} OK STORE completed"]
    assert a.cmd("N NOOP") == ["N OK NOOP completed"]


def test_other_sessions_change_is_reported_after_own_store(services, alice):
    """B flags message 2; A's next STORE on message 1 also reports B's change (RFC 3501 §7.4.1)."""
    a, b = _two(services, alice)
    assert b.cmd("B STORE 2 +FLAGS.SILENT (\\Answered)")[-1].startswith("B OK")
    reply = a.cmd("A STORE 1 +FLAGS.SILENT (\\Flagged)")
    assert reply[-1] == "A OK STORE completed"
    assert any(line.startswith("* 2 FETCH") and "\\Answered" in line for line in reply), reply
    assert not any(line.startswith("* 1 FETCH") for line in reply), reply
    assert a.cmd("N NOOP") == ["N OK NOOP completed"]


def test_change_after_own_store_still_reported(services, alice):
    """After A's own STORE moved its view forward, B's later change still reaches A's NOOP."""
    a, b = _two(services, alice)
    a.cmd("A STORE 1 +FLAGS.SILENT (\\Flagged)")
    b.cmd("B STORE 3 +FLAGS.SILENT (\\Draft)")
    reply = a.cmd("N NOOP")
    assert any(line.startswith("* 3 FETCH") and "\\Draft" in line for line in reply), reply
