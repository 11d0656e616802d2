"""One transcript per remaining command: LIST/LSUB/STATUS/NAMESPACE/ID/ENABLE/QUOTA/RENAME/SUBSCRIBE/CLOSE/..."""

from __future__ import annotations

from imap_helpers import Conn, message


def test_list_special_use_and_children(conn):
    """LIST shows special-use attributes and children; LIST "" "" gives the delimiter."""
    conn.cmd("a CREATE Projekte/Klasse&AOQ-")
    reply = conn.cmd('b LIST "" *')
    assert '* LIST (\\HasNoChildren \\Sent) "/" "Sent"' in reply
    assert '* LIST (\\HasChildren) "/" "Projekte"' in reply
    assert '* LIST (\\HasNoChildren) "/" "Projekte/Klasse&AOQ-"' in reply
    assert conn.cmd('c LIST "" ""') == ['* LIST (\\Noselect) "/" ""', "c OK LIST completed"]


def test_list_pattern_percent_and_reference(conn):
    """'%' stops at the delimiter; a reference is prefixed to the pattern (RFC 3501 §6.3.8)."""
    conn.cmd("a CREATE School/5a/Trip")
    top = conn.cmd('b LIST "" %')
    assert '* LIST (\\HasChildren) "/" "School"' in top and not any("5a" in x for x in top)
    under = conn.cmd("c LIST School/ %")
    assert under == ['* LIST (\\HasChildren) "/" "School/5a"', "c OK LIST completed"]


def test_list_status_and_special_use_selection(conn, delivery, alice):
    """LIST (SPECIAL-USE) returns only special-use mailboxes; RETURN (STATUS ...) adds STATUS lines."""
    delivery.deliver(alice, message())
    reply = conn.cmd('a LIST (SPECIAL-USE) "" * RETURN (STATUS (MESSAGES UNSEEN))')
    names = [x.split('"/" ')[1] for x in reply if x.startswith("* LIST")]
    assert names == ['"Archive"', '"Drafts"', '"Junk"', '"Sent"', '"Trash"']
    assert '* STATUS "Archive" (MESSAGES 0 UNSEEN 0)' in reply
    inbox = conn.cmd('b LIST "" INBOX RETURN (STATUS (MESSAGES UNSEEN SIZE))')
    assert inbox[1].startswith('* STATUS "INBOX" (MESSAGES 1 UNSEEN 1 SIZE ')


def test_subscribe_lsub(conn):
    """SUBSCRIBE/UNSUBSCRIBE change LSUB and LIST (SUBSCRIBED)."""
    conn.cmd("a CREATE Notes")
    assert conn.cmd("b SUBSCRIBE Notes") == ["b OK SUBSCRIBE completed"]
    assert any('"Notes"' in x for x in conn.cmd('c LSUB "" *'))
    assert conn.cmd("d UNSUBSCRIBE Notes") == ["d OK UNSUBSCRIBE completed"]
    assert not any('"Notes"' in x for x in conn.cmd('e LIST (SUBSCRIBED) "" *'))
    assert conn.cmd("f SUBSCRIBE Nope") == ["f NO [NONEXISTENT] Mailbox does not exist"]


def test_rename_and_delete(conn):
    """RENAME moves a mailbox with its children; DELETE removes it."""
    conn.cmd("a CREATE Old/Child")
    assert conn.cmd("b RENAME Old New") == ["b OK RENAME completed"]
    names = conn.cmd('c LIST "" New*')
    assert '* LIST (\\HasNoChildren) "/" "New/Child"' in names
    assert conn.cmd("d RENAME New Sent") == ["d NO [ALREADYEXISTS] Mailbox already exists"]
    assert conn.cmd("e DELETE New/Child") == ["e OK DELETE completed"]


def test_status_items(conn, delivery, alice):
    """STATUS reports MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE DELETED APPENDLIMIT."""
    delivery.deliver(alice, message(body="12345\r\n"))
    reply = conn.cmd("a STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN DELETED)")
    assert reply == ['* STATUS "INBOX" (MESSAGES 1 RECENT 1 UIDNEXT 2 UNSEEN 1 DELETED 0)', "a OK STATUS completed"]
    assert conn.cmd("b STATUS INBOX (APPENDLIMIT)")[0] == '* STATUS "INBOX" (APPENDLIMIT 52428800)'
    assert conn.cmd("c STATUS INBOX (BOGUS)")[0].startswith("c BAD")


