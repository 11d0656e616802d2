"""Failed-login throttling: growing delay, then a block, per account and per client."""

from schoolsuite.services.throttle import Throttle, client_key


def make() -> Throttle:
    return Throttle(delay_after=3, delay_max=30, block_after_account=10, block_after_client=30, block_seconds=900)


def test_no_delay_before_threshold():
    """Fewer failures than delay_after are answered at once."""
    t = make()
    for _ in range(2):
        t.failure("a@x.org", "192.0.2.1", 0)
    assert t.verdict("a@x.org", "192.0.2.1", 1) == (False, 0.0, 0.0) or not t.verdict("a@x.org", "192.0.2.1", 1).delay


def test_delay_doubles_up_to_max():
    """From the threshold on, the delay doubles and is capped at delay_max."""
    t = make()
    delays = []
    for i in range(9):
        t.failure("a@x.org", "192.0.2.1", i)
        delays.append(t.verdict("a@x.org", "192.0.2.1", i).delay)
    assert delays[:2] == [0, 0]
    assert delays[2:7] == [1, 2, 4, 8, 16]
    assert delays[7] == 30 and delays[8] == 30


def test_account_blocked_after_limit_from_any_client():
    """block_after_account failures block the account whatever client tries next."""
    t = make()
    for i in range(10):
        t.failure("a@x.org", f"192.0.2.{i}", i)
    v = t.verdict("a@x.org", "198.51.100.7", 20)
    assert v.blocked and 0 < v.retry_after <= 900
    assert not t.verdict("b@x.org", "198.51.100.7", 20).blocked


def test_client_blocked_across_accounts():
    """A client guessing across many accounts is blocked after block_after_client failures."""
    t = make()
    for i in range(30):
        t.failure(f"user{i}@x.org", "203.0.113.9", i)
    assert t.verdict("fresh@x.org", "203.0.113.9", 40).blocked
    assert not t.verdict("fresh@x.org", "203.0.113.10", 40).blocked


def test_block_expires():
    """A block ends block_seconds after the last failure."""
    t = make()
    for i in range(10):
        t.failure("a@x.org", "192.0.2.1", i)
    assert t.verdict("a@x.org", "192.0.2.1", 500).blocked
    assert not t.verdict("a@x.org", "192.0.2.1", 9 + 901).blocked


def test_success_clears_account_and_halves_client():
    """A success clears the account's failures and halves (not wipes) the client's."""
    t = make()
    for i in range(8):
        t.failure("a@x.org", "192.0.2.1", i)
    t.success("a@x.org", "192.0.2.1")
    assert t.verdict("a@x.org", "192.0.2.5", 9).delay == 0
    assert t.verdict("other@x.org", "192.0.2.1", 9).delay == 2  # client kept 4 failures


def test_ipv6_counts_per_64():
    """IPv6 clients of one /64 share one count; IPv4-mapped addresses count as IPv4."""
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"


def test_memory_is_bounded():
    """The table never grows past max_entries."""
    t = Throttle(max_entries=100)
    for i in range(1000):
        t.failure(f"u{i}@x.org", f"10.0.{i // 250}.{i % 250}", 0)
    assert len(t._entries) <= 100
