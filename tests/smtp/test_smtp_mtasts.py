"""MTA-STS for outbound mail (RFC 8461): discovery, fetch, cache and enforcement, all on loopback.

A DNS zone server, an HTTPS policy server with a test CA and aiosmtpd MX sinks
(with or without STARTTLS, with chosen certificates) run on 127.0.0.1; the
policy fetch reaches the HTTPS server through the zone's ``mta-sts.`` A
record and the test-only HTTPS port.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import formatEvent, globalLogPublisher

from mtasts_helpers import Answer, PolicyServer, CA, policy_text, sink
from schoolsuite.config import Config
from schoolsuite.metrics import REGISTRY
from schoolsuite.services import Delivery, MailNotifier  # registers the mailbox initializer
from schoolsuite.services.accounts import AccountService
from schoolsuite.services.clientsetup import mta_sts_policy
from schoolsuite.services.mtasts import MAX_AGE_LIMIT, MTASTS, Policy, mx_matches, parse_policy, parse_txt
from schoolsuite.services.outbound import Envelope, Route, transmit
from schoolsuite.services.queue import OutboundQueue, Schedule, list_queue
from schoolsuite.services.resolver import MailDNS, make_resolver
from schoolsuite.services.transport import MailTransport
from schoolsuite.storage import Store
from schoolsuite.storage import mtasts as records
from schoolsuite.storage.queue import QueueEntry, QueuedRecipient
from smtp_e2e import DNSServer
from support import free_port

MESSAGE = b"From: alice@school.example\r\nTo: pupil@x.example\r\nSubject: homework\r\n\r\nPage 12.\r\n"
DAY = 86400

# domain -> (MX hosts, TXT id or None, policy answer or None)
POLICIES: dict[str, tuple[list[str], str | None, Answer | None]] = {
    "enforce.example": (["mx.enforce.example"], "e1", Answer(body=policy_text("enforce", "*.enforce.example"))),
    "forged.example": (["mx.forged.example"], "f1", Answer(body=policy_text("enforce", "mail.forged.example"))),
    "mixed.example": (["rogue.mixed.example", "mx.mixed.example"], "m1",
                      Answer(body=policy_text("enforce", "mx.mixed.example"))),
    "notls.example": (["mx.notls.example"], "n1", Answer(body=policy_text("enforce", "mx.notls.example"))),
    "wrongcert.example": (["mx.wrongcert.example"], "w1",
                          Answer(body=policy_text("enforce", "mx.wrongcert.example"))),
    "testing.example": (["mx.testing.example"], "t1", Answer(body=policy_text("testing", "mx.testing.example"))),
    "testmx.example": (["mx.testmx.example"], "t2", Answer(body=policy_text("testing", "other.testmx.example"))),
    "rotate.example": (["mx.rotate.example"], "r1", Answer(body=policy_text("testing", "mx.rotate.example"))),
    "cached.example": (["mx.cached.example"], "c1",
                       Answer(body=policy_text("enforce", "mx.cached.example", max_age=1000))),
    "none.example": (["mx.none.example"], "z1", Answer(body=policy_text("none"))),
    "notxt.example": (["mx.notxt.example"], None, None),
    "badversion.example": (["mx.badversion.example"], "b1",
                           Answer(body=policy_text("enforce", "x.example").replace(b"STSv1", b"STSv2"))),
    "badmode.example": (["mx.badmode.example"], "b2", Answer(body=policy_text("enforced", "mx.badmode.example"))),
    "oversized.example": (["mx.oversized.example"], "b3",
                          Answer(body=policy_text("enforce", "mx.oversized.example") +
                                 b"".join(b"x-pad: " + b"a" * 90 + b"\r\n" for _ in range(800)))),
    "ctype.example": (["mx.ctype.example"], "b4", Answer(body=policy_text("enforce", "mx.ctype.example"),
                                                         headers={"Content-Type": "text/html"})),
    "redirect.example": (["mx.redirect.example"], "b5",
                         Answer(301, policy_text("enforce", "mx.redirect.example"), {"Location": "https://mta-sts.enforce.example/.well-known/mta-sts.txt",
                                           "Content-Type": "text/plain"})),
    "wrongname.example": (["mx.wrongname.example"], "b6",
                          Answer(body=policy_text("enforce", "mx.wrongname.example"))),
    "twotxt.example": (["mx.twotxt.example"], "b7", Answer(body=policy_text("enforce", "mx.twotxt.example"))),
}
INVALID = ["badversion.example", "badmode.example", "oversized.example", "ctype.example", "redirect.example",
           "wrongname.example", "twotxt.example"]
GOOD_MX = [hosts[-1] for d, (hosts, _, _) in POLICIES.items() if d != "wrongcert.example"]


def zones(rotate_id: str) -> dict[str, list[list[Any]]]:
    out: dict[str, list[list[Any]]] = {}
    for domain, (hosts, txt, _) in POLICIES.items():
        rows: list[list[Any]] = []
        for pref, host in enumerate(hosts):
            rows += [[domain, "MX", 10 * (pref + 1), host], [host, "A", "127.0.0.1"]]
        if txt is not None:
            rows.append([f"_mta-sts.{domain}", "TXT", f"v=STSv1; id={rotate_id if domain == 'rotate.example' else txt};"])
            rows.append([f"mta-sts.{domain}", "A", "127.0.0.1"])
        if domain == "twotxt.example":
            rows.append([f"_mta-sts.{domain}", "TXT", "v=STSv1; id=other;"])
        out[domain] = rows
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """Test CA, the HTTPS policy server, and two DNS servers (the second with a new id for rotate.example)."""
    tmp = tmp_path_factory.mktemp("mtasts")
    ca = CA(tmp)
    https_names = [f"mta-sts.{d}" for d in POLICIES if d != "wrongname.example"]
    server = PolicyServer(ca.server_context("https", *https_names))
    server.answers = {f"mta-sts.{d}": answer for d, (_, _, answer) in POLICIES.items() if answer is not None}
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    dns_a = DNSServer(tmp / "a", free_port(), zones("r1"))
    dns_b = DNSServer(tmp / "b", free_port(), zones("r2"))
    try:
        yield SimpleNamespace(ca=ca, https=server, dns_a=dns_a, dns_b=dns_b,
                              good_tls=ca.server_context("mx", *GOOD_MX),
                              wrong_tls=ca.server_context("wrong", "mx.other.example"))
    finally:
        server.stop()
        dns_a.stop()
        dns_b.stop()


def mail_dns(server: DNSServer) -> MailDNS:
    return MailDNS(make_resolver(f"127.0.0.1:{server.port}"))


class Clock:
    def __init__(self) -> None:
        self.t = 2_000_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def sts(world: SimpleNamespace, store: Store) -> MTASTS:
    """An MTASTS cache on the test store, fetching from the loopback policy server, with a fake clock."""
    return MTASTS(store, mail_dns(world.dns_a), cafile=str(world.ca.ca_file), https_port=world.https.port,
                  timeout=5, clock=Clock())


@pytest.fixture
def mx(world: SimpleNamespace, request: pytest.FixtureRequest) -> Iterator[Any]:
    """An MX sink on a free port: STARTTLS with the good certificate unless the test is marked otherwise."""
    kind = getattr(request, "param", "good")
    port = free_port()
    controller, handler = sink(port, {"good": world.good_tls, "wrong": world.wrong_tls, "none": None}[kind])
    handler.port = port
    yield handler
    controller.stop()


def route(world: SimpleNamespace, port: int) -> Route:
    return Route(outbound_port=port, hostname="mail.school.example", timeout=10,
                 mta_sts_ca_file=str(world.ca.ca_file))


def envelope(domain: str) -> Envelope:
    return Envelope("alice@school.example", ((f"pupil@{domain}", (), None),), len(MESSAGE), False, False, None, None)


def deliver(world: SimpleNamespace, sts: MTASTS, mx: Any, domain: str) -> Any:
    outcomes = transmit(route(world, mx.port), sts.dns, domain, envelope(domain), MESSAGE, sts.policy(domain))
    return outcomes[f"pupil@{domain}"]


def counted(mode: str, result: str) -> float:
    return REGISTRY.get_sample_value("schoolsuite_smtp_mta_sts_total", {"mode": mode, "result": result}) or 0.0


@pytest.fixture
def logged() -> Iterator[list[str]]:
    lines: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        if str(event.get("log_namespace", "")).startswith("schoolsuite"):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


# -- enforcement -----------------------------------------------------------------------


def test_enforce_valid_tls_delivers(world, sts, mx) -> None:  # type: ignore[no-untyped-def]
    """enforce: an MX matching the wildcard pattern with STARTTLS and a valid certificate gets the message."""
    before = counted("enforce", "valid")
    outcome = deliver(world, sts, mx, "enforce.example")
    assert outcome.delivered and outcome.remote == "mx.enforce.example"
    assert [m.data.endswith(b"Page 12.\r\n") for m in mx.messages] == [True]
    assert counted("enforce", "valid") == before + 1


def test_enforce_mx_not_in_policy_is_refused(world, sts, mx) -> None:  # type: ignore[no-untyped-def]
    """enforce: an MX host the policy does not name is never contacted; the outcome is 4.7.0, temporary."""
    before = counted("enforce", "mx_not_allowed")
    outcome = deliver(world, sts, mx, "forged.example")
    assert not outcome.delivered and not outcome.permanent and outcome.enhanced == "4.7.0"
    assert "MTA-STS" in outcome.text and mx.messages == []
    assert counted("enforce", "mx_not_allowed") == before + 1


def test_enforce_skips_forged_mx_and_uses_the_named_one(world, sts, mx) -> None:  # type: ignore[no-untyped-def]
    """enforce: of two MX hosts, the one not in the policy is skipped even though it is preferred."""
    outcome = deliver(world, sts, mx, "mixed.example")
    assert outcome.delivered and outcome.remote == "mx.mixed.example" and len(mx.messages) == 1


@pytest.mark.parametrize("mx", ["none"], indirect=True)
def test_enforce_without_starttls_is_refused(world, sts, mx) -> None:  # type: ignore[no-untyped-def]
    """enforce: an MX that offers no STARTTLS gets nothing (4.7.10), never plaintext."""
    outcome = deliver(world, sts, mx, "notls.example")
    assert outcome.enhanced == "4.7.10" and not outcome.permanent and mx.messages == []


@pytest.mark.parametrize("mx", ["wrong"], indirect=True)
def test_enforce_certificate_not_matching_is_refused(world, sts, mx) -> None:  # type: ignore[no-untyped-def]
    """enforce: a certificate (from a trusted CA) for another name is refused (4.7.5) before any mail is sent."""
    before = counted("enforce", "certificate_invalid")
    outcome = deliver(world, sts, mx, "wrongcert.example")
    assert outcome.enhanced == "4.7.5" and "not valid" in outcome.text and mx.messages == []
    assert counted("enforce", "certificate_invalid") == before + 1


def test_enforce_untrusted_ca_is_refused(world, store, mx) -> None:  # type: ignore[no-untyped-def]
    """enforce: with the system trust store (not the test CA) the MX certificate does not validate."""
    sts = MTASTS(store, mail_dns(world.dns_a), cafile=str(world.ca.ca_file), https_port=world.https.port)
    policy = sts.policy("enforce.example")
    plain = Route(outbound_port=mx.port, hostname="mail.school.example", timeout=10)
    outcome = transmit(plain, sts.dns, "enforce.example", envelope("enforce.example"), MESSAGE, policy)
    assert outcome["pupil@enforce.example"].enhanced == "4.7.5" and mx.messages == []


@pytest.mark.parametrize("mx", ["wrong"], indirect=True)
def test_testing_mode_delivers_and_logs(world, sts, mx, logged) -> None:  # type: ignore[no-untyped-def]
    """testing: a certificate that would fail is logged on one line without addresses, and the mail goes."""
    before = counted("testing", "certificate_invalid")
    outcome = deliver(world, sts, mx, "testing.example")
    assert outcome.delivered and len(mx.messages) == 1
    [line] = [x for x in logged if "MTA-STS testing" in x]
    assert "testing.example" in line and "mx.testing.example" in line and "\n" not in line and "@" not in line
    assert counted("testing", "certificate_invalid") == before + 1


@pytest.mark.parametrize("mx", ["none"], indirect=True)
def test_testing_mode_without_starttls_delivers_and_logs(world, sts, mx, logged) -> None:  # type: ignore[no-untyped-def]
    """testing: an MX without STARTTLS still gets the mail (in plaintext, as today); the refusal is logged."""
    before = counted("testing", "starttls_missing")
    assert deliver(world, sts, mx, "testing.example").delivered and len(mx.messages) == 1
    assert any("MTA-STS testing" in x and "does not offer STARTTLS" in x for x in logged)
    assert counted("testing", "starttls_missing") == before + 1


def test_testing_mode_mx_mismatch_delivers_and_logs(world, sts, mx, logged) -> None:  # type: ignore[no-untyped-def]
    """testing: an MX the policy does not name still gets the mail; the would-be refusal is logged."""
    outcome = deliver(world, sts, mx, "testmx.example")
    assert outcome.delivered and len(mx.messages) == 1
    assert any("MTA-STS testing" in x and "not a mail server the policy names" in x for x in logged)


@pytest.mark.parametrize("mx", ["none"], indirect=True)
def test_no_policy_and_mode_none_deliver_as_before(world, sts, mx) -> None:  # type: ignore[no-untyped-def]
    """No TXT record, or mode none: plaintext delivery to an MX without STARTTLS goes on as before."""
    assert sts.policy("notxt.example") is None
    assert sts.policy("none.example") == Policy("none", (), 86400)
    assert deliver(world, sts, mx, "notxt.example").delivered and deliver(world, sts, mx, "none.example").delivered


# -- discovery, fetch, cache ---------------------------------------------------------------


@pytest.mark.parametrize("domain", INVALID)
def test_invalid_policies_are_no_policy(world, sts, domain) -> None:  # type: ignore[no-untyped-def]
    """Bad version, bad mode, >64 KiB, not text/plain, a redirect, a wrong HTTPS certificate, two TXT records:
    no policy, and nothing is cached."""
    assert sts.policy(domain) is None and sts.cached(domain) is None
    with sts.store.read() as txn:
        assert records.get_policy(txn, domain) is None


def test_redirect_is_not_followed(world, sts) -> None:  # type: ignore[no-untyped-def]
    """RFC 8461 §3.3: the 301 to another (valid) policy host is not followed."""
    world.https.requests.clear()
    assert sts.policy("redirect.example") is None
    assert [h for h, _ in world.https.requests] == ["mta-sts.redirect.example"]


@pytest.mark.parametrize("mx", ["none"], indirect=True)
def test_fetch_failure_keeps_cached_policy_enforced(world, sts, mx) -> None:  # type: ignore[no-untyped-def]
    """Once cached, a policy is enforced when the refresh fetch fails, until max_age; then it is forgotten."""
    assert sts.policy("cached.example") == Policy("enforce", ("mx.cached.example",), 1000)
    world.https.answers["mta-sts.cached.example"] = Answer(503, b"blocked")
    try:
        sts.clock.t += 600  # past half the max_age: a refresh is tried, and fails
        world.https.requests.clear()
        outcome = deliver(world, sts, mx, "cached.example")
        assert ("mta-sts.cached.example", "/.well-known/mta-sts.txt") in world.https.requests
        assert outcome.enhanced == "4.7.10" and mx.messages == []
        sts.clock.t += 500  # max_age over: no policy any more (RFC 8461 §5.1)
        assert deliver(world, sts, mx, "cached.example").delivered
    finally:
        world.https.answers["mta-sts.cached.example"] = POLICIES["cached.example"][2]  # type: ignore[assignment]


def test_failed_fetch_is_not_retried_at_once(world, sts) -> None:  # type: ignore[no-untyped-def]
    """After a failed or invalid fetch the policy host is left alone for 5 minutes, then asked again."""
    world.https.requests.clear()
    for _ in range(3):
        assert sts.policy("ctype.example") is None
    assert len(world.https.requests) == 1
    sts.clock.t += 301
    assert sts.policy("ctype.example") is None and len(world.https.requests) == 2


def test_same_id_is_not_refetched_and_new_id_is(world, sts) -> None:  # type: ignore[no-untyped-def]
    """A TXT id equal to the cached one needs no fetch; a changed id (second DNS server) fetches again."""
    world.https.requests.clear()
    assert sts.policy("rotate.example").mode == "testing"
    assert sts.policy("rotate.example").mode == "testing"
    assert len(world.https.requests) == 1 and sts.cached("rotate.example").policy_id == "r1"
    world.https.answers["mta-sts.rotate.example"] = Answer(body=policy_text("enforce", "mx.rotate.example"))
    try:
        sts.dns = mail_dns(world.dns_b)
        assert sts.policy("rotate.example").mode == "enforce"
        assert len(world.https.requests) == 2 and sts.cached("rotate.example").policy_id == "r2"
    finally:
        world.https.answers["mta-sts.rotate.example"] = POLICIES["rotate.example"][2]  # type: ignore[assignment]


def test_cache_survives_store_reopen(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A fetched policy is in the store (sealed, key hashed); after a reopen it applies with the server gone."""
    key = os.urandom(32)
    store = Store.open(tmp_path / "s", key, map_size=1 << 28)
    try:
        first = MTASTS(store, mail_dns(world.dns_a), cafile=str(world.ca.ca_file), https_port=world.https.port)
        assert first.policy("enforce.example").mode == "enforce"
        with store.read() as txn:
            [(raw_key, stored)] = list(records.scan_policies(txn))
        assert b"enforce" not in raw_key and stored.domain == "enforce.example" and stored.policy_id == "e1"
    finally:
        store.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "s").iterdir() if p.is_file())
    assert b"enforce.example" not in raw
    store = Store.open(tmp_path / "s", key, map_size=1 << 28)
    try:
        dead_port = free_port()
        second = MTASTS(store, mail_dns(world.dns_a), cafile=str(world.ca.ca_file), https_port=dead_port)
        assert second.policy("enforce.example") == Policy("enforce", ("*.enforce.example",), 86400)
    finally:
        store.close()