def test_namespace_id_enable(conn):
    """NAMESPACE, ID and ENABLE answer as their RFCs say."""
    assert conn.cmd("a NAMESPACE") == ['* NAMESPACE (("" "/")) NIL NIL', "a OK NAMESPACE completed"]
    assert conn.cmd('b ID ("name" "Thunderbird")')[0] == '* ID ("name" "schoolsuite" "vendor" "schoolsuite")'
    assert conn.cmd("c ENABLE CONDSTORE X-UNKNOWN") == ["* ENABLED CONDSTORE", "c OK ENABLE completed"]


def test_getquota_and_setquota(conn):
    """GETQUOTA on the root works; SETQUOTA is refused; an unknown root is NONEXISTENT."""
    assert conn.cmd('a GETQUOTA ""') == ['* QUOTA "" ()', "a OK GETQUOTA completed"]
    assert conn.cmd('b SETQUOTA "" (STORAGE 10)') == ["b NO [NOPERM] Quotas are set by the school's administrator"]
    assert conn.cmd("c GETQUOTA other") == ["c NO [NONEXISTENT] No such quota root"]


def test_examine_is_read_only(conn, delivery, alice):
    """EXAMINE is READ-ONLY: STORE and EXPUNGE are refused, FETCH BODY[] does not set \\Seen."""
    delivery.deliver(alice, message())
    assert conn.cmd("a EXAMINE INBOX")[-1] == "a OK [READ-ONLY] EXAMINE completed"
    assert conn.cmd("b STORE 1 +FLAGS (\\Seen)") == ["b NO [READ-ONLY] Mailbox is read-only"]
    assert "FLAGS" not in "".join(conn.cmd("c FETCH 1 BODY[]"))
    assert conn.cmd("d EXPUNGE") == ["d NO [READ-ONLY] Mailbox is read-only"]


