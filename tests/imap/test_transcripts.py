"""Transcript tests: client lines in, exact server lines out (in process, no sockets)."""

from __future__ import annotations

from imap_helpers import Conn, message


def test_greeting_and_capability_before_login(services):
    """The greeting carries the capabilities; AUTH=PLAIN is offered on TLS."""
    c = Conn(services)
    assert c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert b"AUTH=PLAIN" in c.greeting
    reply = c.cmd("a CAPABILITY")
    assert reply[0].startswith("* CAPABILITY IMAP4rev1") and reply[1] == "a OK CAPABILITY completed"


def test_login_wrong_password(services):
    """A wrong password is NO [AUTHENTICATIONFAILED] and the session stays unauthenticated."""
    c = Conn(services)
    assert c.cmd("a LOGIN alice@school.example wrong") == ["a NO [AUTHENTICATIONFAILED] Authentication failed"]
    assert c.cmd("b SELECT INBOX") == ["b BAD Not authenticated"]


def test_authenticate_plain_with_continuation(services):
    """AUTHENTICATE PLAIN without initial response asks with '+' and accepts the base64 answer."""
    import base64

    c = Conn(services)
    assert c.cmd("a AUTHENTICATE PLAIN") == ["+ "]
    token = base64.b64encode(b"\0alice@school.example\0correct horse battery").decode()
    reply = c.cmd(token)
    assert reply[-1].startswith("a OK [CAPABILITY ")


def test_sasl_ir(services):
    """AUTHENTICATE PLAIN with an initial response (RFC 4959) logs in in one round trip."""
    import base64

    c = Conn(services)
    token = base64.b64encode(b"\0alice@school.example\0correct horse battery").decode()
    assert c.cmd(f"a AUTHENTICATE PLAIN {token}")[-1].startswith("a OK")


def test_select_reports_state(conn, delivery, alice):
    """SELECT reports FLAGS, EXISTS, RECENT, UNSEEN, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, READ-WRITE."""
    delivery.deliver(alice, message("one"))
    delivery.deliver(alice, message("two"), flags=["\\Seen"])
    reply = conn.cmd("s SELECT INBOX")
    assert "* 2 EXISTS" in reply and "* 2 RECENT" in reply
    assert "* OK [UNSEEN 1] First unseen" in reply
    assert any(line.startswith("* OK [UIDVALIDITY ") for line in reply)
    assert "* OK [UIDNEXT 3] Predicted next UID" in reply
    assert reply[-1] == "s OK [READ-WRITE] SELECT completed"
    again = Conn(conn.factory.services)
    again.login()
    assert "* 0 RECENT" in again.cmd("t EXAMINE INBOX")


def test_unknown_mailbox_codes(conn):
    """Unknown mailboxes: SELECT NO [NONEXISTENT], APPEND/COPY NO [TRYCREATE]."""
    assert conn.cmd("a SELECT Nope") == ["a NO [NONEXISTENT] Mailbox does not exist"]
    out = conn.send(b"b APPEND Nope {5}\r\n")
    assert out == b"+ Ready for literal data\r\n"
    assert conn.send(b"hello\r\n") == b"b NO [TRYCREATE] Mailbox does not exist\r\n"
    assert conn.cmd('c CREATE INBOX') == ["c NO [ALREADYEXISTS] INBOX exists already"]


def test_fetch_sets_seen_and_peek_does_not(conn, delivery, alice):
    """BODY[] sets \\Seen (and reports FLAGS); BODY.PEEK[] does not."""
    delivery.deliver(alice, message("hi"))
    conn.cmd("s SELECT INBOX")
    peek = conn.cmd("a FETCH 1 (BODY.PEEK[TEXT])")
    assert "FLAGS" not in "".join(peek)
    out = conn.cmd("b FETCH 1 (BODY[TEXT])")
    assert out[0] == "* 1 FETCH (BODY[TEXT] {11}" and out[1:3] == ["Hi there.", " FLAGS (\\Seen \\Recent))"]
    assert conn.cmd("c FETCH 1 FLAGS")[0] == "* 1 FETCH (FLAGS (\\Seen \\Recent))"


def test_idle_reports_append_and_expunge_from_other_session(services, conn):
    """IDLE gets EXISTS for another session's APPEND and EXPUNGE for its expunge, at once."""
    other = Conn(services)
    other.login()
    conn.cmd("s SELECT INBOX")
    assert conn.cmd("i IDLE") == ["+ idling"]
    other.send(b"a APPEND INBOX {5+}\r\nhello\r\n")
    assert conn.read() == b"* 1 EXISTS\r\n* 1 RECENT\r\n"
    other.cmd("s SELECT INBOX")
    other.cmd("b STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert conn.read() == b"* 1 FETCH (FLAGS (\\Deleted \\Recent))\r\n"
    other.cmd("c EXPUNGE")
    assert conn.read() == b"* 1 EXPUNGE\r\n"
    assert conn.cmd("DONE") == ["i OK IDLE terminated"]


def test_idle_polls_the_store_for_changes_from_elsewhere(services, delivery, alice):
    """A change the notifier never announced (another process) reaches an IDLE session within the poll time."""
    from twisted.internet import task

    from schoolsuite.protocols.imap.protocol import IDLE_POLL_SECONDS
    from schoolsuite.storage import mail

    clock = task.Clock()
    c = Conn(services, clock=clock)
    c.login()
    c.cmd("s SELECT INBOX")
    assert c.cmd("i IDLE") == ["+ idling"]
    with services.store.write() as txn:  # straight into the store: no notification
        user = txn.user(alice)
        box = mail.find_mailbox(user, "INBOX")
        mail.append(user, box, message("elsewhere"))
        mail.save_mailbox(user, box)
    assert c.read() == b""
    clock.advance(IDLE_POLL_SECONDS)
    assert c.read().startswith(b"* 1 EXISTS\r\n")
    assert c.cmd("DONE") == ["i OK IDLE terminated"]
    assert not any("_poll" in repr(call) for call in clock.getDelayedCalls())


def test_metrics_count_commands_and_idle(conn):
    """Commands are counted by name and result, IDLE sessions are a gauge; no user name in any label."""
    from schoolsuite.metrics import REGISTRY

    def value(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0

    before_ok = value("schoolsuite_imap_commands_total", command="NOOP", result="ok")
    before_bad = value("schoolsuite_imap_commands_total", command="FETCH", result="bad")
    conn.cmd("a NOOP")
    conn.cmd("b FETCH 1 FLAGS")
    assert value("schoolsuite_imap_commands_total", command="NOOP", result="ok") == before_ok + 1
    assert value("schoolsuite_imap_commands_total", command="FETCH", result="bad") == before_bad + 1
    idle = value("schoolsuite_imap_idle_sessions")
    conn.cmd("s SELECT INBOX")
    conn.cmd("i IDLE")
    assert value("schoolsuite_imap_idle_sessions") == idle + 1
    conn.cmd("DONE")
    assert value("schoolsuite_imap_idle_sessions") == idle
    assert value("schoolsuite_imap_command_seconds_count", command="NOOP") >= 1
    exposition = b"".join(__import__("prometheus_client").generate_latest(REGISTRY).splitlines(True))
    assert b"alice" not in exposition
