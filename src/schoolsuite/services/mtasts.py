"""MTA-STS for outbound mail (RFC 8461): discover, fetch, parse and cache remote domains' policies.

:meth:`MTASTS.policy` answers, for a recipient domain, the policy to apply
(or None): it looks up the ``_mta-sts`` TXT record (§3.1), fetches the
policy over HTTPS with a verified certificate when the record's id is new or
half the cached policy's ``max_age`` has passed (§3.3, §5.1), and otherwise
uses the cached one. A policy stays cached, in memory and sealed in the
store (storage/mtasts.py), until its ``max_age`` runs out; when the TXT
lookup or the fetch fails, the cached policy is applied (§5.1), so an
attacker who blocks the fetch cannot switch MTA-STS off. The enforcement
itself (which MX hosts, verified TLS) is in services/outbound.py.

Everything here blocks (DNS, HTTPS): call it from the outbound queue's
threads, never the reactor. Parsers never raise: malformed input is "no
policy".
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from ..storage import Store
from ..storage import mtasts as records
from ..storage.mtasts import StoredPolicy
from . import smtp_metrics as metrics
from .resolver import DNSTempError, MailDNS

log = Logger(namespace="schoolsuite.mtasts")

MAX_POLICY_SIZE = 64 * 1024  # RFC 8461 §3.3: "e.g., 64 KiB"
MAX_AGE_LIMIT = 31557600  # RFC 8461 §3.2: about one year
FETCH_TIMEOUT = 15.0  # seconds for the whole fetch (§3.3 asks for a "reasonable" timeout)
MEMORY_ENTRIES = 4096  # policies held in memory; the store holds them all
PURGE_INTERVAL = 86400.0  # how often expired records are deleted from the store
FETCH_RETRY_SECONDS = 300.0  # after a failed fetch, the domain's policy host is left alone this long (§3.3)
MODES = ("enforce", "testing", "none")


@dataclass(frozen=True)
class Policy:
    """A parsed policy (RFC 8461 §3.2)."""

    mode: str
    mx: tuple[str, ...]
    max_age: int

    def allows(self, host: str) -> bool:
        """Whether MX host ``host`` matches one of the policy's mx patterns (RFC 8461 §4.1)."""
        return any(mx_matches(pattern, host) for pattern in self.mx)


# -- parsers (no I/O, never raise) ----------------------------------------------

_TXT_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_TXT_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}")
_TXT_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_POLICY_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DIGITS = re.compile(r"[0-9]{1,10}")


def parse_txt(records_: list[bytes]) -> str | None:
    """The policy id of the one valid ``v=STSv1`` TXT record, else None (RFC 8461 §3.1).

    Records that do not begin with ``v=STSv1;`` are discarded; if not exactly
    one remains, or it is syntactically invalid, the domain has no policy.
    """
    candidates = [r for r in records_ if r.startswith(b"v=STSv1;")]
    if len(candidates) != 1:
        return None
    try:
        text = candidates[0].decode("ascii")
    except UnicodeDecodeError:
        return None
    fields = [f.strip(" \t") for f in text.split(";")]
    if fields and fields[-1] == "":
        fields.pop()  # the optional trailing delimiter
    policy_id = None
    for index, item in enumerate(fields):
        name, eq, value = item.partition("=")
        if index == 0:
            continue  # "v=STSv1", checked above
        if not eq:
            return None
        if name == "id":
            if not _TXT_ID.fullmatch(value) or policy_id is not None:
                return None
            policy_id = value
        elif not (_TXT_EXT_NAME.fullmatch(name) and _TXT_EXT_VALUE.fullmatch(value)):
            return None
    return policy_id


def _is_domain(name: str) -> bool:
    labels = name.split(".")
    return 1 < len(labels) and len(name) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def parse_mx_pattern(value: str) -> str | None:
    """A normalized mx pattern (``host`` or ``*.domain``, lower case), or None if invalid (RFC 8461 §3.2)."""
    pattern = value.lower().rstrip(".")
    return pattern if _is_domain(pattern[2:] if pattern.startswith("*.") else pattern) else None


