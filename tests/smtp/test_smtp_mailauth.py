"""DMARC evaluation, alignment, organizational domains and the Authentication-Results field."""

from __future__ import annotations

import pytest

from schoolsuite.services import mailauth
from schoolsuite.services.mailauth import DkimResult, MailAuthenticator, Verdicts, aligned, organizational_domain


class FakeDNS:
    def __init__(self, txt: dict[str, list[bytes]]) -> None:
        self.records = txt

    def txt(self, name: str) -> list[bytes]:
        return self.records.get(name, [])


@pytest.mark.parametrize("domain,org", [
    ("mail.school.example", "school.example"),
    ("a.b.example.co.uk", "example.co.uk"),
    ("www.example.com", "example.com"),
])
def test_organizational_domain(domain: str, org: str) -> None:
    """Organizational domains are one label below the public suffix (RFC 7489 §3.2)."""
    assert organizational_domain(domain) == org


def test_organizational_domain_uses_public_suffix_list() -> None:
    """With Debian's list, wildcard and exception rules apply (*.kawasaki.jp, !city.kawasaki.jp)."""
    if mailauth._suffix_rules() is None:
        pytest.skip("publicsuffix not installed")
    assert organizational_domain("x.foo.kawasaki.jp") == "x.foo.kawasaki.jp"
    assert organizational_domain("www.city.kawasaki.jp") == "city.kawasaki.jp"
    assert organizational_domain("user.github.io") == "user.github.io"


def test_alignment_modes() -> None:
    """Relaxed alignment matches subdomains of the organizational domain; strict needs equality."""
    assert aligned("news.parents.example", "parents.example", "r")
    assert not aligned("news.parents.example", "parents.example", "s")
    assert not aligned("parents.example.evil.example", "parents.example", "r")


def _dmarc(records: dict[str, list[bytes]], verdicts: Verdicts) -> Verdicts:
    MailAuthenticator(FakeDNS(records))._dmarc(verdicts)  # type: ignore[arg-type]
    return verdicts


def test_dmarc_pass_by_aligned_dkim_despite_spf_fail() -> None:
    """DMARC passes on an aligned DKIM pass even when SPF fails."""
    v = _dmarc({"_dmarc.parents.example": [b"v=DMARC1; p=reject"]},
               Verdicts(spf="fail", spf_domain="bounce.other.example",
                        dkim=[DkimResult("pass", "mail.parents.example", "s", "x")], from_domain="parents.example"))
    assert v.dmarc == "pass" and not v.dmarc_reject


def test_dmarc_strict_dkim_alignment_fails_subdomain() -> None:
    """adkim=s refuses a signature by a subdomain; with SPF unaligned the result is fail and p=reject applies."""
    v = _dmarc({"_dmarc.bank.example": [b"v=DMARC1; p=reject; adkim=s"]},
               Verdicts(spf="pass", spf_domain="mailer.example",
                        dkim=[DkimResult("pass", "mail.bank.example", "s", "x")], from_domain="bank.example"))
    assert v.dmarc == "fail" and v.dmarc_reject


def test_dmarc_subdomain_policy_from_org_record() -> None:
    """A subdomain without its own record uses the organizational record's sp= policy."""
    v = _dmarc({"_dmarc.bank.example": [b"v=DMARC1; p=reject; sp=none"]},
               Verdicts(spf="fail", spf_domain="x.example", from_domain="alerts.bank.example"))
    assert v.dmarc == "fail" and v.dmarc_policy == "none" and not v.dmarc_reject


def test_dmarc_none_without_record_and_invalid_policy_ignored() -> None:
    """No record (or one without a valid p=) means dmarc=none; several From domains mean permerror."""
    assert _dmarc({}, Verdicts(from_domain="x.example")).dmarc == "none"
    assert _dmarc({"_dmarc.x.example": [b"v=DMARC1; p=bogus"]}, Verdicts(from_domain="x.example")).dmarc == "none"
    assert _dmarc({}, Verdicts(from_domain=None)).dmarc == "permerror"


def test_authentication_results_field() -> None:
    """The header names the authserv-id and each method with its properties (RFC 8601)."""
    v = Verdicts(spf="pass", spf_identity="mum@parents.example", spf_domain="parents.example",
                 dkim=[DkimResult("pass", "parents.example", "p1", "abcdefgh")], arc="none", dmarc="pass",
                 dmarc_policy="reject", from_domain="parents.example")
    field = v.header("mx.school.example").replace("\r\n\t", " ")
    assert field == ("Authentication-Results: mx.school.example; spf=pass smtp.mailfrom=mum@parents.example; "
                     "dkim=pass header.d=parents.example header.s=p1 header.b=abcdefgh; arc=none; "
                     "dmarc=pass (p=reject) header.from=parents.example")
