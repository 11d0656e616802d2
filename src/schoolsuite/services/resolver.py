"""DNS lookups for mail transport (MX, A/AAAA, TXT) through dnspython.

``[smtp] dns_servers`` names the servers (tests point it at a twisted.names
server on loopback; production leaves it empty for the system resolver).
:func:`configure` also makes that resolver dnspython's process default, which
is how pyspf (SPF) finds its resolver. Every call here blocks: run it in a
thread, never on the reactor.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver


class DNSTempError(Exception):
    """A lookup failed for now (timeout, SERVFAIL, no server answered)."""


def make_resolver(servers: str, *, timeout: float = 5.0) -> dns.resolver.Resolver:
    """A resolver for ``"IP[:PORT], ..."``, or the system resolver when ``servers`` is empty."""
    if not servers.strip():
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:  # no /etc/resolv.conf: lookups fail as temporary errors
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = ["127.0.0.1"]
    else:
        resolver = dns.resolver.Resolver(configure=False)
        hosts, ports = [], set()
        for item in servers.split(","):
            item = item.strip()
            host, port = item, 53
            if item.count(":") == 1:
                host, _, port_text = item.partition(":")
                port = int(port_text)
            elif item.startswith("[") and "]:" in item:
                host, _, port_text = item[1:].partition("]:")
                port = int(port_text)
            hosts.append(host)
            ports.add(port)
        if len(ports) != 1:
            raise ValueError("all dns_servers must use the same port")
        resolver.nameservers = hosts
        resolver.port = ports.pop()
    resolver.lifetime = timeout
    resolver.timeout = timeout
    resolver.cache = dns.resolver.Cache()
    return resolver


def configure(servers: str) -> dns.resolver.Resolver:
    """Make the resolver for ``servers`` dnspython's default in this process (for pyspf)."""
    resolver = make_resolver(servers)
    dns.resolver.default_resolver = resolver
    return resolver


@dataclass(frozen=True)
class MXHost:
    preference: int
    host: str


class MailDNS:
    """The lookups mail transport needs, over one resolver."""

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver

    def _query(self, name: str, rdtype: str) -> list[object] | None:
        """Answers, [] for NODATA, None for NXDOMAIN; DNSTempError otherwise."""
        try:
            return list(self.resolver.resolve(name, rdtype, search=False))
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.NoAnswer:
            return []
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as exc:
            raise DNSTempError(f"DNS {rdtype} {name}: {type(exc).__name__}") from None
        except dns.exception.DNSException as exc:
            raise DNSTempError(f"DNS {rdtype} {name}: {exc}") from None

    def txt(self, name: str) -> list[bytes]:
        """Each TXT record of ``name`` with its strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
        answers = self._query(name, "TXT") or []
        return [b"".join(r.strings) for r in answers]  # type: ignore[attr-defined]

    def mx(self, domain: str) -> list[MXHost] | None:
        """MX hosts by preference; [] when the domain has none; None if the domain does not exist."""
        answers = self._query(domain, "MX")
        if answers is None:
            return None
        hosts = [MXHost(r.preference, "." if r.exchange == dns.name.root  # type: ignore[attr-defined]
                        else r.exchange.to_text(omit_final_dot=True)) for r in answers]  # type: ignore[attr-defined]
        return sorted(hosts, key=lambda h: h.preference)

    def addresses(self, host: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``host``."""
        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            found.extend(r.address for r in (self._query(host, rdtype) or []))  # type: ignore[attr-defined]
        return found

    def dkim_txt(self, name: bytes, timeout: int = 5) -> bytes | None:
        """dkimpy's ``dnsfunc``: the TXT record of a selector name, or None."""
        try:
            records = self.txt(name.decode("ascii").rstrip("."))
        except DNSTempError:
            return None
        return records[0] if records else None
