"""[imap] max_buffered: literal bytes all connections together hold while they arrive; beyond it NO [UNAVAILABLE]."""

from __future__ import annotations

from imap_helpers import Conn, message
from schoolsuite.protocols.imap.protocol import IMAPFactory, ImapLimits

BUSY = b" NO [UNAVAILABLE] Too much mail is being received now, try again later\r\n"


def _factory(services, budget: int) -> IMAPFactory:
    return IMAPFactory(services, ImapLimits(max_buffered=budget), implicit_tls=True)


def _logged_in(services, factory) -> Conn:
    c = Conn(services, factory=factory)
    c.login()
    return c


def test_a_literal_beyond_the_budget_waits_for_the_others(services):
    """While one session's 80 kB APPEND is arriving, another's 50 kB one is refused (budget 100 kB) before it
    is sent; once the first has arrived, the second is accepted and both messages are stored."""
    factory = _factory(services, 100_000)
    a, b = _logged_in(services, factory), _logged_in(services, factory)
    big = message("first", "x" * 79_000 + "\r\n")
    other = message("second", "y" * 49_000 + "\r\n")
    assert a.send(b"A APPEND INBOX {%d}\r\n" % len(big)) == b"+ Ready for literal data\r\n"
    a.send(big[:40_000])
    assert factory.budget.held == len(big)
    assert b.send(b"B APPEND INBOX {%d}\r\n" % len(other)) == b"B" + BUSY
    assert a.send(big[40_000:] + b"\r\n").startswith(b"A OK [APPENDUID")
    assert factory.budget.held == 0
    assert b.send(b"C APPEND INBOX {%d}\r\n" % len(other)) == b"+ Ready for literal data\r\n"
    assert b.send(other + b"\r\n").startswith(b"C OK [APPENDUID")
    assert "* 2 EXISTS" in b.cmd("S SELECT INBOX")


def test_a_connection_lost_mid_literal_gives_its_share_back(services):
    """A client that goes away in the middle of its literal frees what it had taken from the budget."""
    factory = _factory(services, 100_000)
    a, b = _logged_in(services, factory), _logged_in(services, factory)
    assert a.send(b"A APPEND INBOX {90000}\r\n") == b"+ Ready for literal data\r\n"
    a.send(b"z" * 10_000)
    a.proto.connectionLost(None)
    assert factory.budget.held == 0
    assert b.send(b"B APPEND INBOX {90000}\r\n") == b"+ Ready for literal data\r\n"


def test_a_non_synchronizing_literal_beyond_the_budget_is_read_and_dropped(services):
    """{n+} (LITERAL+, the client does not wait): over the budget it is read and dropped, NO [UNAVAILABLE], and
    the connection stays in step for the next command."""
    factory = _factory(services, 10_000)
    c = _logged_in(services, factory)
    body = message("plus", "p" * 20_000 + "\r\n")
    out = c.send(b"A APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\nN NOOP\r\n")
    assert out == b"A" + BUSY + b"N OK NOOP completed\r\n"
    assert factory.budget.held == 0


def test_refused_literals_take_nothing_from_the_budget(services):
    """A literal refused for its size (TOOBIG) neither takes nor gives back budget: the count stays exact."""
    factory = IMAPFactory(services, ImapLimits(max_buffered=100_000, max_message_size=1_000), implicit_tls=True)
    c = _logged_in(services, factory)
    assert c.send(b"A APPEND INBOX {5000}\r\n").startswith(b"A NO [TOOBIG]")
    assert factory.budget.held == 0
    assert c.send(b"B APPEND INBOX {500}\r\n") == b"+ Ready for literal data\r\n"
    assert factory.budget.held == 500


def test_the_listeners_of_one_server_share_one_budget(services):
    """imap (143) and imaps (993) of one server draw from one [imap] max_buffered; another server has its own."""
    from types import SimpleNamespace

    from schoolsuite.config import Config
    from schoolsuite.protocols import imap

    config = Config()
    config.imap.max_buffered = 12345
    ctx = SimpleNamespace(services=services, config=config)
    first, again = imap._budget(ctx), imap._budget(ctx)
    assert first is again and first.limit == 12345
    assert imap._budget(SimpleNamespace(services=SimpleNamespace(), config=config)) is not first
