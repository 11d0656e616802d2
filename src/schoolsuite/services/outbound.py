"""One delivery attempt of a queued message to a remote server (blocking; run in a thread).

The route is the configured smarthost (STARTTLS or implicit TLS required
unless configured off, AUTH when a user is set) or, without one, the
recipient domain's MX hosts in preference order (RFC 5321 §5.1), the domain
itself when it has no MX (implicit MX), and a permanent failure for a null
MX (RFC 7505). TLS to MX hosts is opportunistic (RFC 7435, RFC 3207), unless
the recipient domain has an MTA-STS policy (RFC 8461; services/mtasts.py
finds it): in mode ``enforce`` only the MX hosts the policy names are tried,
STARTTLS is required and the certificate must be valid for the MX host name,
else that host is a temporary failure (4.7.x) and the message stays queued;
in mode ``testing`` the same checks are only logged and counted (§5).
"""

from __future__ import annotations

import functools
import smtplib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from twisted.logger import Logger

from . import smtp_metrics as metrics
from .mtasts import Policy
from .resolver import DNSTempError, MailDNS

log = Logger(namespace="schoolsuite.outbound")


@dataclass(frozen=True)
class Outcome:
    """What happened to one recipient in one attempt."""

    code: int  # SMTP reply code; 0 when no server answered
    enhanced: str
    text: str
    remote: str = ""
    dsn_passed: bool = False  # the next hop took our DSN parameters (it reports success itself)

    @property
    def delivered(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500


@dataclass(frozen=True)
class Route:
    smarthost: str = ""
    smarthost_tls: str = "starttls"
    username: str = ""
    password_file: str = ""
    ca_file: str = ""
    outbound_port: int = 25
    hostname: str = "localhost"
    timeout: float = 60.0
    mta_sts_ca_file: str = ""  # CA certificates for MTA-STS checks of MX hosts; empty: the system's (tests set it)


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipients: tuple[tuple[str, tuple[str, ...], str | None], ...]  # address, NOTIFY, ORCPT
    size: int
    eight_bit: bool
    smtputf8: bool
    ret: str | None
    envid: str | None


class _TryNext(Exception):
    """This host could not take the message now: try the next one."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.text)
        self.outcome = outcome


class _Downgrade(Exception):
    """MTA-STS testing: the verified handshake failed; go on with this host as without a policy."""


class _Check:
    """How one delivery attempt applies a recipient domain's MTA-STS policy (RFC 8461 §5)."""

    def __init__(self, route: Route, policy: Policy, domain: str) -> None:
        self.route, self.policy, self.domain = route, policy, domain

    @property
    def enforce(self) -> bool:
        return self.policy.mode == "enforce"

    def context(self) -> ssl.SSLContext:
        return _verified_context(self.route.mta_sts_ca_file)

    def passed(self) -> None:
        metrics.SMTP_MTA_STS.labels(self.policy.mode, "valid").inc()

    def refuse(self, result: str, remote: str, enhanced: str, reason: str) -> None:
        """Enforce: this host is a temporary failure. Testing: one log line, delivery goes on (§5)."""
        metrics.SMTP_MTA_STS.labels(self.policy.mode, result).inc()
        if self.enforce:
            raise _TryNext(Outcome(0, enhanced, f"{reason} (MTA-STS policy of {self.domain})", remote))
        log.info("MTA-STS testing: mail to {domain} via {host} would be refused in enforce mode: {reason}",
                 domain=self.domain, host=remote, reason=reason)


@functools.lru_cache(maxsize=4)
def _verified_context(cafile: str) -> ssl.SSLContext:
    """RFC 8461 §4.2: a certificate chaining to a trusted root, valid for the MX host name."""
    context = ssl.create_default_context(cafile=cafile or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def transmit(route: Route, dns: MailDNS, domain: str, envelope: Envelope, message: bytes,
             policy: Policy | None = None) -> dict[str, Outcome]:
    """Deliver ``message`` to the recipients of one domain; an outcome per recipient address.

    ``policy`` is the domain's MTA-STS policy (None: there is none, or a
    smarthost is used, which is verified anyway).
    """
    if route.smarthost:
        host, _, port = route.smarthost.rpartition(":")
        hosts = [(host.strip("[]"), int(port), host)]
        smart = True
    else:
        try:
            hosts = _mx_hosts(dns, domain, route.outbound_port)
        except _Final as final:
            return {r[0]: final.outcome for r in envelope.recipients}
        smart = False
    check = _Check(route, policy, domain) if policy is not None and policy.mode != "none" and not smart else None
    last = Outcome(0, "4.4.1", "no answer from any mail server of the domain")
    for address, port, name in hosts:
        try:
            host_check = check
            if check is not None and not check.policy.allows(name):  # RFC 8461 §4.1
                check.refuse("mx_not_allowed", name, "4.7.0", f"{name} is not a mail server the policy names")
                host_check = None  # testing: delivered as without a policy
            try:
                return _session(route, address, port, name, envelope, message, smart, host_check)
            except _Downgrade:
                return _session(route, address, port, name, envelope, message, smart, None)
        except _TryNext as exc:
            last = exc.outcome
    return {r[0]: last for r in envelope.recipients}


class _Final(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.text)
        self.outcome = outcome


def _mx_hosts(dns: MailDNS, domain: str, port: int) -> list[tuple[str, int, str]]:
    try:
        mx = dns.mx(domain)
        if mx is None:
            raise _Final(Outcome(550, "5.1.2", f"the domain {domain} does not exist"))
        if len(mx) == 1 and mx[0].host in ("", "."):  # RFC 7505 §3: null MX
            raise _Final(Outcome(556, "5.1.10", f"the domain {domain} accepts no mail (null MX)"))
        names = [m.host for m in mx] or [domain]  # RFC 5321 §5.1: implicit MX
        hosts = []
        for name in names:
            for address in dns.addresses(name):
                hosts.append((address, port, name))
    except DNSTempError as exc:
        raise _Final(Outcome(0, "4.4.3", str(exc))) from None
    if not hosts:
        raise _Final(Outcome(0, "4.4.4", f"no address for the mail servers of {domain}"))
    return hosts


def _tls_context(route: Route, smart: bool) -> ssl.SSLContext:
    if smart:
        context = ssl.create_default_context(cafile=route.ca_file or None)
    else:  # opportunistic: encrypt, but any certificate will do (RFC 7435 §1.3)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _session(route: Route, address: str, port: int, name: str, envelope: Envelope, message: bytes,
             smart: bool, check: _Check | None = None) -> dict[str, Outcome]:
    remote = name.strip("[]")
    try:
        if smart and route.smarthost_tls == "implicit":
            client: smtplib.SMTP = smtplib.SMTP_SSL(address, port, local_hostname=route.hostname,
                                                    timeout=route.timeout, context=_tls_context(route, smart))
        else:
            client = smtplib.SMTP(address, port, local_hostname=route.hostname, timeout=route.timeout)
    except (OSError, smtplib.SMTPException) as exc:
        raise _TryNext(Outcome(0, "4.4.1", f"cannot connect to {remote}: {_reason(exc)}", remote)) from None
    try:
        return _transaction(client, route, remote, envelope, message, smart, check)
    except smtplib.SMTPServerDisconnected as exc:
        raise _TryNext(Outcome(0, "4.4.2", f"{remote} closed the connection: {_reason(exc)}", remote)) from None
    except (OSError, ssl.SSLError) as exc:
        raise _TryNext(Outcome(0, "4.4.2", f"connection to {remote} failed: {_reason(exc)}", remote)) from None
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


def _reply(code: int, text: bytes, remote: str) -> Outcome:
    line = text.decode("utf-8", "replace")
    enhanced = line.split(" ", 1)[0] if line[:1] in "245" and line[1:2] == "." else ""
    if not enhanced:
        enhanced = f"{code // 100}.0.0" if code else "4.0.0"
    return Outcome(code, enhanced, f"{code} {' '.join(line.split())}", remote)


def _transaction(client: smtplib.SMTP, route: Route, remote: str, envelope: Envelope, message: bytes,
                 smart: bool, check: _Check | None = None) -> dict[str, Outcome]:
    code, text = client.ehlo()
    if not 200 <= code < 300:
        code, text = client.helo()
        if not 200 <= code < 300:
            raise _TryNext(_reply(code, text, remote))
    if check is not None:
        _starttls_checked(client, remote, check)
        return _send(client, route, remote, envelope, message, smart)
    tls_required = smart and route.smarthost_tls == "starttls"
    if not isinstance(client, smtplib.SMTP_SSL) and (client.has_extn("starttls") or tls_required):
        if not client.has_extn("starttls"):
            raise _TryNext(Outcome(0, "4.7.10", f"{remote} does not offer STARTTLS", remote))
        try:
            client.starttls(context=_tls_context(route, smart))
        except (ssl.SSLError, smtplib.SMTPException, OSError) as exc:
            if tls_required:
                raise _TryNext(Outcome(0, "4.7.10", f"TLS with {remote} failed: {_reason(exc)}", remote)) from None
            raise
        client.ehlo()
    return _send(client, route, remote, envelope, message, smart)


def _starttls_checked(client: smtplib.SMTP, remote: str, check: _Check) -> None:
    """RFC 8461 §5: STARTTLS required, the certificate verified against the MX host name (§4.2)."""
    if not client.has_extn("starttls"):
        check.refuse("starttls_missing", remote, "4.7.10", f"{remote} does not offer STARTTLS")
        return  # testing: on in plaintext, as without a policy
    client._host = remote  # type: ignore[attr-defined]  # smtplib takes SNI and the name to verify from it
    try:
        client.starttls(context=check.context())
    except ssl.SSLCertVerificationError as exc:
        reason = f"the certificate of {remote} is not valid: {exc.verify_message or exc.reason}"
        check.refuse("certificate_invalid", remote, "4.7.5", reason)
        raise _Downgrade() from None  # testing: this handshake is spent; a new connection without checks
    except (ssl.SSLError, smtplib.SMTPException, OSError) as exc:
        if check.enforce:
            raise _TryNext(Outcome(0, "4.7.5", f"TLS with {remote} failed: {_reason(exc)} (MTA-STS policy of "
                                              f"{check.domain})", remote)) from None
        raise
    check.passed()
    client.ehlo()


def _send(client: smtplib.SMTP, route: Route, remote: str, envelope: Envelope, message: bytes,
          smart: bool) -> dict[str, Outcome]:
    if smart and route.username:
        password = Path(route.password_file).read_text().strip() if route.password_file else ""
        try:
            client.login(route.username, password)
        except smtplib.SMTPAuthenticationError as exc:
            raise _TryNext(_reply(exc.smtp_code, exc.smtp_error, remote)) from None
    dsn = client.has_extn("dsn")
    mail_options = [f"SIZE={envelope.size}"] if client.has_extn("size") else []
    if envelope.eight_bit and client.has_extn("8bitmime"):
        mail_options.append("BODY=8BITMIME")
    if envelope.smtputf8:
        if not client.has_extn("smtputf8"):
            return {r[0]: Outcome(550, "5.6.7", f"{remote} does not support SMTPUTF8", remote)
                    for r in envelope.recipients}
        mail_options.append("SMTPUTF8")
    if dsn and envelope.ret:
        mail_options.append(f"RET={envelope.ret}")
    if dsn and envelope.envid:
        mail_options.append(f"ENVID={xtext_encode(envelope.envid)}")
    code, text = client.mail(envelope.sender, mail_options)
    if not 200 <= code < 300:
        outcome = _reply(code, text, remote)
        if outcome.permanent:
            return {r[0]: outcome for r in envelope.recipients}
        raise _TryNext(outcome)
    results: dict[str, Outcome] = {}
    accepted = []
    for address, notify, orcpt in envelope.recipients:
        options = []
        if dsn and notify:
            options.append("NOTIFY=" + ",".join(notify))
        if dsn and orcpt:
            kind, _, addr = orcpt.partition(";")
            options.append(f"ORCPT={kind};{xtext_encode(addr)}")
        code, text = client.rcpt(address, options)
        results[address] = _reply(code, text, remote)
        if 200 <= code < 300:
            accepted.append(address)
    if not accepted:
        client.rset()
        return results
    code, text = client.data(limit_line_length(message))
    outcome = _reply(code, text, remote)
    for address in accepted:
        results[address] = Outcome(outcome.code, outcome.enhanced, outcome.text, remote, dsn)
    return results


MAX_LINE = 998  # RFC 5321 §4.5.3.1.6: 1000 octets with the CRLF


def limit_line_length(message: bytes) -> bytes:
    """Break lines longer than 998 octets by inserting CRLF SP, as Postfix does (smtp_line_length_limit).

    Only messages that need it are touched: a remote server may refuse them otherwise.
    """
    lines = message.split(b"\r\n")
    if all(len(line) <= MAX_LINE for line in lines):
        return message
    out = []
    for line in lines:
        while len(line) > MAX_LINE:
            out.append(line[:MAX_LINE])
            line = b" " + line[MAX_LINE:]
        out.append(line)
    return b"\r\n".join(out)


def xtext_encode(value: str) -> str:
    """RFC 3461 §4: printable ASCII except "+" and "=" as is, the rest as +HH."""
    return "".join(ch if 33 <= ord(ch) <= 126 and ch not in "+=" else f"+{ord(ch):02X}" for ch in value)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
