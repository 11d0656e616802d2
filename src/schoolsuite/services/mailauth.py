"""Inbound message authentication: SPF, DKIM, ARC and DMARC, and the Authentication-Results header.

SPF (RFC 7208) through pyspf, DKIM (RFC 6376) and ARC (RFC 8617) through
dkimpy, DMARC (RFC 7489) evaluated here from those results. Everything is
blocking (DNS, RSA): call :meth:`MailAuthenticator.check` in a thread.

Organizational domains (RFC 7489 §3.2) come from Debian's Public Suffix
List (package ``publicsuffix``) when it is installed, else from an
approximation for common country-code second-level suffixes.
"""

from __future__ import annotations

import email.utils
import functools
from dataclasses import dataclass, field
from pathlib import Path

import dkim
import dkim.util
import spf

from .resolver import DNSTempError, MailDNS

PUBLIC_SUFFIX_LIST = Path("/usr/share/publicsuffix/public_suffix_list.dat")  # Debian package publicsuffix
# Without the list: second-level labels under country codes that act as public suffixes (co.uk, com.au, ...).
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "ac", "gov", "edu", "sch", "ltd", "plc", "ne", "or", "go"})


@functools.lru_cache(maxsize=1)
def _suffix_rules() -> tuple[frozenset[str], frozenset[str], frozenset[str]] | None:
    """(rules, wildcard parents, exceptions) of the Public Suffix List, or None without it."""
    try:
        text = PUBLIC_SUFFIX_LIST.read_text(encoding="utf-8")
    except OSError:
        return None
    rules, wildcards, exceptions = set(), set(), set()
    for line in text.splitlines():
        rule = line.strip().split(" ", 1)[0].lower()
        if not rule or rule.startswith("//"):
            continue
        rule = rule.encode("idna").decode("ascii") if not rule.isascii() and "*" not in rule else rule
        if rule.startswith("!"):
            exceptions.add(rule[1:])
        elif rule.startswith("*."):
            wildcards.add(rule[2:])
        else:
            rules.add(rule)
    return frozenset(rules), frozenset(wildcards), frozenset(exceptions)