def test_expired_records_are_purged(store) -> None:  # type: ignore[no-untyped-def]
    """purge_expired deletes only the policies whose max_age is over."""
    with store.write() as txn:
        records.put_policy(txn, records.StoredPolicy("old.example", "1", "enforce", ("mx.old.example",), 10, 100.0))
        records.put_policy(txn, records.StoredPolicy("new.example", "1", "testing", ("mx.new.example",), 10, 195.0))
        assert records.purge_expired(txn, 200.0) == 1
    with store.read() as txn:
        assert records.get_policy(txn, "old.example") is None and records.get_policy(txn, "new.example").mode == "testing"


def test_queue_keeps_refused_message_queued(world, store, mx) -> None:  # type: ignore[no-untyped-def]
    """Through the queue: an MX refused by policy leaves the recipient queued with 4.7.0 and no bounce yet."""
    accounts = AccountService(store)
    accounts.add("alice@school.example", "correct horse battery")
    alice = accounts.find_id("alice@school.example")
    sts = MTASTS(store, mail_dns(world.dns_a), cafile=str(world.ca.ca_file), https_port=world.https.port)
    reactor = SimpleNamespace(callFromThread=lambda fn, *a: fn(*a))
    q = OutboundQueue(store, None, reactor, route=route(world, mx.port), dns=sts.dns,  # type: ignore[arg-type]
                      schedule=Schedule(), delivery=lambda: Delivery(store, None, MailNotifier(reactor)),
                      mta_sts=sts)
    with store.write() as txn:
        entry = q.enqueue(txn, QueueEntry("", alice, "alice@school.example",
                                          [QueuedRecipient("pupil@forged.example")]), MESSAGE)
    outcomes = q._transmit("forged.example", envelope("forged.example"), MESSAGE)
    q._record(entry.id, alice, outcomes)
    [queued] = list_queue(store)
    [r] = queued.pending
    assert r.enhanced == "4.7.0" and "MTA-STS" in r.last_reply and r.attempts == 1 and mx.messages == []


