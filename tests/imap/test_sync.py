"""Session synchronisation: CONDSTORE, QRESYNC, and when other sessions' expunges may be reported."""

from __future__ import annotations

import re

from imap_helpers import Conn, message


def _other(services):
    c = Conn(services)
    c.login()
    c.cmd("s SELECT INBOX")
    return c


def _second_expunged_by_another_session(services, conn, delivery, alice):
    for n in range(3):
        delivery.deliver(alice, message(f"m{n}"))
    conn.cmd("s SELECT INBOX")
    other = _other(services)
    other.cmd("a STORE 2 +FLAGS.SILENT (\\Deleted)")
    other.cmd("b EXPUNGE")


def test_no_expunge_during_fetch_by_sequence(services, conn, delivery, alice):
    """Another session's expunge waits through FETCH/STORE/SEARCH and is reported by NOOP (RFC 3501 §7.4.1)."""
    _second_expunged_by_another_session(services, conn, delivery, alice)
    fetch = conn.cmd("c FETCH 1:3 (UID)")
    assert not any("EXPUNGE" in line for line in fetch) and fetch[-1] == "c OK FETCH completed"
    assert conn.cmd("e NOOP") == ["* 2 EXPUNGE", "e OK NOOP completed"]


def test_expunge_reported_by_noop_not_search(services, conn, delivery, alice):
    """SEARCH keeps the old sequence numbers (the expunged message matches nothing); NOOP reports the EXPUNGE."""
    _second_expunged_by_another_session(services, conn, delivery, alice)
    search = conn.cmd("c SEARCH ALL")
    assert "* SEARCH 1 3" in search and not any("EXPUNGE" in x for x in search)  # 3 keeps its number
    assert conn.cmd("d NOOP") == ["* 2 EXPUNGE", "d OK NOOP completed"]


def test_condstore_fetch_changedsince_and_unchangedsince(conn, delivery, alice):
    """CHANGEDSINCE returns only newer messages with MODSEQ; UNCHANGEDSINCE refuses newer ones with MODIFIED."""
    for n in range(3):
        delivery.deliver(alice, message(f"m{n}"))
    select = conn.cmd("s SELECT INBOX (CONDSTORE)")
    highest = int(re.search(r"HIGHESTMODSEQ (\d+)", " ".join(select)).group(1))
    stored = conn.cmd("a STORE 2 +FLAGS (\\Flagged)")
    modseq = int(re.search(r"MODSEQ \((\d+)\)", stored[0]).group(1))
    assert modseq > highest
    changed = conn.cmd(f"b FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})")
    assert len(changed) == 2 and changed[0].startswith("* 2 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (")
    refused = conn.cmd(f"c STORE 1:2 (UNCHANGEDSINCE {highest}) +FLAGS (\\Seen)")
    assert refused[-1] == "c OK [MODIFIED 2] Conditional STORE failed"


def test_qresync_select_reports_vanished_and_changes(services, conn, delivery, alice):
    """SELECT (QRESYNC ...) reports VANISHED (EARLIER) and changed flags since the client's MODSEQ."""
    for n in range(4):
        delivery.deliver(alice, message(f"m{n}"))
    assert conn.cmd("e ENABLE QRESYNC") == ["* ENABLED QRESYNC", "e OK ENABLE completed"]
    select = conn.cmd("s SELECT INBOX")
    uidvalidity = re.search(r"UIDVALIDITY (\d+)", " ".join(select)).group(1)
    highest = int(re.search(r"HIGHESTMODSEQ (\d+)", " ".join(select)).group(1))
    conn.cmd("u UNSELECT")
    other = _other(services)
    other.cmd("a STORE 1 +FLAGS.SILENT (\\Seen)")
    other.cmd("b STORE 3 +FLAGS.SILENT (\\Deleted)")
    other.cmd("c EXPUNGE")
    reply = conn.cmd(f"t SELECT INBOX (QRESYNC ({uidvalidity} {highest} 1:4))")
    assert "* VANISHED (EARLIER) 3" in reply
    assert any(line.startswith("* 1 FETCH (FLAGS (\\Seen") and "UID 1" in line for line in reply)


def test_qresync_expunge_is_vanished(services, conn, delivery, alice):
    """With QRESYNC enabled another session's expunge arrives as VANISHED, not EXPUNGE."""
    for n in range(2):
        delivery.deliver(alice, message(f"m{n}"))
    conn.cmd("e ENABLE QRESYNC")
    conn.cmd("s SELECT INBOX")
    other = _other(services)
    other.cmd("a STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.cmd("b EXPUNGE")
    assert conn.cmd("c NOOP") == ["* VANISHED 1", "c OK NOOP completed"]


def test_move_reports_copyuid_and_expunge(conn, delivery, alice):
    """MOVE sends COPYUID in an untagged OK, then EXPUNGE (RFC 6851 §4.3)."""
    delivery.deliver(alice, message("x"))
    conn.cmd("s SELECT INBOX")
    reply = conn.cmd("m MOVE 1 Archive")
    assert reply[0].startswith("* OK [COPYUID ") and reply[1] == "* 1 EXPUNGE" and reply[2] == "m OK MOVE completed"


def test_search_sort_thread_esearch(conn, delivery, alice):
    """SEARCH keys, ESEARCH, SORT and THREAD answer over delivered mail."""
    delivery.deliver(alice, message("Ausflug", body="Zoo am Montag\r\n", sender="b@example.org"))
    delivery.deliver(alice, message("Re: Ausflug", body="Gerne!\r\n", sender="a@example.org"))
    delivery.deliver(alice, message("Elternabend", body="Zoo? Nein.\r\n", sender="c@example.org"))
    conn.cmd("s SELECT INBOX")
    assert conn.cmd("a SEARCH BODY zoo")[0] == "* SEARCH 1 3"
    assert conn.cmd("b SEARCH FROM a@example.org")[0] == "* SEARCH 2"
    assert conn.cmd("c SEARCH RETURN (COUNT MIN) SUBJECT ausflug")[0] == '* ESEARCH (TAG "c") MIN 1 COUNT 2'
    assert conn.cmd("d SORT (FROM) UTF-8 ALL")[0] == "* SORT 2 1 3"
    assert conn.cmd("e THREAD ORDEREDSUBJECT UTF-8 ALL")[0] == "* THREAD (1 2)(3)"
    assert conn.cmd("f SEARCH CHARSET KOI8-R ALL") == ["f NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"]
