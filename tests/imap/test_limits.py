"""Limits and bad input: each refused the RFC way, the connection staying usable, no traceback."""

from __future__ import annotations

import zlib

from twisted.internet import task

from schoolsuite.protocols.imap.protocol import IMAPFactory, ImapLimits
from schoolsuite.storage import mail

from imap_helpers import Conn, message


def test_line_too_long_is_bad_and_connection_survives(services):
    """A 70 KiB line gets BAD; the next command is answered normally."""
    c = Conn(services, limits=ImapLimits(max_line=64 * 1024))
    out = c.send(b"a NOOP " + b"x" * (70 * 1024) + b"\r\n")
    assert out.endswith(b"BAD Line too long\r\n")
    assert c.cmd("b NOOP") == ["b OK NOOP completed"]


def test_line_too_long_arriving_in_pieces(services):
    """An over-long line split over many packets is dropped as it arrives, then BAD at its end."""
    c = Conn(services, limits=ImapLimits(max_line=1024))
    for _ in range(10):
        assert c.send(b"y" * 500) == b""
    assert c.send(b"\r\n") == b"* BAD Line too long\r\n"
    assert c.cmd("b NOOP") == ["b OK NOOP completed"]


def test_append_too_big_refused_before_continuation(conn):
    """A synchronizing literal above APPENDLIMIT gets NO [TOOBIG] instead of '+'."""
    limit = ImapLimits().max_message_size
    assert conn.send(b"a APPEND INBOX {%d}\r\n" % (limit + 1)) == b"a NO [TOOBIG] Literal too large\r\n"
    assert conn.cmd("b NOOP") == ["b OK NOOP completed"]


def test_nonsync_literal_too_big_is_swallowed(services):
    """A LITERAL+ literal above the limit is read and dropped, then NO [TOOBIG]; the stream stays in sync."""
    c = Conn(services, limits=ImapLimits(max_message_size=100))
    c.login()
    out = c.send(b"a APPEND INBOX {150+}\r\n" + b"z" * 150 + b"\r\n")
    assert out == b"a NO [TOOBIG] Literal too large\r\n"
    assert c.cmd("b NOOP") == ["b OK NOOP completed"]


def test_unauthenticated_commands_refused(services):
    """Commands of the authenticated state are BAD before login."""
    c = Conn(services)
    assert c.cmd("a SELECT INBOX") == ["a BAD Not authenticated"]
    assert c.cmd("b FETCH 1 FLAGS") == ["b BAD Not authenticated"]
    assert c.cmd("c LOGOUT")[-1] == "c OK LOGOUT completed"


def test_selected_state_required(conn):
    """FETCH without a selected mailbox is BAD."""
    assert conn.cmd("a FETCH 1 FLAGS") == ["a BAD No mailbox selected"]


def test_bad_sequence_sets(conn, delivery, alice):
    """Sequence number 0, beyond the mailbox, or garbage is BAD; UID sets beyond are just empty."""
    delivery.deliver(alice, message())
    conn.cmd("s SELECT INBOX")
    assert conn.cmd("a FETCH 0 FLAGS")[-1].startswith("a BAD")
    assert conn.cmd("b FETCH 2 FLAGS") == ["b BAD Invalid message sequence number"]
    assert conn.cmd("c FETCH 1:x FLAGS")[-1].startswith("c BAD")
    assert conn.cmd("d UID FETCH 5:9 FLAGS") == ["d OK UID FETCH completed"]


def test_response_codes(conn):
    """CANNOT for deleting INBOX, NONEXISTENT for unknown mailboxes, ALREADYEXISTS for CREATE."""
    assert conn.cmd("a DELETE INBOX") == ["a NO [CANNOT] INBOX cannot be deleted"]
    assert conn.cmd("b DELETE Nope") == ["b NO [NONEXISTENT] Mailbox does not exist"]
    assert conn.cmd("c CREATE Sent") == ["c NO [ALREADYEXISTS] Mailbox already exists"]
    assert conn.cmd("d STATUS Nope (MESSAGES)") == ["d NO [NONEXISTENT] Mailbox does not exist"]
    conn.cmd("s SELECT INBOX")
    assert conn.cmd("e COPY 1:* Nope") == ["e NO [TRYCREATE] Mailbox does not exist"]


def test_keyword_limit_is_limit(conn, delivery, alice):
    """A keyword beyond the account's table gets NO [LIMIT]."""
    delivery.deliver(alice, message())
    conn.cmd("s SELECT INBOX")
    words = " ".join(f"k{i}" for i in range(mail.MAX_KEYWORDS))
    assert conn.cmd(f"a STORE 1 +FLAGS.SILENT ({words})")[-1] == "a OK STORE completed"
    assert conn.cmd("b STORE 1 +FLAGS (extra)") == ["b NO [LIMIT] Too many keywords"]


