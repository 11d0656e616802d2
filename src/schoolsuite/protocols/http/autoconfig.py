"""Client autoconfiguration on the HTTPS listener.

- ``/.well-known/autoconfig/mail/config-v1.1.xml`` and ``/mail/config-v1.1.xml``
  (Thunderbird's autoconfig; served without login, it names no user): IMAP,
  SMTP submission, CalDAV and CardDAV.
- ``/autoconfig/apple.mobileconfig`` (an Apple configuration profile with a
  mail, a CalDAV and a CardDAV account) for the logged-in user (HTTP Basic,
  RFC 7617, checked by the shared authentication service; no password is put
  in the profile).
- ``/.well-known/mta-sts.txt``: the MTA-STS policy (RFC 8461 §3.2).

Everything comes from the config (services/clientsetup.py).
"""

from __future__ import annotations

import base64
import binascii
import plistlib
import uuid
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from twisted.internet import defer
from twisted.web import resource, server

from ... import server as assembly
from ...services.auth import AuthFailed
from ...services.clientsetup import ClientSetup, client_setup, mta_sts_policy, public_url
from .site import Options

__all__ = ["public_url", "thunderbird_xml", "mobileconfig"]

XML_TYPE = b"application/xml; charset=utf-8"
MOBILECONFIG_TYPE = b"application/x-apple-aspen-config"
_NS = uuid.UUID("6f1d3c53-2f0e-4a57-9b1c-4c5d2f1a7e10")


def thunderbird_xml(setup: ClientSetup) -> bytes:
    """The clientConfig document (Thunderbird's autoconfig format, version 1.1)."""
    def server(tag: str, kind: str, port: int, tls: str) -> list[str]:
        return [f"    <{tag} type={quoteattr(kind)}>",
                f"      <hostname>{escape(setup.hostname)}</hostname>",
                f"      <port>{port}</port>",
                f"      <socketType>{tls}</socketType>",
                "      <username>%EMAILADDRESS%</username>",
                "      <authentication>password-cleartext</authentication>",
                f"    </{tag}>"]

    lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<clientConfig version="1.1">',
             f"  <emailProvider id={quoteattr(setup.domain)}>",
             f"    <domain>{escape(setup.domain)}</domain>",
             f"    <displayName>{escape(setup.domain)}</displayName>",
             f"    <displayShortName>{escape(setup.domain.split('.')[0])}</displayShortName>"]
    for entry in setup.imap:
        lines += server("incomingServer", "imap", entry.port, entry.tls)
    for entry in setup.smtp:
        lines += server("outgoingServer", "smtp", entry.port, entry.tls)
    lines.append("  </emailProvider>")
    if setup.https_port is not None:
        for tag, kind in (("addressBook", "carddav"), ("calendar", "caldav")):
            lines += [f"  <{tag} type={quoteattr(kind)}>",
                      "    <username>%EMAILADDRESS%</username>",
                      "    <authentication>http-basic</authentication>",
                      f"    <serverURL>{escape(setup.dav_url)}</serverURL>",
                      f"  </{tag}>"]
    lines.append("</clientConfig>")
    return ("\n".join(lines) + "\n").encode()


