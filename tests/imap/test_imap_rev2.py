"""IMAP4rev2 after ENABLE (RFC 9051 Appendix E items) and the rev2 response codes also used under rev1."""

from __future__ import annotations

from imap_helpers import Conn, message


def _rev2(conn: Conn) -> None:
    assert conn.cmd("e ENABLE IMAP4rev2") == ["* ENABLED IMAP4rev2", "e OK ENABLE completed"]


def test_delete_noselect_parent_with_children_is_haschildren(conn):
    """DELETE of a \\Noselect name that still has children is NO [HASCHILDREN] (RFC 9051 §6.3.5, §7.1)."""
    conn.cmd("a CREATE Club/Chess")
    assert conn.cmd("b DELETE Club") == ["b OK DELETE completed"]  # keeps its name as \Noselect
    assert '* LIST (\\Noselect \\HasChildren) "/" "Club"' in conn.cmd('c LIST "" Club')
    assert conn.cmd("d DELETE Club") == ["d NO [HASCHILDREN] Mailbox has children; delete them first"]
    assert conn.cmd("e DELETE Club/Chess") == ["e OK DELETE completed"]
    assert conn.cmd("f DELETE Club") == ["f OK DELETE completed"]


def test_no_recent_anywhere_under_rev2(services, conn, delivery, alice):
    """Under rev2 new mail is never \\Recent: no RECENT response on arrival, RECENT/NEW match nothing, OLD all."""
    delivery.deliver(alice, message("first"))
    _rev2(conn)
    conn.cmd("s SELECT INBOX")
    delivery.deliver(alice, message("second"))
    assert conn.cmd("a NOOP") == ["* 2 EXISTS", "a OK NOOP completed"]
    assert conn.cmd("b SEARCH RECENT") == ['* ESEARCH (TAG "b")', "b OK SEARCH completed"]
    assert conn.cmd("c SEARCH NEW") == ['* ESEARCH (TAG "c")', "c OK SEARCH completed"]
    assert conn.cmd("d SEARCH OLD") == ['* ESEARCH (TAG "d") ALL 1:2', "d OK SEARCH completed"]
    assert conn.cmd("f FETCH 1:2 FLAGS")[:2] == ["* 1 FETCH (FLAGS ())", "* 2 FETCH (FLAGS ())"]


def test_rev1_session_still_gets_recent(services, conn, delivery, alice):
    """The same sequence without ENABLE IMAP4rev2 keeps RFC 3501 \\Recent (the switch is per session)."""
    delivery.deliver(alice, message("first"))
    conn.cmd("s SELECT INBOX")
    delivery.deliver(alice, message("second"))
    assert conn.cmd("a NOOP") == ["* 2 EXISTS", "* 2 RECENT", "a OK NOOP completed"]
    assert conn.cmd("b SEARCH RECENT") == ["* SEARCH 1 2", "b OK SEARCH completed"]


def test_uid_search_answers_esearch_with_uid(conn, delivery, alice):
    """UID SEARCH under rev2 is an ESEARCH response marked UID (RFC 9051 §6.4.4, §7.3.4), also when empty."""
    for n in range(3):
        delivery.deliver(alice, message(f"m{n}"), flags=["\\Seen"] if n else [])
    _rev2(conn)
    conn.cmd("s SELECT INBOX")
    assert conn.cmd("a UID SEARCH SEEN") == ['* ESEARCH (TAG "a") UID ALL 2:3', "a OK UID SEARCH completed"]
    assert conn.cmd("b UID SEARCH DELETED") == ['* ESEARCH (TAG "b") UID', "b OK UID SEARCH completed"]
    assert conn.cmd("c SEARCH RETURN (COUNT) SEEN") == ['* ESEARCH (TAG "c") COUNT 2', "c OK SEARCH completed"]


def test_list_status_recent_refused_under_rev2(conn):
    """LIST ... RETURN (STATUS (RECENT)) is BAD under rev2 as STATUS (RECENT) is; DELETED and SIZE are answered."""
    assert conn.cmd('a LIST "" INBOX RETURN (STATUS (RECENT))')[-1] == "a OK LIST completed"
    _rev2(conn)
    assert conn.cmd('b LIST "" INBOX RETURN (STATUS (RECENT))')[-1].startswith("b BAD")
    reply = conn.cmd("c STATUS INBOX (MESSAGES DELETED SIZE)")
    assert reply == ['* STATUS "INBOX" (MESSAGES 0 DELETED 0 SIZE 0)', "c OK STATUS completed"]


def test_utf8_mailbox_names_under_rev2(conn):
    """Under rev2 mailbox names travel as UTF-8 quoted strings, not modified UTF-7 (RFC 9051 §5.1)."""
    _rev2(conn)
    assert conn.cmd('a CREATE "Klassenfahrt Köln"') == ["a OK CREATE completed"]
    assert '* LIST (\\HasNoChildren) "/" "Klassenfahrt Köln"' in conn.cmd('b LIST "" Klassen*')


def test_forwarded_and_junk_keywords(conn, delivery, alice):
    """$Forwarded, $Junk, $NotJunk, $Phishing, $MDNSent (RFC 9051 §2.3.2) are stored and announced like any keyword."""
    delivery.deliver(alice, message())
    _rev2(conn)
    conn.cmd("s SELECT INBOX")
    reply = conn.cmd("a STORE 1 +FLAGS ($Forwarded $Junk $MDNSent)")
    assert reply[0].startswith("* FLAGS (") and "$Forwarded" in reply[0]
    assert "* 1 FETCH (FLAGS ($Forwarded $Junk $MDNSent))" in reply
    assert conn.cmd("b SEARCH KEYWORD $Junk") == ['* ESEARCH (TAG "b") ALL 1', "b OK SEARCH completed"]


def test_unsolicited_fetch_carries_uid_under_rev2(services, conn, delivery, alice):
    """Another session's flag change reaches a rev2 session as FETCH with UID (RFC 9051 §7.5.2); rev1 without it."""
    delivery.deliver(alice, message("first"))
    other = Conn(services)
    other.login()
    other.cmd("s SELECT INBOX")
    _rev2(conn)
    conn.cmd("s SELECT INBOX")
    rev1 = Conn(services)
    rev1.login()
    rev1.cmd("s SELECT INBOX")
    other.cmd("a STORE 1 +FLAGS.SILENT (\\Flagged)")
    assert conn.cmd("n NOOP") == ["* 1 FETCH (FLAGS (\\Flagged) UID 1)", "n OK NOOP completed"]
    first = rev1.cmd("n NOOP")[0]
    assert first.startswith("* 1 FETCH (FLAGS (\\Flagged") and "UID" not in first
