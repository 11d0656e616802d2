"""Client autoconfiguration over HTTPS: Thunderbird's config-v1.1.xml, the Apple profile, MTA-STS."""

from __future__ import annotations

import plistlib
import subprocess
from typing import Any
import re
import xml.etree.ElementTree as ET

from ops_helpers import Served
from ops_helpers import Client
from support import require_program
from schoolsuite.config import Config
from schoolsuite.protocols.http.autoconfig import thunderbird_xml
from schoolsuite.services.clientsetup import client_setup

PASSWORD = "correct horse battery"
# Thunderbird's Sanitizer.hostname (accountcreation/Sanitizer.sys.mjs): letters, digits, dots, hyphens.
_TB_HOSTNAME = re.compile(r"^[a-z0-9\-._]+$", re.I)


def thunderbird_reads(xml: bytes) -> dict[str, list[dict[str, str]]]:
    """What Thunderbird's readFromXML takes from the document; AssertionError where it would throw."""
    root = ET.fromstring(xml)
    assert root.tag == "clientConfig", "no clientConfig"
    provider = root.find("emailProvider")
    assert provider is not None, "no_emailProvider.error"
    assert _TB_HOSTNAME.match(provider.get("id", "")), "emailProvider@id is not a hostname"
    domains = [d.text or "" for d in provider.findall("domain")]
    assert domains and all(_TB_HOSTNAME.match(d) for d in domains), "need proper <domain>"
    out: dict[str, list[dict[str, str]]] = {"incoming": [], "outgoing": [], "dav": []}
    for tag, kinds, auths in (("incomingServer", ("pop3", "imap", "nntp", "exchange"),
                               ("password-cleartext", "plain", "password-encrypted", "secure", "GSSAPI", "NTLM")),
                              ("outgoingServer", ("smtp",),
                               ("none", "client-IP-address", "smtp-after-pop", "password-cleartext", "plain",
                                "password-encrypted", "secure", "GSSAPI", "NTLM"))):
        for server in provider.findall(tag):
            assert server.get("type") in kinds, f"{tag} type"
            hostname = server.findtext("hostname") or ""
            assert _TB_HOSTNAME.match(hostname), "hostname"
            port = int(server.findtext("port") or "0")
            assert 1 <= port <= 65535, "port out of range"
            sockets = [s.text for s in server.findall("socketType") if s.text in ("plain", "SSL", "STARTTLS")]
            assert sockets, "need proper <socketType>"
            methods = [a.text for a in server.findall("authentication") if a.text in auths]
            assert methods, "need proper <authentication>"
            assert server.findtext("username") is not None, "username"
            out["incoming" if tag == "incomingServer" else "outgoing"].append(
                {"type": server.get("type", ""), "hostname": hostname, "port": str(port), "socketType": sockets[0],
                 "username": server.findtext("username") or "", "auth": methods[0]})
        assert out["incoming" if tag == "incomingServer" else "outgoing"], f"Need proper <{tag}>"
    for tag in ("addressBook", "calendar"):
        for item in root.findall(tag):
            out["dav"].append({"tag": tag, "type": item.get("type", ""), "url": item.findtext("serverURL") or "",
                               "username": item.findtext("username") or ""})
    return out


def test_thunderbird_config_on_both_paths(served: Served) -> None:
    """Both autoconfig paths serve the same XML that Thunderbird's reader accepts, with our ports."""
    inst = served.instance
    anon = Client(inst)
    one = anon.request("GET", "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=a%40school.example")
    two = anon.request("GET", "/mail/config-v1.1.xml")
    assert one.status == two.status == 200 and one.raw == two.raw
    assert one.headers["content-type"].startswith("application/xml")
    read = thunderbird_reads(one.raw)
    assert read["incoming"][0] == {"type": "imap", "hostname": "localhost", "port": str(inst.ports["imaps"]),
                                   "socketType": "SSL", "username": "%EMAILADDRESS%", "auth": "password-cleartext"}
    assert {(s["port"], s["socketType"]) for s in read["incoming"]} == {
        (str(inst.ports["imaps"]), "SSL"), (str(inst.ports["imap"]), "STARTTLS")}
    assert {(s["port"], s["socketType"]) for s in read["outgoing"]} == {
        (str(inst.ports["submissions"]), "SSL"), (str(inst.ports["submission"]), "STARTTLS")}
    dav_url = f"https://localhost:{inst.ports['https']}/dav/"
    assert {(d["tag"], d["type"], d["url"]) for d in read["dav"]} == {
        ("addressBook", "carddav", dav_url), ("calendar", "caldav", dav_url)}


def test_thunderbird_config_follows_listeners() -> None:
    """A disabled implicit-TLS listener drops out; systemd endpoints publish the standard ports."""
    config = Config()
    config.listeners.imaps.enabled = False
    config.listeners.submission.endpoint = "systemd:domain=INET6:name=submission"
    config.listeners.https.endpoint = "systemd:domain=INET6:name=https"
    read = thunderbird_reads(thunderbird_xml(client_setup(config)))
    assert [(s["port"], s["socketType"]) for s in read["incoming"]] == [("1143", "STARTTLS")]
    assert ("587", "STARTTLS") in [(s["port"], s["socketType"]) for s in read["outgoing"]]
    assert read["dav"][0]["url"] == "https://mail.school.example/dav/"


