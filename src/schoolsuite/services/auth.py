"""The one authentication service every protocol uses.

``authenticate(address, secret, client_address, protocol)`` checks a password
or an app password with argon2id off the reactor thread, throttles failures
per account and per client address, answers a failure in the same time as a
success (an unknown address is checked against a dummy hash), logs one event
per attempt without the secret, and counts attempts by protocol and result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, task, threads
from twisted.logger import Logger

from .. import metrics
from ..storage import Store
from ..storage import accounts as directory
from ..storage.accounts import Account
from . import passwords
from .accounts import AccountError, normalize_address
from .throttle import Throttle

log = Logger(namespace="schoolsuite.auth")

# Concurrent argon2 verifications (each takes 64 MiB and 4 lanes).
MAX_CONCURRENT_VERIFICATIONS = 4


@dataclass(frozen=True)
class Principal:
    """Who logged in, and with which secret."""

    account_id: bytes
    address: str
    method: str  # "password" or "app-password"
    label: str = ""

    def __repr__(self) -> str:
        return f"Principal(address={self.address!r}, method={self.method!r}, label={self.label!r})"


class AuthFailed(Exception):
    """A refused login. ``reason`` is failed, throttled, blocked or disabled."""

    def __init__(self, reason: str, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class AuthService:
    """Checks credentials for every protocol."""

    def __init__(self, store: Store, throttle: Throttle, reactor, *, cache_ttl: float = 600.0,  # type: ignore[no-untyped-def]
                 run_in_thread: Callable[..., defer.Deferred[Any]] | None = None) -> None:
        self._store = store
        # argon2 runs on the reactor's thread pool (tests pass a synchronous runner).
        self._in_thread = run_in_thread or (
            lambda fn, *args: threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)
        )
        self.throttle = throttle
        self._reactor = reactor
        self._cache = passwords.VerifiedCache(ttl=cache_ttl)
        self._slots = defer.DeferredSemaphore(MAX_CONCURRENT_VERIFICATIONS)

    def forget_cached(self) -> None:
        """Drop every cached verification (after a password or account change)."""
        self._cache.clear()

    @defer.inlineCallbacks
    def authenticate(self, address: str, secret: str, client_address: str | None, protocol: str):  # type: ignore[no-untyped-def]
        """Fire with a :class:`Principal`, or fail with :class:`AuthFailed`."""
        started = time.monotonic()
        try:
            key = normalize_address(address)
        except AccountError:
            key = address.strip().lower()[:254]
        client = client_address or "?"
        verdict = self.throttle.verdict(key, client, self._reactor.seconds())
        if verdict.blocked:
            self._record(protocol, "blocked", key, client, started, "too many failed logins")
            raise AuthFailed("blocked", verdict.retry_after)
        if verdict.delay:
            yield task.deferLater(self._reactor, verdict.delay, lambda: None)

        account = self._lookup(key)
        stored, method, label = self._choose_hash(account, secret)
        now = self._reactor.seconds()
        cached = stored is not None and self._cache.hit(stored, secret, now)
        if cached:
            ok = True
        else:
            ok = yield self._slots.run(self._in_thread, passwords.verify_secret, stored, secret)
            if not ok and account is not None and method == "app-password":
                # The secret only looked like an app password; it may be the password.
                stored, method, label = account.password_hash, "password", ""
                ok = yield self._slots.run(self._in_thread, passwords.verify_secret, stored, secret)
            if ok:
                self._cache.add(stored, secret, now)

        if not ok or account is None:
            self.throttle.failure(key, client, self._reactor.seconds())
            why = "unknown user" if account is None else "wrong password"
            self._record(protocol, "failed", key, client, started, why)
            raise AuthFailed("throttled" if verdict.delay else "failed")
        if not account.active:
            self._record(protocol, "disabled", key, client, started, "account disabled")
            raise AuthFailed("disabled")
        self.throttle.success(key, client)
        # A repeat within the cache time (HTTP Basic sends the password with every
        # request) is counted but logged at debug level only, not once per request.
        self._record(protocol, "ok", key, client, started, method + (" (cached)" if cached else ""),
                     quiet=cached)
        return Principal(account.id, account.address, method, label)

    def _lookup(self, address: str) -> Account | None:
        with self._store.read() as txn:
            return directory.find_account(txn, address)

    @staticmethod
    def _choose_hash(account: Account | None, secret: str) -> tuple[str | None, str, str]:
        """The one hash to verify: the app password the secret names, else the password."""
        if account is None:
            return None, "password", ""
        if passwords.looks_like_app_password(secret):
            prefix = passwords.app_password_id(secret)
            for entry in account.app_passwords:
                if passwords.app_password_id_of(entry) == prefix:
                    return passwords.app_password_hash_of(entry), "app-password", entry.label
        return account.password_hash or None, "password", ""

    def _record(self, protocol: str, result: str, address: str, client: str, started: float, why: str,
                *, quiet: bool = False) -> None:
        metrics.AUTH_ATTEMPTS.labels(protocol, result).inc()
        event = log.debug if quiet else log.info if result == "ok" else log.warn
        event(
            "login {result}: user={user} client={client} protocol={protocol} ({why}, {ms:.0f} ms)",
            result=result,
            user=address,
            client=client,
            protocol=protocol,
            why=why,
            ms=(time.monotonic() - started) * 1000,
        )
