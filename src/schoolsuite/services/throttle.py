"""Failed-login throttling per account and per client address.

After ``delay_after`` failures the answer to every further attempt is delayed,
doubling up to ``delay_max`` seconds; after ``block_after_*`` failures the
account (or the client) is refused outright for ``block_seconds``, without
checking the password. Failures are forgotten ``block_seconds`` after the last
one; a success clears the account's count and halves the client's.

State lives in memory, bounded in size: it slows a guessing attack down, it
is not an audit log (the log has every failure).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


def client_key(client_address: str | None) -> str:
    """IPv4 addresses count one by one, IPv6 ones per /64 (one home, one phone)."""
    if not client_address:
        return "?"
    try:
        ip = ipaddress.ip_address(client_address)
    except ValueError:
        return client_address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass
class _Entry:
    failures: int
    last: float


@dataclass(frozen=True)
class Verdict:
    blocked: bool
    delay: float
    retry_after: float = 0.0


class Throttle:
    """Counts failures per key; say :meth:`verdict` before checking a password."""

    def __init__(
        self,
        *,
        delay_after: int = 3,
        delay_max: float = 30.0,
        block_after_account: int = 10,
        block_after_client: int = 30,
        block_seconds: float = 900.0,
        max_entries: int = 200_000,
    ) -> None:
        self.delay_after = delay_after
        self.delay_max = delay_max
        self.block_after = {"account": block_after_account, "client": block_after_client}
        self.block_seconds = block_seconds
        self._max = max_entries
        self._entries: dict[tuple[str, str], _Entry] = {}

    def _get(self, kind: str, key: str, now: float) -> _Entry | None:
        entry = self._entries.get((kind, key))
        if entry is not None and now - entry.last > self.block_seconds:
            del self._entries[(kind, key)]
            return None
        return entry

    def verdict(self, account: str, client: str, now: float) -> Verdict:
        """Whether to refuse at once, and how long to wait before answering."""
        worst = 0
        for kind, key in (("account", account), ("client", client_key(client))):
            entry = self._get(kind, key, now)
            if entry is None:
                continue
            if entry.failures >= self.block_after[kind]:
                return Verdict(True, 0.0, entry.last + self.block_seconds - now)
            worst = max(worst, entry.failures)
        if worst == 0 or worst < self.delay_after:
            return Verdict(False, 0.0)
        return Verdict(False, min(self.delay_max, float(2 ** (worst - self.delay_after))))

    def failure(self, account: str, client: str, now: float) -> None:
        if len(self._entries) >= self._max:
            self._entries = {k: e for k, e in self._entries.items() if now - e.last <= self.block_seconds}
            if len(self._entries) >= self._max:
                self._entries.clear()
        for kind, key in (("account", account), ("client", client_key(client))):
            entry = self._get(kind, key, now)
            if entry is None:
                self._entries[(kind, key)] = _Entry(1, now)
            else:
                entry.failures += 1
                entry.last = now

    def success(self, account: str, client: str) -> None:
        """Clear the account's count; halve the client's (a school behind one
        NAT address must not be blocked by a few typos, nor can one valid login
        wipe a guesser's record)."""
        self._entries.pop(("account", account), None)
        entry = self._entries.get(("client", client_key(client)))
        if entry is not None:
            entry.failures //= 2
            if entry.failures == 0:
                del self._entries[("client", client_key(client))]
