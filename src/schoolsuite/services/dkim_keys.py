"""DKIM signing keys per domain (RFC 6376) and the signing of outgoing mail.

``generate`` makes an RSA-2048 key (RFC 8301 §3.2: at least 1024, 2048
recommended), keeps the private part sealed in the store (storage/queue.py,
directory records ``K``) and returns the DNS TXT record to publish at
``SELECTOR._domainkey.DOMAIN``. :class:`DkimSigner` signs with dkimpy,
relaxed/relaxed canonicalisation, rsa-sha256.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from twisted.logger import Logger

from ..storage import Store
from ..storage import queue as records

log = Logger(namespace="schoolsuite.dkim")

DEFAULT_SELECTOR = "schoolsuite"
# RFC 6376 §5.4.1: From must be signed; the rest are the fields a replay or edit would change.
SIGNED_HEADERS = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to", b"in-reply-to",
                  b"references", b"mime-version", b"content-type", b"content-transfer-encoding", b"sender")


@dataclass(frozen=True)
class GeneratedKey:
    domain: str
    selector: str
    record_name: str
    record_text: str  # the TXT value

    @property
    def zone_line(self) -> str:
        """The record in zone-file form, split into 255-octet strings (RFC 1035 §3.3.14)."""
        chunks = [self.record_text[i : i + 250] for i in range(0, len(self.record_text), 250)]
        return f'{self.record_name}. IN TXT ( ' + " ".join(f'"{c}"' for c in chunks) + " )"


def public_record(private_pem: str) -> str:
    """The ``v=DKIM1`` TXT value for a private key (RFC 6376 §3.6.1)."""
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")


def generate(store: Store, domain: str, selector: str = DEFAULT_SELECTOR, *, replace: bool = False) -> GeneratedKey:
    """Create (or with ``replace``, rotate) the signing key of ``domain``."""
    domain = domain.strip().lower().rstrip(".")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode("ascii")
    with store.write() as txn:
        if records.get_dkim_key(txn, domain) is not None and not replace:
            raise KeyExists(domain)
        records.put_dkim_key(txn, records.DkimKey(domain, selector, pem, time.time()))
    return GeneratedKey(domain, selector, f"{selector}._domainkey.{domain}", public_record(pem))


def describe(store: Store, domain: str) -> GeneratedKey | None:
    """The published record of an existing key, or None."""
    with store.read() as txn:
        key = records.get_dkim_key(txn, domain.strip().lower().rstrip("."))
    if key is None:
        return None
    return GeneratedKey(key.domain, key.selector, f"{key.selector}._domainkey.{key.domain}",
                        public_record(key.private_pem))


class KeyExists(Exception):
    def __init__(self, domain: str) -> None:
        super().__init__(f"a DKIM key for {domain} exists already (use --replace to rotate it)")


class DkimSigner:
    """Signs messages whose From domain has a key; keys are read from the store on use."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def key_for(self, domain: str) -> records.DkimKey | None:
        with self._store.read() as txn:
            return records.get_dkim_key(txn, domain.lower())

    def sign(self, message: bytes, domain: str) -> bytes:
        """``message`` with a DKIM-Signature prepended, or unchanged when ``domain`` has no key.

        CPU-bound: call it off the reactor thread.
        """
        key = self.key_for(domain)
        if key is None:
            return message
        present = {name.split(b":", 1)[0].strip().lower() for name in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                   if b":" in name and name[:1] not in (b" ", b"\t")}
        include = [h for h in SIGNED_HEADERS if h in present]
        try:
            signature = dkim.sign(message, key.selector.encode(), domain.encode(), key.private_pem.encode(),
                                  canonicalize=(b"relaxed", b"relaxed"), include_headers=include,
                                  linesep=b"\r\n")
        except dkim.DKIMException as exc:  # a header dkimpy cannot parse: send unsigned rather than not at all
            log.warn("DKIM signing for {domain} skipped: {error}", domain=domain, error=str(exc)[:200])
            return message
        return signature + message