def mobileconfig(setup: ClientSetup, address: str, name: str) -> bytes:
    """An Apple configuration profile: mail (IMAP + SMTP), CalDAV and CardDAV accounts, no password."""
    def ident(kind: str) -> tuple[str, str]:
        reverse = ".".join(reversed(setup.domain.split(".")))
        return f"{reverse}.schoolsuite.{kind}", str(uuid.uuid5(_NS, f"{kind}:{address}")).upper()

    content: list[dict[str, Any]] = []
    if setup.imap and setup.smtp:
        imap, smtp = setup.imap[0], setup.smtp[0]
        pid, puuid = ident("mail")
        content.append({
            "PayloadType": "com.apple.mail.managed", "PayloadVersion": 1, "PayloadIdentifier": pid,
            "PayloadUUID": puuid, "PayloadDisplayName": f"Mail ({address})",
            "EmailAccountType": "EmailTypeIMAP", "EmailAccountDescription": setup.domain,
            "EmailAccountName": name or address, "EmailAddress": address,
            "IncomingMailServerHostName": setup.hostname, "IncomingMailServerPortNumber": imap.port,
            "IncomingMailServerUseSSL": True, "IncomingMailServerUsername": address,
            "IncomingMailServerAuthentication": "EmailAuthPassword",
            "OutgoingMailServerHostName": setup.hostname, "OutgoingMailServerPortNumber": smtp.port,
            "OutgoingMailServerUseSSL": True, "OutgoingMailServerUsername": address,
            "OutgoingMailServerAuthentication": "EmailAuthPassword",
            "OutgoingPasswordSameAsIncomingPassword": True,
        })
    if setup.https_port is not None:
        home = f"{setup.dav_url}{address}/"
        for kind, prefix, label in (("caldav", "CalDAV", "Calendar"), ("carddav", "CardDAV", "Contacts")):
            pid, puuid = ident(kind)
            content.append({
                "PayloadType": f"com.apple.{kind}.account", "PayloadVersion": 1, "PayloadIdentifier": pid,
                "PayloadUUID": puuid, "PayloadDisplayName": f"{label} ({address})",
                f"{prefix}AccountDescription": f"{setup.domain} {label.lower()}",
                f"{prefix}HostName": setup.hostname, f"{prefix}Port": setup.https_port,
                f"{prefix}UseSSL": True, f"{prefix}Username": address, f"{prefix}PrincipalURL": home,
            })
    pid, puuid = ident("profile")
    profile = {
        "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": pid, "PayloadUUID": puuid,
        "PayloadDisplayName": f"{setup.domain}: mail, calendar, contacts",
        "PayloadDescription": f"Sets up {address} on this device; you type your password once.",
        "PayloadOrganization": setup.domain, "PayloadRemovalDisallowed": False, "PayloadContent": content,
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


class ProfileSigner:
    """Signs profiles as CMS SignedData (DER) with the server's TLS certificate, so that iOS and
    macOS show the profile as verified when the certificate comes from a trusted CA."""

    def __init__(self, cert_file: Any, key_file: Any) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        self._chain = x509.load_pem_x509_certificates(open(cert_file, "rb").read())
        self._key = serialization.load_pem_private_key(open(key_file, "rb").read(), password=None)

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.serialization import pkcs7

        builder = pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(
            self._chain[0], self._key, hashes.SHA256())  # type: ignore[arg-type]
        for extra in self._chain[1:]:
            builder = builder.add_certificate(extra)
        return builder.sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


class ThunderbirdConfig(resource.Resource):
    """``config-v1.1.xml``: the same document for everyone (``?emailaddress=`` is not needed)."""

    isLeaf = True

    def __init__(self, setup: ClientSetup) -> None:
        super().__init__()
        self._body = thunderbird_xml(setup)

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", XML_TYPE)
        request.setHeader(b"Cache-Control", b"max-age=3600")
        return self._body

    render_HEAD = render_GET

    def render_OPTIONS(self, request: server.Request) -> bytes:
        return Options().render_OPTIONS(request)


class AppleProfile(resource.Resource):
    """The ``.mobileconfig`` of the user who logs in with HTTP Basic (RFC 7617)."""

    isLeaf = True
    REALM = b'Basic realm="schoolsuite", charset="UTF-8"'

    def __init__(self, setup: ClientSetup, auth: Any, accounts: Any, signer: ProfileSigner | None = None) -> None:
        super().__init__()
        self._setup = setup
        self._auth = auth
        self._accounts = accounts
        self._signer = signer

    def render_GET(self, request: server.Request) -> Any:
        credentials = _basic(request.getHeader(b"authorization"))
        if credentials is None:
            return self._challenge(request)
        client = getattr(request.getClientAddress(), "host", None)
        d = defer.maybeDeferred(self._auth.authenticate, credentials[0], credentials[1], client, "https")

        def ok(principal: Any) -> None:
            body = mobileconfig(self._setup, principal.address, self._name(principal.address))
            if self._signer is not None:
                body = self._signer.sign(body)
            request.setHeader(b"Content-Type", MOBILECONFIG_TYPE)
            request.setHeader(b"Content-Disposition", b'attachment; filename="schoolsuite.mobileconfig"')
            request.setHeader(b"Cache-Control", b"no-store")
            request.write(body)
            request.finish()

        def refused(failure: Any) -> None:
            failure.trap(AuthFailed)
            request.write(self._challenge(request))
            request.finish()

        d.addCallbacks(ok, refused).addErrback(lambda f: _fault(request, f))
        return server.NOT_DONE_YET

    def _name(self, address: str) -> str:
        try:
            return self._accounts.get(address).name
        except Exception:  # deleted in between: the address will do
            return ""

    def _challenge(self, request: server.Request) -> bytes:
        request.setResponseCode(401)
        request.setHeader(b"WWW-Authenticate", self.REALM)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"log in with your school address and password\n"


def _fault(request: server.Request, failure: Any) -> None:
    from twisted.logger import Logger

    incident = uuid.uuid4().hex[:12]
    Logger(namespace="schoolsuite.autoconfig").failure("autoconfig fault: incident={incident}", failure,
                                                        incident=incident)
    if not request.finished and not request._disconnected:
        request.setResponseCode(500)
        request.write(f"internal error (incident {incident})\n".encode())
        request.finish()


def _basic(header: bytes | None) -> tuple[str, str] | None:
    """RFC 7617 §2: ``Basic base64(user-id ":" password)``, UTF-8."""
    if not header:
        return None
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep and user else None


class MtaStsPolicy(resource.Resource):
    isLeaf = True

    def __init__(self, policy: str) -> None:
        super().__init__()
        self._body = policy.encode()

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")  # RFC 8461 §3.2
        return self._body


def _mail(ctx: Any) -> resource.Resource:
    mail = resource.Resource()
    mail.putChild(b"config-v1.1.xml", ThunderbirdConfig(client_setup(ctx.config)))
    return mail


def _apple(ctx: Any) -> resource.Resource:
    folder = resource.Resource()
    try:
        signer: ProfileSigner | None = ProfileSigner(ctx.config.paths.tls_cert_file, ctx.config.paths.tls_key_file)
    except (OSError, ValueError, TypeError) as exc:  # serve unsigned profiles rather than none
        from twisted.logger import Logger

        Logger(namespace="schoolsuite.autoconfig").warn("profiles are not signed: {error}", error=str(exc))
        signer = None
    profile = AppleProfile(client_setup(ctx.config), ctx.services.auth, ctx.services.accounts, signer)
    folder.putChild(b"apple.mobileconfig", profile)
    return folder


def _well_known_autoconfig(ctx: Any) -> resource.Resource:
    autoconfig = resource.Resource()
    autoconfig.putChild(b"mail", _mail(ctx))
    return autoconfig


assembly.HTTP_MOUNTS[b"mail"] = _mail
assembly.HTTP_MOUNTS[b"autoconfig"] = _apple
assembly.HTTP_MOUNTS[b".well-known/autoconfig"] = _well_known_autoconfig
assembly.HTTP_MOUNTS[b".well-known/mta-sts.txt"] = lambda ctx: MtaStsPolicy(mta_sts_policy(ctx.config))
