"""The authentication service: results, constant work, throttling, logs and metrics."""

import pytest
from twisted.logger import globalLogPublisher

from schoolsuite import metrics
from schoolsuite.services.auth import AuthFailed, Principal
from schoolsuite.services.cred import ClientCredentials, IAccount, LoginRefused, SchoolsuiteRealm, make_portal
from schoolsuite.storage import accounts as directory

from svc_helpers import PASSWORD, result_of


@pytest.fixture
def ana(accounts):
    return accounts.add("ana@school.example", PASSWORD, name="Ana")


def login(auth, address, secret, client="192.0.2.1", protocol="imap"):
    return auth.authenticate(address, secret, client, protocol)


def test_password_ok(auth, ana):
    """The right password gives a Principal for the canonical address."""
    p = result_of(login(auth, "ANA@school.example", PASSWORD))
    assert isinstance(p, Principal) and p.address == "ana@school.example" and p.method == "password"


def test_wrong_password_and_unknown_user_fail_alike(auth, ana, verifications):
    """Wrong password and unknown user both fail as 'failed' after exactly one verification each."""
    for address, secret in (("ana@school.example", "wrong password!"), ("nobody@school.example", PASSWORD),
                            ("not an address", PASSWORD)):
        before = verifications.calls
        with pytest.raises(AuthFailed) as e:
            result_of(login(auth, address, secret, client=f"198.51.100.{before}"))
        assert e.value.reason == "failed"
        assert verifications.calls - before == 1


def test_success_costs_one_verification_then_is_cached(auth, ana, verifications):
    """A correct login costs one argon2 verification; a repeat within the TTL costs none."""
    result_of(login(auth, "ana@school.example", PASSWORD))
    assert verifications.calls == 1
    result_of(login(auth, "ana@school.example", PASSWORD))
    assert verifications.calls == 1
    auth.forget_cached()
    result_of(login(auth, "ana@school.example", PASSWORD))
    assert verifications.calls == 2


def test_app_password_costs_one_verification(auth, accounts, ana, verifications):
    """An app password logs in, checked against its own hash only (one verification)."""
    for label in ("laptop", "tablet", "phone"):
        secret = accounts.add_app_password("ana@school.example", label)
    before = verifications.calls
    p = result_of(login(auth, "ana@school.example", secret))
    assert (p.method, p.label) == ("app-password", "phone")
    assert verifications.calls - before == 1


def test_deleted_app_password_refused(auth, accounts, ana):
    """A deleted app password no longer logs in."""
    secret = accounts.add_app_password("ana@school.example", "phone")
    accounts.delete_app_password("ana@school.example", "phone")
    auth.forget_cached()
    with pytest.raises(AuthFailed):
        result_of(login(auth, "ana@school.example", secret))


def test_delay_then_block(auth, ana, clock):
    """After 3 failures answers are delayed; after 6 the account is blocked, even for the right password."""
    for i in range(3):
        with pytest.raises(AuthFailed):
            result_of(login(auth, "ana@school.example", f"wrong {i} password"))
    d = login(auth, "ana@school.example", "wrong again password")
    box = []
    d.addBoth(box.append)
    assert box == []  # held back
    clock.advance(1)
    assert box and box[0].check(AuthFailed) and box[0].value.reason == "throttled"
    for _ in range(2):
        d = login(auth, "ana@school.example", "wrong once more!")
        d.addErrback(lambda f: None)
        clock.advance(60)
    with pytest.raises(AuthFailed) as e:
        result_of(login(auth, "ana@school.example", PASSWORD))
    assert e.value.reason == "blocked" and e.value.retry_after > 0


def test_disabled_account_refused(auth, ana, store):
    """A deactivated account cannot log in, even with the right password."""
    with store.write() as txn:
        account = directory.get_account(txn, ana_id(store))
        account.active = False
        directory.update_account(txn, account)
    with pytest.raises(AuthFailed) as e:
        result_of(login(auth, "ana@school.example", PASSWORD))
    assert e.value.reason == "disabled"


def ana_id(store):
    with store.read() as txn:
        return directory.find_account_id(txn, "ana@school.example")


def test_log_events_never_hold_the_secret(auth, ana):
    """Each attempt is logged with user, client and protocol, never the secret."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        result_of(login(auth, "ana@school.example", PASSWORD))
        with pytest.raises(AuthFailed):
            result_of(login(auth, "ana@school.example", "Wr0ng-Secret-XYZ"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    ours = [e for e in events if e.get("log_namespace") == "schoolsuite.auth"]
    assert [e["result"] for e in ours] == ["ok", "failed"]
    assert all(e["user"] == "ana@school.example" and e["protocol"] == "imap" for e in ours)
    flat = repr(ours)
    assert PASSWORD not in flat and "Wr0ng-Secret-XYZ" not in flat


def test_metrics_count_by_protocol_and_result(auth, ana):
    """Attempts are counted by protocol and result, with no user label."""
    def value(result):
        return metrics.REGISTRY.get_sample_value("schoolsuite_auth_attempts_total",
                                                 {"protocol": "smtp", "result": result}) or 0
    ok, failed = value("ok"), value("failed")
    result_of(login(auth, "ana@school.example", PASSWORD, protocol="smtp"))
    with pytest.raises(AuthFailed):
        result_of(login(auth, "ana@school.example", "nope nope nope", protocol="smtp"))
    assert (value("ok"), value("failed")) == (ok + 1, failed + 1)


def test_portal_login(auth, ana):
    """twisted.cred: the portal gives the avatar for the Principal, or LoginRefused."""
    realm = SchoolsuiteRealm()
    portal = make_portal(auth, realm)
    creds = ClientCredentials("ana@school.example", PASSWORD, "192.0.2.1", "imap")
    assert "correct horse" not in repr(creds)
    interface, avatar, logout = result_of(portal.login(creds, None, IAccount))
    assert interface is IAccount and avatar.address == "ana@school.example"
    bad = ClientCredentials("ana@school.example", b"wrong password", "192.0.2.1", "imap")
    with pytest.raises(LoginRefused):
        result_of(portal.login(bad, None, IAccount))


def test_cached_logins_are_not_logged_at_info(auth, ana):
    """A repeated login served from the cache (HTTP Basic on every request) logs at debug, not info."""
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        for _ in range(3):
            result_of(login(auth, "ana@school.example", PASSWORD, protocol="caldav"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    ours = [e for e in events if e.get("log_namespace") == "schoolsuite.auth"]
    assert [e["log_level"].name for e in ours] == ["info", "debug", "debug"]
