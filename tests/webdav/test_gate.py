"""The /files/ body gate (gate.py) decides from the headers alone: TLS, credentials, owner, size, quota."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet import defer
from twisted.web.http_headers import Headers

import schoolsuite.protocols.webdav  # noqa: F401  (file-space initializer)
from schoolsuite.protocols.http.body import Accept, Reject, RequestHead
from schoolsuite.protocols.webdav.gate import FilesGate
from schoolsuite.services.accounts import AccountService
from schoolsuite.services.auth import AuthFailed, Principal
from schoolsuite.storage import Store


class FakeAuth:
    def __init__(self, store: Store) -> None:
        self.store, self.calls = store, 0

    def authenticate(self, address: str, secret: str, client: str, protocol: str) -> defer.Deferred:
        self.calls += 1
        from schoolsuite.storage.accounts import find_account

        with self.store.read() as txn:
            account = find_account(txn, address)
        if account is None or secret != "pw" or not account.active:
            return defer.fail(AuthFailed("failed"))
        return defer.succeed(Principal(account.id, account.address, "password"))


class FakeServices:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.auth = FakeAuth(store)
        self.sessions = None


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[FilesGate]:
    store = Store.open(tmp_path / "data", os.urandom(32), map_size=1 << 28)
    accounts = AccountService(store)
    accounts.add("ann@school.example", "a long enough password")
    accounts.add("ben@school.example", "a long enough password", quota=1000)
    yield FilesGate(FakeServices(store), max_upload=5000, auth_cache_seconds=60)
    store.close()


def head(method: bytes, path: bytes, user: str | None = "ann@school.example", length: int | None = 0,
         secure: bool = True) -> RequestHead:
    headers = Headers()
    if user is not None:
        headers.addRawHeader(b"authorization", b"Basic " + base64.b64encode(f"{user}:pw".encode()))
    return RequestHead(method, path, headers, length, "127.0.0.1", secure)


def decide(gate: FilesGate, h: RequestHead):  # type: ignore[no-untyped-def]
    box: list = []
    defer.maybeDeferred(gate, h).addBoth(box.append)
    return box[0]


def test_tls_only(gate: FilesGate) -> None:
    """Without TLS, 403 whatever the credentials (Basic over TLS only)."""
    r = decide(gate, head(b"PROPFIND", b"/files/ann@school.example/", secure=False))
    assert isinstance(r, Reject) and r.status == 403


def test_accepts_own_home_streams_put(gate: FilesGate, monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner's PUT is accepted with the upload limit, streamed unless small; other methods get the XML limit."""
    from schoolsuite.protocols.webdav import gate as gate_module

    monkeypatch.setattr(gate_module, "SMALL_PUT", 100)
    r = decide(gate, head(b"PUT", b"/files/ann@school.example/f", length=1000))
    assert isinstance(r, Accept) and r.stream and r.max_body == 5000
    assert r.context["files"].address == "ann@school.example"
    r = decide(gate, head(b"PUT", b"/files/ann@school.example/f", length=None))  # chunked: size unknown
    assert isinstance(r, Accept) and r.stream
    r = decide(gate, head(b"PUT", b"/files/ann@school.example/f", length=10))  # small: read whole first
    assert isinstance(r, Accept) and not r.stream and r.max_body == 5000
    r = decide(gate, head(b"PROPPATCH", b"/files/ann@school.example/f", length=10))
    assert isinstance(r, Accept) and not r.stream


def test_other_home_403(gate: FilesGate) -> None:
    """Another user's home is 403 even with valid credentials."""
    r = decide(gate, head(b"GET", b"/files/ben@school.example/x"))
    assert isinstance(r, Reject) and r.status == 403


def test_bad_credentials_401_and_anonymous_options(gate: FilesGate) -> None:
    """No or bad credentials: 401 with a Basic challenge; OPTIONS without credentials is let through."""
    assert decide(gate, head(b"GET", b"/files/ann@school.example/", user=None)).status == 401
    h = head(b"GET", b"/files/ann@school.example/")
    h.headers.setRawHeaders(b"authorization", [b"Basic " + base64.b64encode(b"ann@school.example:no")])
    r = decide(gate, h)
    assert r.status == 401 and any(k == b"WWW-Authenticate" for k, _ in r.headers)
    r = decide(gate, head(b"OPTIONS", b"/files/", user=None))
    assert isinstance(r, Accept) and r.context["files"] is None


def test_size_and_quota(gate: FilesGate) -> None:
    """413 above the upload limit; 507 above the quota; both before any body."""
    assert decide(gate, head(b"PUT", b"/files/ann@school.example/f", length=6000)).status == 413
    assert decide(gate, head(b"PUT", b"/files/ben@school.example/f", user="ben@school.example",
                              length=2000)).status == 507
    assert isinstance(decide(gate, head(b"PUT", b"/files/ben@school.example/f", user="ben@school.example",
                                        length=900)), Accept)


def test_credentials_cached(gate: FilesGate) -> None:
    """A repeated Authorization header is not verified again (no argon2 per request)."""
    for _ in range(5):
        decide(gate, head(b"GET", b"/files/ann@school.example/"))
    assert gate._services.auth.calls == 1


def test_traversal_400_before_auth(gate: FilesGate) -> None:
    """A traversing path is 400 before credentials are even looked at."""
    r = decide(gate, head(b"GET", b"/files/ann@school.example/%2e%2e/ben@school.example/", user=None))
    assert r.status == 400 and gate._services.auth.calls == 0


def test_disabled_account_not_served_from_cache(gate: FilesGate, tmp_path: Path) -> None:
    """A cached login stops working as soon as the account is disabled (even by another process)."""
    assert isinstance(decide(gate, head(b"GET", b"/files/ann@school.example/")), Accept)
    AccountService(gate._store).set_active("ann@school.example", False)
    r = decide(gate, head(b"GET", b"/files/ann@school.example/"))
    assert isinstance(r, Reject) and r.status == 401
    assert gate._services.auth.calls == 2  # the cached login was dropped and checked again