def test_transport_switch(tmp_path: Path, store: Store) -> None:
    """[smtp] mta_sts on (the default) gives the queue an MTA-STS cache; off, or with a smarthost, none."""
    services = SimpleNamespace(store=store, writer=None, reactor=None, accounts=None)
    config = Config()
    config.smtp.dns_servers = "127.0.0.1:9"
    assert config.smtp.mta_sts is True
    assert MailTransport(services, config).queue.mta_sts is not None  # type: ignore[arg-type]
    config.smtp.mta_sts = False
    assert MailTransport(services, config).queue.mta_sts is None  # type: ignore[arg-type]
    config.smtp.mta_sts, config.smtp.smarthost = True, "relay.example:587"
    assert MailTransport(services, config).queue.mta_sts is None  # type: ignore[arg-type]


def test_transport_saves_policies_on_the_writer(world, store) -> None:  # type: ignore[no-untyped-def]
    """MailTransport's cache hands the store write to the writer (via the reactor) and the record lands."""
    jobs: list[Any] = []

    class Writer:
        def run(self, fn: Any) -> Any:
            jobs.append(fn)
            from twisted.internet import defer
            return defer.maybeDeferred(fn)

    reactor = SimpleNamespace(callFromThread=lambda fn, *a: fn(*a))
    config = Config()
    config.smtp.dns_servers = f"127.0.0.1:{world.dns_a.port}"
    transport = MailTransport(SimpleNamespace(store=store, writer=Writer(), reactor=reactor, accounts=None),
                              config)  # type: ignore[arg-type]
    sts = transport.mta_sts
    sts.https_port = world.https.port
    sts.context.load_verify_locations(cafile=str(world.ca.ca_file))
    assert sts.policy("enforce.example").mode == "enforce" and len(jobs) == 1
    with store.read() as txn:
        assert records.get_policy(txn, "enforce.example").policy_id == "e1"