def parse_policy(data: bytes) -> Policy | None:
    """The policy in a ``mta-sts.txt`` body, or None if it is not a valid one (RFC 8461 §3.2).

    Lines end in CRLF or LF; unknown keys are ignored; of a key other than
    ``mx`` given twice the first counts; ``max_age`` above one year is
    capped; ``enforce`` and ``testing`` need at least one mx pattern.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if not line.strip(" \t"):
            continue
        key, colon, value = line.partition(":")
        if not colon or not _POLICY_KEY.fullmatch(key):
            return None
        value = value.strip(" \t")
        if key == "mx":
            pattern = parse_mx_pattern(value)
            if pattern is None:
                return None
            mx.append(pattern)
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1" or fields.get("mode") not in MODES:
        return None
    age = fields.get("max_age", "")
    if not _DIGITS.fullmatch(age):
        return None
    mode = fields["mode"]
    if mode != "none" and not mx:
        return None
    return Policy(mode, tuple(dict.fromkeys(mx)), min(int(age), MAX_AGE_LIMIT))


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: exact name, or ``*.`` standing for exactly one left-most label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        suffix = pattern[1:]
        label = host[: -len(suffix)] if host.endswith(suffix) else ""
        return bool(label) and "." not in label
    return bool(pattern) and pattern == host


# -- the fetch (RFC 8461 §3.3) ----------------------------------------------------------


class PolicyFetchError(Exception):
    """The policy could not be fetched (the message is for the log)."""


class _Connection(http.client.HTTPConnection):
    """HTTP over a TLS socket we open ourselves (address and port need not be the name's)."""

    default_port = 443  # so that the Host header is the bare name

    def __init__(self, host: str, opener: Callable[[], socket.socket], timeout: float) -> None:
        super().__init__(host, 443, timeout=timeout)
        self._opener = opener

    def connect(self) -> None:
        self.sock = self._opener()


def fetch_policy(domain: str, connect: Callable[[str, float], socket.socket], context: ssl.SSLContext,
                 timeout: float = FETCH_TIMEOUT) -> bytes:
    """GET ``https://mta-sts.<domain>/.well-known/mta-sts.txt``; the body, or :class:`PolicyFetchError`.

    ``connect(host, timeout)`` opens the TCP connection (to port 443 in
    production); the certificate must be valid for ``mta-sts.<domain>``. No
    redirect is followed, only 200 with ``text/plain`` counts, the body may
    hold at most 64 KiB and the whole fetch must end within ``timeout``.
    """
    host = f"mta-sts.{domain}"
    deadline = time.monotonic() + timeout

    def opener() -> socket.socket:
        raw = connect(host, timeout)
        try:
            return context.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise

    conn = _Connection(host, opener, timeout)
    try:
        conn.request("GET", "/.well-known/mta-sts.txt", headers={"Accept": "text/plain", "Connection": "close",
                                                                 "User-Agent": "schoolsuite"})
        response = conn.getresponse()
        if response.status != 200:  # §3.3: a redirect is not followed; anything but 200 is no policy
            raise PolicyFetchError(f"HTTP status {response.status}")
        ctype = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
        if ctype != "text/plain":
            raise PolicyFetchError(f"content type {ctype or 'missing'}")
        length = response.getheader("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > MAX_POLICY_SIZE:
            raise PolicyFetchError("policy larger than 64 KiB")
        body = bytearray()
        while True:
            if time.monotonic() > deadline:
                raise PolicyFetchError("timed out")
            piece = response.read1(4096) if hasattr(response, "read1") else response.read(4096)
            if not piece:
                break
            body += piece
            if len(body) > MAX_POLICY_SIZE:
                raise PolicyFetchError("policy larger than 64 KiB")
        return bytes(body)
    except ssl.SSLCertVerificationError as exc:
        raise PolicyFetchError(f"certificate: {exc.verify_message or exc.reason}") from None
    except socket.timeout:
        raise PolicyFetchError("timed out") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise PolicyFetchError(f"{type(exc).__name__}: {exc}"[:200]) from None
    finally:
        conn.close()


# -- the cache ---------------------------------------------------------------------------


class MTASTS:
    """The policies of remote domains: discovered, fetched, cached (memory and store).

    ``save(fn)`` runs ``fn`` (a store write) where writes belong, e.g. on the
    store writer thread; ``https_port`` and ``cafile`` exist for tests.
    """

    def __init__(self, store: Store, dns: MailDNS, *, save: Callable[[Callable[[], None]], Any] | None = None,
                 cafile: str = "", https_port: int = 443, timeout: float = FETCH_TIMEOUT,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.dns = store, dns
        self._save = save or (lambda fn: fn())
        self.https_port, self.timeout, self.clock = https_port, timeout, clock
        self.context = ssl.create_default_context(cafile=cafile or None)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._memory: dict[str, StoredPolicy] = {}
        self._lock = threading.Lock()
        self._last_purge = 0.0
        self._failed: dict[str, float] = {}  # domain -> no new fetch before this time

    def policy(self, domain: str) -> Policy | None:
        """The policy to apply to mail for ``domain`` now, or None (RFC 8461 §5.1). Never raises."""
        domain = domain.lower().rstrip(".")
        try:
            return self._policy(domain)
        except Exception:  # a bug here must not stop delivery: log it, go on as without a policy
            log.failure("MTA-STS lookup for {domain} failed", domain=domain)
            return None

    def _policy(self, domain: str) -> Policy | None:
        now = self.clock()
        cached = self.cached(domain, now)
        try:
            policy_id = parse_txt(self.dns.txt(f"_mta-sts.{domain}"))
        except DNSTempError:
            metrics.SMTP_MTA_STS_POLICY.labels("dns_error").inc()
            return _as_policy(cached)  # §5.1: no live policy, a cached one applies
        if policy_id is None:
            return _as_policy(cached)
        if cached is not None and cached.policy_id == policy_id and now < cached.fetched + cached.max_age / 2:
            metrics.SMTP_MTA_STS_POLICY.labels("cached").inc()
            return _as_policy(cached)
        # A new id, or half the max_age gone: fetch (§5.1: refresh before the policy expires). After a
        # failure, not again for a while (§3.3 suggests rate-limiting): a host that swallows connections
        # would otherwise cost every message to the domain the whole timeout.
        with self._lock:
            retry_at = self._failed.get(domain, 0.0)
        if now < retry_at:
            metrics.SMTP_MTA_STS_POLICY.labels("fetch_deferred").inc()
            return _as_policy(cached)
        try:
            body = fetch_policy(domain, self._connect, self.context, self.timeout)
        except PolicyFetchError as exc:
            self._fetch_failed(domain, now)
            metrics.SMTP_MTA_STS_POLICY.labels("fetch_failed").inc()
            log.info("MTA-STS policy of {domain} not fetched ({reason}); {using}", domain=domain, reason=str(exc),
                     using="the cached policy applies" if cached else "no policy applies")
            return _as_policy(cached)
        policy = parse_policy(body)
        if policy is None:
            self._fetch_failed(domain, now)
            metrics.SMTP_MTA_STS_POLICY.labels("invalid").inc()
            log.info("MTA-STS policy of {domain} is invalid; {using}", domain=domain,
                     using="the cached policy applies" if cached else "no policy applies")
            return _as_policy(cached)
        metrics.SMTP_MTA_STS_POLICY.labels("fetched").inc()
        with self._lock:
            self._failed.pop(domain, None)
        stored = StoredPolicy(domain, policy_id, policy.mode, policy.mx, policy.max_age, now)
        self._remember(stored)
        self._save(lambda: self._write(stored))
        return policy

    def _fetch_failed(self, domain: str, now: float) -> None:
        with self._lock:
            self._failed[domain] = now + FETCH_RETRY_SECONDS
            if len(self._failed) > MEMORY_ENTRIES:
                self._failed = {d: t for d, t in self._failed.items() if t > now}

    def cached(self, domain: str, now: float | None = None) -> StoredPolicy | None:
        """The unexpired cached policy of ``domain`` (memory first, then the store)."""
        now = self.clock() if now is None else now
        with self._lock:
            stored = self._memory.get(domain)
        if stored is None:
            with self.store.read() as txn:
                stored = records.get_policy(txn, domain)
            if stored is not None:
                self._remember(stored)
        if stored is None or stored.expires <= now:
            return None
        return stored

    def _remember(self, stored: StoredPolicy) -> None:
        with self._lock:
            self._memory.pop(stored.domain, None)
            self._memory[stored.domain] = stored
            while len(self._memory) > MEMORY_ENTRIES:
                del self._memory[next(iter(self._memory))]

    def _write(self, stored: StoredPolicy) -> None:
        now = self.clock()
        with self.store.write(durable=False) as txn:  # a cache: losing the last second of it is harmless
            records.put_policy(txn, stored)
            if now - self._last_purge >= PURGE_INTERVAL:
                self._last_purge = now
                records.purge_expired(txn, now)

    def _connect(self, host: str, timeout: float) -> socket.socket:
        """TCP to ``host`` on the HTTPS port, its addresses looked up like MX hosts' (same resolver)."""
        try:
            addresses = self.dns.addresses(host)
        except DNSTempError as exc:
            raise OSError(str(exc)) from None
        if not addresses:
            raise OSError(f"no address for {host}")
        error: OSError = OSError(f"cannot connect to {host}")
        for address in addresses:
            try:
                return socket.create_connection((address, self.https_port), timeout=timeout)
            except OSError as exc:
                error = exc
        raise error


def _as_policy(stored: StoredPolicy | None) -> Policy | None:
    return None if stored is None else Policy(stored.mode, stored.mx, stored.max_age)
