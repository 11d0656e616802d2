"""What a client needs to find this server: host, ports, TLS modes, URLs, and the DNS records.

Everything comes from the config alone (the instance's hostname and domain and
the listeners' endpoints), so autoconfiguration works whatever protocol
modules are loaded. A ``tcp:PORT`` endpoint publishes that port; a
``systemd:`` endpoint publishes the standard port of its service (systemd's
socket unit listens there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The standard port of each listener (RFC 9051 §2 / RFC 8314 §7.3 / RFC 6409 / RFC 5321 / RFC 9110).
STANDARD_PORTS = {"imap": 143, "imaps": 993, "submission": 587, "submissions": 465, "mx": 25, "https": 443}


def public_port(config: Any, name: str) -> int | None:
    """The port clients use for listener ``name``, or None when it is disabled."""
    listener = getattr(config.listeners, name, None)
    if listener is None or not listener.enabled:
        return None
    kind, _, rest = listener.endpoint.partition(":")
    if kind in ("tcp", "tcp6"):
        port = rest.split(":", 1)[0]
        if port.isdigit():
            return int(port)
    return STANDARD_PORTS.get(name)


def public_url(config: Any, path: str) -> str:
    """``https://HOSTNAME[:PORT]PATH`` on the HTTPS listener."""
    port = public_port(config, "https") or 443
    host = config.instance.hostname
    return f"https://{host}{'' if port == 443 else f':{port}'}{path}"


@dataclass(frozen=True)
class Server:
    """One way to reach a service: port and TLS (``SSL`` implicit, ``STARTTLS``)."""

    port: int
    tls: str  # "SSL" | "STARTTLS"


@dataclass(frozen=True)
class ClientSetup:
    """Everything autoconfiguration says, preferred server first."""

    domain: str
    hostname: str
    imap: tuple[Server, ...]
    smtp: tuple[Server, ...]
    https_port: int | None
    dav_url: str  # the DAV root; a user's home is dav_url + ADDRESS + "/"
    files_url: str


def _servers(config: Any, implicit: str, starttls: str) -> tuple[Server, ...]:
    """Implicit TLS first (RFC 8314 §3.3 recommends it), then STARTTLS."""
    found = []
    for name, mode in ((implicit, "SSL"), (starttls, "STARTTLS")):
        port = public_port(config, name)
        if port is not None:
            found.append(Server(port, mode))
    return tuple(found)


def client_setup(config: Any) -> ClientSetup:
    return ClientSetup(
        domain=config.instance.domain,
        hostname=config.instance.hostname,
        imap=_servers(config, "imaps", "imap"),
        smtp=_servers(config, "submissions", "submission"),
        https_port=public_port(config, "https"),
        dav_url=public_url(config, "/dav/"),
        files_url=public_url(config, "/files/"),
    )


# -- DNS records an operator publishes --------------------------------------------------


def dns_records(config: Any, dkim_record: tuple[str, str] | None, mta_sts_id: str) -> list[str]:
    """Zone-file lines for the domain: MX, SRV (RFC 6186, RFC 8314, RFC 6764), SPF, DKIM, DMARC, MTA-STS.

    ``dkim_record`` is (name, TXT value) of the domain's signing key, or None.
    """
    setup = client_setup(config)
    domain, host = setup.domain, setup.hostname
    lines = [f"; DNS records for {domain} (served by {host}); publish them in the {domain} zone.",
             f"; {host} itself needs A/AAAA records for the server's public addresses.", ""]
    if public_port(config, "mx") is not None:
        lines += ["; Mail from the internet (RFC 5321 §5.1)", f"{domain}.\t3600\tIN\tMX\t10 {host}.", ""]
    lines.append("; Where mail clients find IMAP and submission (RFC 6186 §3, RFC 8314 §5.1)")
    for service, name in (("imaps", "imaps"), ("imap", "imap"), ("submissions", "submissions"),
                          ("submission", "submission")):
        port = public_port(config, name)
        if port is not None:
            lines.append(f"_{service}._tcp.{domain}.\t3600\tIN\tSRV\t0 1 {port} {host}.")
    lines.append("_pop3._tcp.{0}.\t3600\tIN\tSRV\t0 0 0 .\n_pop3s._tcp.{0}.\t3600\tIN\tSRV\t0 0 0 .".format(domain))
    https = setup.https_port
    if https is not None:
        lines += ["", "; Where calendar and contacts clients find CalDAV and CardDAV (RFC 6764 §3, §4)"]
        for service in ("caldavs", "carddavs"):
            lines.append(f"_{service}._tcp.{domain}.\t3600\tIN\tSRV\t0 1 {https} {host}.")
            lines.append(f'_{service}._tcp.{domain}.\t3600\tIN\tTXT\t"path=/dav/"')
        lines += ["", "; Thunderbird looks for autoconfig.DOMAIN (serve it from this host)",
                  f"autoconfig.{domain}.\t3600\tIN\tCNAME\t{host}."]
    lines += ["", "; Who may send mail for the domain (RFC 7208): only the MX host",
              f'{domain}.\t3600\tIN\tTXT\t"v=spf1 mx -all"', "",
              "; DKIM signing key (RFC 6376 §3.6.2)"]
    if dkim_record is not None:
        name, value = dkim_record
        chunks = " ".join(f'"{value[i:i + 250]}"' for i in range(0, len(value), 250))
        lines.append(f"{name}.\t3600\tIN\tTXT\t( {chunks} )")
    else:
        lines.append(f"; no DKIM key for {domain} yet: run 'schoolsuite dkim generate {domain}', then dns-records again")
    lines += ["", "; What receivers do with mail failing SPF and DKIM (RFC 7489 §6.3)",
              f'_dmarc.{domain}.\t3600\tIN\tTXT\t"v=DMARC1; p=quarantine; adkim=s; aspf=s; rua=mailto:postmaster@{domain}"',
              "", "; MTA-STS (RFC 8461 §3.1): the policy is served at "
                  f"https://mta-sts.{domain}/.well-known/mta-sts.txt; TLS reports (RFC 8460 §3)",
              f'_mta-sts.{domain}.\t3600\tIN\tTXT\t"v=STSv1; id={mta_sts_id}"',
              f"mta-sts.{domain}.\t3600\tIN\tCNAME\t{host}.",
              f'_smtp._tls.{domain}.\t3600\tIN\tTXT\t"v=TLSRPTv1; rua=mailto:postmaster@{domain}"']
    return lines


def mta_sts_policy(config: Any, max_age: int = 604800) -> str:
    """The MTA-STS policy file (RFC 8461 §3.2): enforce TLS to our MX host."""
    return f"version: STSv1\r\nmode: enforce\r\nmx: {config.instance.hostname}\r\nmax_age: {max_age}\r\n"
