"""A loopback DNS server for tests (twisted.names), answering only from a JSON zone description.

Usage: python dns_zone_server.py ZONES.json PORT   — prints "ready" when it listens (UDP and TCP).
ZONES.json: {"zones": {"origin": [[name, type, value...], ...]}} with types A, AAAA, MX
(preference, host), TXT (one string, split in 255-octet pieces), CNAME.
Nothing is ever forwarded: names outside the zones are refused.
"""

from __future__ import annotations

import json
import sys

from twisted.internet import reactor
from twisted.names import authority, dns, server


class MemoryAuthority(authority.FileAuthority):
    """An authoritative zone held in memory."""

    def __init__(self, origin: str, rows: list[list]) -> None:
        super().__init__(origin)
        self.soa = (origin.encode(), dns.Record_SOA(mname=b"ns." + origin.encode(), rname=b"hostmaster." +
                                                    origin.encode(), serial=1, refresh=60, retry=60,
                                                    expire=60, minimum=5, ttl=5))
        records: dict[bytes, list] = {origin.lower().encode(): [self.soa[1]]}
        for name, kind, *value in rows:
            records.setdefault(name.lower().encode(), []).append(_record(kind, value))
        self.records = records

    def loadFile(self, filename: str) -> None:  # noqa: N802 (nothing to load)
        pass


def _record(kind: str, value: list):  # type: ignore[no-untyped-def]
    if kind == "A":
        return dns.Record_A(value[0], ttl=5)
    if kind == "AAAA":
        return dns.Record_AAAA(value[0], ttl=5)
    if kind == "MX":
        return dns.Record_MX(int(value[0]), value[1].encode(), ttl=5)
    if kind == "CNAME":
        return dns.Record_CNAME(value[0].encode(), ttl=5)
    if kind == "TXT":
        text = value[0].encode()
        return dns.Record_TXT(*[text[i : i + 255] for i in range(0, len(text), 255)] or [b""], ttl=5)
    raise ValueError(kind)


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    port = int(sys.argv[2])
    authorities = [MemoryAuthority(origin, rows) for origin, rows in spec["zones"].items()]
    factory = server.DNSServerFactory(authorities=authorities)
    reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    reactor.callWhenRunning(lambda: print("ready", flush=True))
    reactor.run()


if __name__ == "__main__":
    main()