def test_apple_profile_for_logged_in_user(served: Served) -> None:
    """The .mobileconfig needs the password, is signed with the server certificate, and sets up mail, CalDAV, CardDAV."""
    inst = served.instance
    assert served.client().create_user("ios@school.example", password=PASSWORD,
                                       displayName="Io S").status == 201
    path = "/autoconfig/apple.mobileconfig"
    refused = Client(inst).request("GET", path)
    assert refused.status == 401 and refused.headers["www-authenticate"].startswith("Basic")
    assert Client(inst, basic=("ios@school.example", "wrong password!")).request("GET", path).status == 401
    reply = Client(inst, basic=("ios@school.example", PASSWORD)).request("GET", path)
    assert reply.status == 200 and reply.headers["content-type"] == "application/x-apple-aspen-config"
    profile = plistlib.loads(_verified(inst, reply.raw))
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    payloads = {p["PayloadType"]: p for p in profile["PayloadContent"]}
    assert set(payloads) == {"com.apple.mail.managed", "com.apple.caldav.account", "com.apple.carddav.account"}
    mail = payloads["com.apple.mail.managed"]
    assert mail["EmailAddress"] == "ios@school.example" and mail["EmailAccountType"] == "EmailTypeIMAP"
    assert mail["IncomingMailServerPortNumber"] == inst.ports["imaps"] and mail["IncomingMailServerUseSSL"]
    assert mail["OutgoingMailServerPortNumber"] == inst.ports["submissions"]
    assert mail["EmailAccountName"] == "Io S"
    cal = payloads["com.apple.caldav.account"]
    assert cal["CalDAVPort"] == inst.ports["https"] and cal["CalDAVPrincipalURL"].endswith("/dav/ios@school.example/")
    uuids = [p["PayloadUUID"] for p in profile["PayloadContent"]] + [profile["PayloadUUID"]]
    assert len(set(uuids)) == len(uuids)
    assert PASSWORD.encode() not in reply.raw


def _verified(inst: Any, signed: bytes) -> bytes:
    """The profile inside the CMS signature, verified by openssl against the server's certificate."""
    openssl = require_program("openssl")
    proc = subprocess.run([openssl, "cms", "-verify", "-inform", "DER", "-CAfile", str(inst.cert),
                           "-purpose", "any"], input=signed, capture_output=True, timeout=60)
    assert proc.returncode == 0 and b"Verification successful" in proc.stderr, proc.stderr
    tampered = bytearray(signed)
    at = signed.index(b"<plist")
    tampered[at + 20] ^= 1
    bad = subprocess.run([openssl, "cms", "-verify", "-inform", "DER", "-CAfile", str(inst.cert),
                          "-purpose", "any"], input=bytes(tampered), capture_output=True, timeout=60)
    assert bad.returncode != 0
    return proc.stdout


def test_disabled_user_gets_no_profile(served: Served) -> None:
    """active=false via SCIM refuses the login at once (401), and re-enabling lets it in again."""
    c = served.client()
    uid = c.create_user("paused@school.example", password=PASSWORD).json["id"]
    basic = ("paused@school.example", PASSWORD)
    assert Client(served.instance, basic=basic).request("GET", "/autoconfig/apple.mobileconfig").status == 200
    assert c.patch("Users", uid, {"op": "replace", "path": "active", "value": False}).status == 200
    assert Client(served.instance, basic=basic).request("GET", "/autoconfig/apple.mobileconfig").status == 401
    assert c.patch("Users", uid, {"op": "replace", "path": "active", "value": True}).status == 200
    assert Client(served.instance, basic=basic).request("GET", "/autoconfig/apple.mobileconfig").status == 200


def test_mta_sts_policy(served: Served) -> None:
    """/.well-known/mta-sts.txt is the RFC 8461 policy naming our MX host in enforce mode."""
    reply = Client(served.instance).request("GET", "/.well-known/mta-sts.txt")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    assert reply.raw.split(b"\r\n")[:3] == [b"version: STSv1", b"mode: enforce", b"mx: localhost"]


def test_password_set_later_by_patch(served: Served) -> None:
    """An account created without a password cannot log in until the portal PATCHes one."""
    c = served.client()
    uid = c.create_user("later@school.example").json["id"]
    basic = ("later@school.example", PASSWORD)
    assert Client(served.instance, basic=basic).request("GET", "/autoconfig/apple.mobileconfig").status == 401
    reply = c.patch("Users", uid, {"op": "add", "path": "password", "value": PASSWORD})
    assert reply.status == 200 and "password" not in reply.json
    assert Client(served.instance, basic=basic).request("GET", "/autoconfig/apple.mobileconfig").status == 200