def test_silent_policy_server_times_out(world, store) -> None:  # type: ignore[no-untyped-def]
    """A policy host that accepts the connection and never answers costs the timeout, then no policy."""
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    try:
        sts = MTASTS(store, mail_dns(world.dns_a), cafile=str(world.ca.ca_file),
                     https_port=listener.getsockname()[1], timeout=0.5)
        start = time.monotonic()
        assert sts.policy("enforce.example") is None
        assert time.monotonic() - start < 3
    finally:
        listener.close()


# -- parsers -------------------------------------------------------------------------------


@pytest.mark.parametrize("records_, expected", [
    ([b"v=STSv1; id=20240101T000000;"], "20240101T000000"),
    ([b"v=STSv1; id=abc123;"], "abc123"),
    ([b"v=STSv1;id=abc123"], "abc123"),
    ([b"v=STSv1; id=abc; ext_1=v.al"], "abc"),
    ([b"v=spf1 -all", b"v=STSv1; id=x1;"], "x1"),
    ([b"v=STSv1; id=a;", b"v=STSv1; id=b;"], None),
    ([], None),
    ([b"v=STSv1"], None),
    ([b"v=STSv1;"], None),
    ([b"v=STSv1; id=;"], None),
    ([b"v=STSv1; id=" + b"a" * 33], None),
    ([b"v=STSv1; id=a-b;"], None),
    ([b"v=STSv1; id=a; id=b;"], None),
    ([b"v=STSv1; id=a; junk"], None),
    ([b"v=STSv1; id=a; e=v=;"], None),
    ([b"v=STSv1; id=\xff;"], None),
    ([b"V=STSv1; id=a;"], None),
])
def test_txt_table(records_: list[bytes], expected: str | None) -> None:
    """TXT records (RFC 8461 §3.1): exactly one valid v=STSv1 record with one 1-32 alphanumeric id."""
    assert parse_txt(records_) == expected


