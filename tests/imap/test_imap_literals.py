"""Non-synchronizing literals (RFC 7888): LITERAL- before login, LITERAL+ after it, and no ``{n-}`` form."""

from __future__ import annotations

from schoolsuite.protocols.imap.protocol import ImapLimits

from imap_helpers import Conn, message

PASSWORD = "correct horse battery"


def _caps(line: str) -> list[str]:
    inner = line.split("[CAPABILITY ", 1)[1].split("]", 1)[0]
    return inner.split()


def test_literal_minus_advertised_before_login_literal_plus_after(services):
    """The greeting and CAPABILITY offer LITERAL- only; the LOGIN OK and CAPABILITY then offer LITERAL+ only."""
    c = Conn(services)
    before = _caps(c.greeting.decode())
    assert "LITERAL-" in before and "LITERAL+" not in before
    assert "LITERAL-" in c.cmd("a CAPABILITY")[0].split() and "LITERAL+" not in c.cmd("b CAPABILITY")[0].split()
    after = _caps(c.cmd(f'l LOGIN alice@school.example "{PASSWORD}"')[-1])
    assert "LITERAL+" in after and "LITERAL-" not in after
    line = c.cmd("c CAPABILITY")[0].split()
    assert "LITERAL+" in line and "LITERAL-" not in line


def test_nonsync_literal_of_4096_octets_accepted_before_login(services):
    """Under LITERAL- a {4096+} literal is taken without a continuation request (RFC 7888 §5 limit inclusive)."""
    c = Conn(services)
    out = c.send(b'a ID ("name" {4096+}\r\n' + b"n" * 4096 + b")\r\n")
    assert out.startswith(b"* ID (") and out.endswith(b"a OK ID completed\r\n")
    assert b"+ " not in out
    assert c.cmd("b NOOP") == ["b OK NOOP completed"]


def test_nonsync_literal_over_4096_refused_before_login(services):
    """A {4097+} literal before login gets BAD [TOOBIG], is read and dropped, and the stream stays in sync."""
    c = Conn(services)
    out = c.send(b"a LOGIN {4097+}\r\n" + b"u" * 4097 + b' "pw"\r\n')
    assert out == b"a BAD [TOOBIG] Non-synchronizing literal over 4096 octets (LITERAL-)\r\n"
    assert not c.closed
    assert c.cmd("b NOOP") == ["b OK NOOP completed"]
    assert c.cmd(f'c LOGIN alice@school.example "{PASSWORD}"')[-1].startswith("c OK")


def test_nonsync_literal_over_4096_refused_in_pieces(services):
    """The refusal holds when the literal arrives in several packets, and nothing of it runs as a command."""
    c = Conn(services)
    assert c.send(b"a LOGIN {5000+}\r\n") == b""
    for _ in range(5):
        assert c.send(b"x NOOP\r\n" + b"z" * 992) == b""
    out = c.send(b" pw\r\n")
    assert out == b"a BAD [TOOBIG] Non-synchronizing literal over 4096 octets (LITERAL-)\r\n"
    assert c.cmd("b NOOP") == ["b OK NOOP completed"]


def test_huge_nonsync_literal_before_login_hangs_up(services):
    """A non-synchronizing literal larger than any literal allowed before login gets BAD [TOOBIG] then BYE."""
    c = Conn(services, limits=ImapLimits(max_literal=64 * 1024))
    out = c.send(b"a LOGIN {999999999+}\r\n" + b"u" * 1000)
    assert out == (b"a BAD [TOOBIG] Non-synchronizing literal over 4096 octets (LITERAL-)\r\n"
                   b"* BYE Literal too large\r\n")
    assert c.closed


def test_sync_literal_over_4096_fine_before_login(services):
    """A synchronizing literal over 4096 octets before login is unaffected by LITERAL- (it gets '+')."""
    c = Conn(services)
    assert c.send(b"a ID (\"name\" {5000}\r\n") == b"+ Ready for literal data\r\n"
    out = c.send(b"n" * 5000 + b")\r\n")
    assert out.endswith(b"a OK ID completed\r\n")


def test_nonsync_literal_over_4096_accepted_after_login(conn):
    """After login LITERAL+ is in effect: a {5000+} APPEND is stored without a continuation request."""
    data = message("big", "x" * 5000 + "\r\n")
    out = conn.send(b"a APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
    assert out.startswith(b"a OK [APPENDUID ") and b"+ " not in out
    assert conn.cmd("s SELECT INBOX")[2] == "* 1 EXISTS"
    fetched = conn.cmd("f FETCH 1 RFC822.SIZE")[0]
    assert fetched == f"* 1 FETCH (RFC822.SIZE {len(data)})"


def test_literal_plus_still_in_effect_under_imap4rev2(conn):
    """ENABLE IMAP4rev2 does not bring back the 4096 limit: LITERAL+ is advertised (RFC 9051 §4.3 'unless an
    extension says otherwise')."""
    conn.cmd("e ENABLE IMAP4rev2")
    data = message("rev2", "y" * 6000 + "\r\n")
    out = conn.send(b"a APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
    assert out.startswith(b"a OK [APPENDUID ")


def test_minus_form_is_not_a_literal(services):
    """``{5-}`` is no literal syntax (RFC 7888 §8): BAD at once, no continuation, its bytes never become a LOGIN."""
    c = Conn(services)
    out = c.send(b"a LOGIN {5-}\r\n")
    assert out.startswith(b"a BAD") and b"+ " not in out
    assert c.cmd("b NOOP") == ["b OK NOOP completed"]
    assert not c.proto.session.authenticated