def test_close_expunges_unselect_does_not(conn, delivery, alice):
    """CLOSE expunges \\Deleted messages silently; UNSELECT leaves them."""
    delivery.deliver(alice, message("a"))
    delivery.deliver(alice, message("b"))
    conn.cmd("s SELECT INBOX")
    conn.cmd("a STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    assert conn.cmd("b UNSELECT") == ["b OK UNSELECT completed"]
    assert "* 2 EXISTS" in conn.cmd("c SELECT INBOX")
    assert conn.cmd("d CLOSE") == ["d OK CLOSE completed"]
    assert "* 0 EXISTS" in conn.cmd("e SELECT INBOX")


def test_check_and_uid_expunge(conn, delivery, alice):
    """CHECK is OK; UID EXPUNGE removes only the named \\Deleted messages (RFC 4315 §2.1)."""
    for n in range(3):
        delivery.deliver(alice, message(f"m{n}"))
    conn.cmd("s SELECT INBOX")
    assert conn.cmd("a CHECK") == ["a OK CHECK completed"]
    conn.cmd("b STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    assert conn.cmd("c UID EXPUNGE 2") == ["* 2 EXPUNGE", "c OK EXPUNGE completed"]


def test_multiappend_and_append_date(conn):
    """APPEND of two messages in one command returns both uids; the date-time becomes INTERNALDATE."""
    a, b = b"Subject: one\r\n\r\n1\r\n", b"Subject: two\r\n\r\n2\r\n"
    out = conn.send(b'a APPEND INBOX (\\Seen) "01-Feb-2024 10:00:00 +0100" {%d+}\r\n%s {%d+}\r\n%s\r\n'
                    % (len(a), a, len(b), b))
    assert out.startswith(b"a OK [APPENDUID ") and out.endswith(b" 1:2] APPEND completed\r\n")
    conn.cmd("s SELECT INBOX")
    assert conn.cmd("b FETCH 1 (INTERNALDATE FLAGS)")[0] == \
        '* 1 FETCH (INTERNALDATE " 1-Feb-2024 09:00:00 +0000" FLAGS (\\Seen \\Recent))'


def test_logout(services):
    """LOGOUT says BYE, then OK, then closes."""
    c = Conn(services)
    assert c.cmd("a LOGOUT") == ["* BYE Logging out", "a OK LOGOUT completed"] and c.closed


def test_utf8_accept_mailbox_names(conn):
    """After ENABLE UTF8=ACCEPT names travel as UTF-8, '&' is literal; before, as modified UTF-7 (RFC 6855)."""
    assert conn.cmd("a ENABLE UTF8=ACCEPT") == ["* ENABLED UTF8=ACCEPT", "a OK ENABLE completed"]
    assert conn.cmd('b CREATE "Übung & Test"') == ["b OK CREATE completed"]
    assert conn.cmd('c LIST "" "Üb*"') == ['* LIST (\\HasNoChildren) "/" "Übung & Test"', "c OK LIST completed"]
    plain = Conn(conn.factory.services)
    plain.login()
    assert plain.cmd('d LIST "" "&ANw-b*"') == ['* LIST (\\HasNoChildren) "/" "&ANw-bung &- Test"',
                                                 "d OK LIST completed"]


def test_searchres_saved_result(conn, delivery, alice):
    """SEARCH RETURN (SAVE) answers nothing and "$" then names those messages (RFC 5182)."""
    for n in range(4):
        delivery.deliver(alice, message(f"m{n}"), flags=["\\Flagged"] if n % 2 else [])
    conn.cmd("s SELECT INBOX")
    assert conn.cmd("a SEARCH RETURN (SAVE) FLAGGED") == ["a OK SEARCH completed"]
    assert conn.cmd("b FETCH $ (UID)") == ["* 2 FETCH (UID 2)", "* 4 FETCH (UID 4)", "b OK FETCH completed"]
    assert conn.cmd("c UID SEARCH UID $ NOT 4") == ["* SEARCH 2", "c OK UID SEARCH completed"]
    assert conn.cmd("d SEARCH RETURN (SAVE MIN) FLAGGED")[0] == '* ESEARCH (TAG "d") MIN 2'
    assert conn.cmd("e FETCH $ (UID)") == ["* 2 FETCH (UID 2)", "e OK FETCH completed"]


def test_imap4rev2_enabled(conn, delivery, alice):
    """ENABLE IMAP4rev2: SELECT gives LIST not RECENT, SEARCH answers ESEARCH, no \\Recent (RFC 9051)."""
    delivery.deliver(alice, message())
    assert conn.cmd("a ENABLE IMAP4rev2") == ["* ENABLED IMAP4rev2", "a OK ENABLE completed"]
    select = conn.cmd("s SELECT INBOX")
    assert '* LIST () "/" "INBOX"' in select and not any(x.endswith("RECENT") for x in select)
    assert conn.cmd("b SEARCH ALL") == ['* ESEARCH (TAG "b") ALL 1', "b OK SEARCH completed"]
    assert conn.cmd("c FETCH 1 FLAGS")[0] == "* 1 FETCH (FLAGS ())"
    assert conn.cmd("d STATUS INBOX (RECENT)")[0].startswith("d BAD")
    assert conn.cmd("e SELECT Archive")[0] == "* OK [CLOSED] Previous mailbox closed"


def test_delete_of_selected_mailbox_deselects(conn):
    """Deleting the mailbox this session has selected deselects it instead of dropping the connection."""
    conn.cmd("a CREATE Temp")
    conn.cmd("s SELECT Temp")
    assert conn.cmd("b DELETE Temp") == ["b OK DELETE completed"]
    assert conn.cmd("c FETCH 1 FLAGS") == ["c BAD No mailbox selected"]
    assert not conn.closed


def test_other_session_deleting_selected_mailbox_says_bye(services, conn):
    """When another session deletes the selected mailbox, the next command gets BYE (as Dovecot does)."""
    conn.cmd("a CREATE Shared")
    conn.cmd("s SELECT Shared")
    other = Conn(services)
    other.login()
    other.cmd("d DELETE Shared")
    assert conn.cmd("n NOOP") == ["* BYE Selected mailbox was deleted"] and conn.closed