def _public_suffix_length(labels: list[str]) -> int:
    """How many trailing labels form the public suffix (PSL algorithm; the implicit rule is "*")."""
    table = _suffix_rules()
    if table is None:
        if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL:
            return 2
        return 1
    rules, wildcards, exceptions = table
    best = 1
    for n in range(1, len(labels) + 1):
        name = ".".join(labels[-n:])
        if name in exceptions:
            return n - 1
        if name in rules:
            best = max(best, n)
        if n < len(labels) and name in wildcards:
            best = max(best, n + 1)
    return best


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label (Debian's Public Suffix List when installed)."""
    labels = domain.lower().rstrip(".").split(".")
    keep = min(len(labels), _public_suffix_length(labels) + 1)
    return ".".join(labels[-keep:])


def aligned(a: str, b: str, mode: str) -> bool:
    """RFC 7489 §3.1: strict = same domain, relaxed = same organizational domain."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if mode == "s" else organizational_domain(a) == organizational_domain(b)


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass, fail, neutral (RFC 8601 §2.7.1)
    domain: str
    selector: str
    b: str  # first 8 characters of the signature (RFC 6008)


@dataclass(frozen=True)
class DmarcPolicy:
    p: str
    sp: str | None
    adkim: str
    aspf: str
    pct: int
    found_at: str


@dataclass
class Verdicts:
    """The results for one message."""

    spf: str = "none"
    spf_domain: str = ""
    spf_identity: str = ""
    dkim: list[DkimResult] = field(default_factory=list)
    arc: str = "none"
    dmarc: str = "none"
    dmarc_policy: str | None = None
    from_domain: str | None = None

    @property
    def dmarc_reject(self) -> bool:
        """RFC 7489 §6.6.4 / §10.3: a failing message of a domain asking for rejection."""
        return self.dmarc == "fail" and self.dmarc_policy == "reject"

    def header(self, authserv_id: str) -> str:
        """The Authentication-Results field (RFC 8601 §2.2)."""
        parts = [f"spf={self.spf} smtp.{'mailfrom' if '@' in self.spf_identity else 'helo'}="
                 f"{_ptext(self.spf_identity)}"]
        if self.dkim:
            parts += [f"dkim={d.result} header.d={d.domain} header.s={_ptext(d.selector)} header.b={_ptext(d.b)}"
                      for d in self.dkim]
        else:
            parts.append("dkim=none")
        parts.append(f"arc={self.arc}")
        policy = f" (p={self.dmarc_policy})" if self.dmarc_policy else ""
        parts.append(f"dmarc={self.dmarc}{policy}" + (f" header.from={self.from_domain}" if self.from_domain else ""))
        return f"Authentication-Results: {authserv_id}; " + ";\r\n\t".join(parts)


def _ptext(value: str) -> str:
    # RFC 8601 §2.2 pvalue: quote what is not a plain token.
    if value and all(c.isalnum() or c in "@.-_+/=" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MailAuthenticator:
    """Checks a received message against DNS."""

    def __init__(self, dns: MailDNS, *, dkim_min_key: int = 1024) -> None:
        self.dns = dns
        self.dkim_min_key = dkim_min_key

    def check(self, message: bytes, client_ip: str, helo: str, mail_from: str, from_domain: str | None) -> Verdicts:
        verdicts = Verdicts(from_domain=from_domain)
        self._spf(verdicts, client_ip, helo, mail_from)
        self._dkim(verdicts, message)
        self._arc(verdicts, message)
        self._dmarc(verdicts)
        return verdicts

    def _spf(self, verdicts: Verdicts, client_ip: str, helo: str, mail_from: str) -> None:
        # RFC 7208 §2.4: with a null reverse-path check postmaster@HELO.
        identity = mail_from or f"postmaster@{helo}"
        verdicts.spf_identity = mail_from or helo
        verdicts.spf_domain = identity.rpartition("@")[2].lower()
        try:
            result, _ = spf.check2(i=client_ip, s=identity, h=helo, timeout=10, querytime=20)
        except Exception:  # pyspf raises on malformed input it cannot classify
            result = "permerror"
        verdicts.spf = result if result in ("pass", "fail", "softfail", "neutral", "none", "temperror",
                                            "permerror") else "permerror"

    def _dkim(self, verdicts: Verdicts, message: bytes) -> None:
        header = message.split(b"\r\n\r\n", 1)[0]
        count = sum(1 for line in header.split(b"\r\n") if line.lower().startswith(b"dkim-signature:"))
        for index in range(min(count, 5)):  # RFC 6376 §6.1: a verifier may limit the signatures it checks
            checker = dkim.DKIM(message, minkey=self.dkim_min_key)
            try:
                ok = checker.verify(idx=index, dnsfunc=self.dns.dkim_txt)
            except dkim.DKIMException:
                ok = False
            tags = self._tags(message, index)
            verdicts.dkim.append(DkimResult("pass" if ok else "fail", tags.get("d", "").lower(), tags.get("s", ""),
                                            tags.get("b", "")[:8]))

    @staticmethod
    def _tags(message: bytes, index: int) -> dict[str, str]:
        header = message.split(b"\r\n\r\n", 1)[0]
        values = []
        for line in header.split(b"\r\n"):
            if line[:1] in (b" ", b"\t") and values is not None and values and values[-1] is not None:
                values[-1] += line
            elif line.lower().startswith(b"dkim-signature:"):
                values.append(line.split(b":", 1)[1])
            else:
                values.append(None)  # type: ignore[arg-type]
        sigs = [v for v in values if v is not None]
        try:
            parsed = dkim.util.parse_tag_value(sigs[index])
        except (dkim.util.InvalidTagValueList, IndexError):
            return {}
        return {k.decode(): b"".join(v.split()).decode("ascii", "replace") for k, v in parsed.items()}

    def _arc(self, verdicts: Verdicts, message: bytes) -> None:
        header = message.split(b"\r\n\r\n", 1)[0].lower()
        if b"arc-seal:" not in header:
            return
        try:
            cv, _, _ = dkim.arc_verify(message, dnsfunc=self.dns.dkim_txt, minkey=self.dkim_min_key)
        except Exception:
            cv = b"fail"
        verdicts.arc = cv.decode() if isinstance(cv, bytes) else str(cv)

    def policy(self, domain: str) -> DmarcPolicy | None:
        """RFC 7489 §6.6.3: the record at _dmarc.DOMAIN, else at the organizational domain."""
        for where in dict.fromkeys([domain, organizational_domain(domain)]):
            records = [r for r in self.dns.txt(f"_dmarc.{where}") if r.lower().startswith(b"v=dmarc1")]
            if len(records) != 1:
                continue
            tags = {}
            for part in records[0].decode("ascii", "replace").split(";"):
                key, _, value = part.strip().partition("=")
                tags[key.strip().lower()] = value.strip().lower()
            p = tags.get("p")
            if p not in ("none", "quarantine", "reject"):
                continue  # RFC 7489 §6.6.3: a record without a valid p is ignored
            sp = tags.get("sp") if tags.get("sp") in ("none", "quarantine", "reject") else None
            try:
                pct = int(tags.get("pct", "100"))
            except ValueError:
                pct = 100
            return DmarcPolicy(p, sp, "s" if tags.get("adkim") == "s" else "r",
                               "s" if tags.get("aspf") == "s" else "r", pct, where)
        return None

    def _dmarc(self, verdicts: Verdicts) -> None:
        domain = verdicts.from_domain
        if domain is None:
            verdicts.dmarc = "permerror"  # no single From domain to evaluate (RFC 7489 §6.6.1)
            return
        try:
            policy = self.policy(domain)
        except DNSTempError:
            verdicts.dmarc = "temperror"
            return
        if policy is None:
            return
        # RFC 7489 §6.3 sp: applies to subdomains of the domain where the record was found.
        verdicts.dmarc_policy = policy.sp if policy.sp and policy.found_at != domain else policy.p
        spf_ok = verdicts.spf == "pass" and aligned(verdicts.spf_domain, domain, policy.aspf)
        dkim_ok = any(d.result == "pass" and aligned(d.domain, domain, policy.adkim) for d in verdicts.dkim)
        verdicts.dmarc = "pass" if spf_ok or dkim_ok else "fail"


def authserv_id_of(value: bytes) -> str:
    """The authserv-id that starts an Authentication-Results value (RFC 8601 §2.2)."""
    text = value.decode("utf-8", "replace").strip()
    return text.split(";", 1)[0].split()[0].lower() if text else ""


def sender_domain(address: str) -> str:
    return email.utils.parseaddr(address)[1].rpartition("@")[2].lower()