@pytest.mark.parametrize("body, expected", [
    (b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.NET.\r\nmax_age: 604800\r\n",
     Policy("enforce", ("mail.example.com", "*.example.net"), 604800)),
    (b"version: STSv1\nmode: testing\nmx: a.example\nmax_age: 5\nfoo: bar", Policy("testing", ("a.example",), 5)),
    (b"version:STSv1\r\nmode:none\r\nmax_age:99999999999\r\n", None),  # 11 digits
    (b"version: STSv1\r\nmode: none\r\nmax_age: 9999999999\r\n", Policy("none", (), MAX_AGE_LIMIT)),
    (b"version: STSv1\r\nmode: enforce\r\nmode: none\r\nmx: a.example\r\nmax_age: 1\r\n",
     Policy("enforce", ("a.example",), 1)),  # first occurrence wins (§3.2)
    (b"version: STSv1\r\nmode: enforce\r\nmax_age: 1\r\n", None),  # enforce without mx
    (b"version: STSv1\r\nmode: Enforce\r\nmx: a.example\r\nmax_age: 1\r\n", None),
    (b"version: STSv2\r\nmode: enforce\r\nmx: a.example\r\nmax_age: 1\r\n", None),
    (b"mode: enforce\r\nmx: a.example\r\nmax_age: 1\r\n", None),
    (b"version: STSv1\r\nmode: enforce\r\nmx: a.example\r\n", None),
    (b"version: STSv1\r\nmode: enforce\r\nmx: a.example\r\nmax_age: -1\r\n", None),
    (b"version: STSv1\r\nmode: enforce\r\nmx: a.*.example\r\nmax_age: 1\r\n", None),
    (b"version: STSv1\r\nmode: enforce\r\nmx: *\r\nmax_age: 1\r\n", None),
    (b"version: STSv1\r\nmode: enforce\r\nmx: localhost\r\nmax_age: 1\r\n", None),
    (b"version: STSv1\r\nmode: enforce\r\nmx: a.example\r\nmax_age: 1\r\nno colon here\r\n", None),
    (b"\xff\xfe", None),
    (b"", None),
])
def test_policy_table(body: bytes, expected: Policy | None) -> None:
    """Policy bodies (RFC 8461 §3.2): required fields, first occurrence wins, max_age capped, bad input is None."""
    assert parse_policy(body) == expected