def test_overquota_append_and_copy(services, delivery, bob):
    """APPEND or COPY beyond the account's quota gets NO [OVERQUOTA] (RFC 9208 §4.4)."""
    c = Conn(services)
    c.login("bob@school.example")
    body = b"Subject: q\r\n\r\n" + b"x" * 1200
    assert c.send(b"a APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n").startswith(b"a OK [APPENDUID")
    out = c.send(b"b APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n")
    assert out == b"b NO [OVERQUOTA] Quota exceeded\r\n"
    c.cmd("s SELECT INBOX")
    assert c.cmd("c COPY 1 Archive") == ["c NO [OVERQUOTA] Quota exceeded"]
    quota = c.cmd('d GETQUOTAROOT INBOX')
    assert quota[0] == '* QUOTAROOT "INBOX" ""' and quota[1] == '* QUOTA "" (STORAGE 2 1)'


def test_connections_per_client_capped(services):
    """Beyond max_connections_per_client the greeting is BYE [UNAVAILABLE]."""
    factory = IMAPFactory(services, ImapLimits(max_connections_per_client=2), implicit_tls=True)
    first, second = Conn(services, factory=factory), Conn(services, factory=factory)
    third = Conn(services, factory=factory)
    assert first.greeting.startswith(b"* OK") and second.greeting.startswith(b"* OK")
    assert third.greeting.startswith(b"* BYE [UNAVAILABLE]") and third.closed
    first.proto.connectionLost(None)
    assert Conn(services, factory=factory).greeting.startswith(b"* OK")


def test_connections_per_account_capped(services):
    """Beyond max_connections_per_account a login gets NO [LIMIT]."""
    limits = ImapLimits(max_connections_per_account=2)
    for _ in range(2):
        Conn(services, limits=limits).login()
    extra = Conn(services, limits=limits)
    assert extra.cmd('a LOGIN alice@school.example "correct horse battery"') == [
        "a NO [LIMIT] Too many connections for this account"]


def test_idle_client_logged_out(services):
    """A client silent for the autologout time gets BYE and is disconnected."""
    clock = task.Clock()
    c = Conn(services, limits=ImapLimits(autologout_seconds=1800, preauth_seconds=60), clock=clock)
    c.login()
    clock.advance(1799)
    assert not c.closed
    clock.advance(2)
    assert c.read() == b"* BYE Autologout; idle for too long\r\n" and c.closed


def test_malformed_message_stored_as_given(conn):
    """A message without header/body separator or boundary is stored byte for byte and has a BODYSTRUCTURE."""
    junk = b"Content-Type: multipart/mixed; boundary=\"nope\"\r\nno blank line, no parts \xff\x01"
    conn.send(b"a APPEND INBOX {%d+}\r\n" % len(junk) + junk + b"\r\n")
    conn.cmd("s SELECT INBOX")
    out = conn.send(b"b FETCH 1 (BODY.PEEK[] BODYSTRUCTURE)\r\n")
    assert b"{%d}\r\n" % len(junk) + junk in out
    assert b"BODYSTRUCTURE ((" in out and out.endswith(b"b OK FETCH completed\r\n")


def test_server_fault_has_no_traceback(conn, monkeypatch):
    """An internal error reaches the client as NO [SERVERBUG] with an incident id, never a traceback."""
    def broken(*args, **kwargs):
        raise RuntimeError("/secret/path exploded")

    monkeypatch.setattr(mail, "load_index", broken)
    reply = conn.cmd("a SELECT INBOX")
    assert len(reply) == 1 and reply[0].startswith("a NO [SERVERBUG] Internal error (incident ")
    assert "secret" not in reply[0] and "Traceback" not in reply[0]
    assert conn.cmd("b NOOP") == ["b OK NOOP completed"]


def test_compress_deflate(conn):
    """COMPRESS DEFLATE: after the OK both directions are raw DEFLATE (RFC 4978)."""
    assert conn.cmd("z COMPRESS DEFLATE") == ["z OK DEFLATE active"]
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    inflate = zlib.decompressobj(-15)
    out = conn.send(deflate.compress(b"a NOOP\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
    assert inflate.decompress(out) == b"a OK NOOP completed\r\n"
    out = conn.send(deflate.compress(b"b COMPRESS DEFLATE\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
    assert inflate.decompress(out) == b"b NO [COMPRESSIONACTIVE] Compression is already active\r\n"


def test_star_range_in_empty_mailbox_is_empty(conn):
    """FETCH 1:* in an empty mailbox is OK with nothing, while FETCH 1 is BAD."""
    conn.cmd("s SELECT INBOX")
    assert conn.cmd("a FETCH 1:* (FLAGS)") == ["a OK FETCH completed"]
    assert conn.cmd("b FETCH 1 (FLAGS)") == ["b BAD Invalid message sequence number"]