def test_our_own_published_policy_parses() -> None:
    """The policy schoolsuite serves for its own domain is one this parser accepts."""
    config = Config()
    assert parse_policy(mta_sts_policy(config).encode()) == Policy("enforce", ("mail.school.example",), 604800)


@pytest.mark.parametrize("pattern, host, expected", [
    ("mail.example.com", "mail.example.com", True),
    ("mail.example.com", "MAIL.example.com.", True),
    ("*.example.com", "mail.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "foo.bar.example.com", False),
    ("*.example.com", "mailexample.com", False),
    ("mail.example.com", "other.example.com", False),
    ("", "", False),
])
def test_mx_match_table(pattern: str, host: str, expected: bool) -> None:
    """MX patterns (RFC 8461 §4.1): exact names, and a wildcard for exactly one left-most label."""
    assert mx_matches(pattern, host) is expected


_TXT = st.one_of(st.binary(max_size=80), st.builds(lambda tail: b"v=STSv1;" + tail, st.binary(max_size=60)),
                 st.builds(lambda tail: b"v=STSv1; " + tail.encode(), st.text(max_size=60)))


@settings(max_examples=400, deadline=None)
@given(st.lists(_TXT, max_size=4))
def test_txt_never_raises(records_: list[bytes]) -> None:
    """Arbitrary TXT records give an id or None, never an exception; an id is 1-32 letters or digits."""
    found = parse_txt(records_)
    assert found is None or (found.isascii() and found.isalnum() and 1 <= len(found) <= 32)


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9]{1,32}", fullmatch=True), st.sampled_from(["", ";", " ;", "; ext=1;"]))
def test_txt_valid_ids_round_trip(policy_id: str, tail: str) -> None:
    """Every well-formed record yields its id."""
    assert parse_txt([f"v=STSv1; id={policy_id}{tail}".encode()]) == policy_id


_LINE = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"version: STSv1", b"mode: enforce", b"mode: testing", b"mode: none", b"max_age: 86400",
                     b"mx: mx.example.com", b"mx: *.example.com", b"mx: *.", b"max_age: 1e9", b":", b"mx:"]),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_LINE, max_size=8), st.sampled_from([b"\r\n", b"\n", b"\r"]))
def test_policy_never_raises(lines: list[bytes], sep: bytes) -> None:
    """Arbitrary policy bodies give a Policy or None, never an exception; a Policy is well formed."""
    policy = parse_policy(sep.join(lines))
    if policy is not None:
        assert policy.mode in ("enforce", "testing", "none") and 0 <= policy.max_age <= MAX_AGE_LIMIT
        assert policy.mode == "none" or policy.mx


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_mx_match_never_raises(pattern: str, host: str) -> None:
    """mx_matches answers a bool for any strings."""
    assert mx_matches(pattern, host) in (True, False)
