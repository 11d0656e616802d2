"""Server TLS contexts (pyOpenSSL through Twisted's CertificateOptions).

One context serves implicit-TLS listeners (wrapped in TLSMemoryBIOFactory) and
STARTTLS alike (``transport.startTLS(context)``). TLS 1.2 is the floor
(RFC 8996 deprecates 1.0/1.1; RFC 9325 §3.1); ciphers are AEAD with forward
secrecy (RFC 9325 §4.2); no compression (CRIME, RFC 9325 §3.3) and no
client-initiated renegotiation.
"""

from __future__ import annotations

from pathlib import Path

from OpenSSL import SSL, crypto
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion

from schoolsuite.config import Config
from schoolsuite.errors import UserError

_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}


class TLSSetupError(UserError):
    """The certificate or key cannot be used (one-line message)."""


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TLSSetupError(f"TLS {what} file {path} is missing") from None
    except OSError as exc:
        raise TLSSetupError(f"cannot read TLS {what} file {path}: {exc.strerror}") from None


def _load_chain(cert_pem: bytes, path: Path) -> list[crypto.X509]:
    """Every certificate in a PEM bundle, leaf first."""
    marker = b"-----BEGIN CERTIFICATE-----"
    blocks = [marker + part for part in cert_pem.split(marker)[1:]]
    try:
        chain = [crypto.load_certificate(crypto.FILETYPE_PEM, b) for b in blocks]
    except crypto.Error:
        chain = []
    if not chain:
        raise TLSSetupError(f"TLS certificate file {path} holds no PEM certificate")
    return chain


class _ServerOptions(CertificateOptions):
    """CertificateOptions that also refuses client-initiated renegotiation."""

    def _makeContext(self) -> SSL.Context:
        ctx = super()._makeContext()
        # OP_NO_RENEGOTIATION (OpenSSL >= 1.1.0h); pyOpenSSL may not name it.
        ctx.set_options(getattr(SSL, "OP_NO_RENEGOTIATION", 0x40000000))
        return ctx


def server_context(cert_file: Path, key_file: Path, *, min_version: str = "1.2",
                   ciphers: str | None = None) -> CertificateOptions:
    """A server context factory for implicit TLS and STARTTLS."""
    chain = _load_chain(_read_pem(cert_file, "certificate"), cert_file)
    try:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, _read_pem(key_file, "key"))
    except crypto.Error:
        raise TLSSetupError(f"TLS key file {key_file} holds no usable PEM private key") from None
    kwargs = {}
    if ciphers:
        kwargs["acceptableCiphers"] = AcceptableCiphers.fromOpenSSLCipherString(ciphers)
    try:
        options = _ServerOptions(
            privateKey=key.to_cryptography_key(),
            certificate=chain[0].to_cryptography(),
            extraCertChain=[c.to_cryptography() for c in chain[1:]],
            raiseMinimumTo=_VERSIONS[min_version],
            enableSessions=False,
            **kwargs,
        )
        options.getContext()  # fail now, not on the first connection
    except SSL.Error as exc:
        raise TLSSetupError(f"TLS certificate {cert_file} and key {key_file} do not match or are unusable: {exc}"
                            ) from None
    return options


def context_for(config: Config) -> CertificateOptions:
    """The server context of an instance's ``[paths]`` and ``[tls]`` settings."""
    return server_context(config.paths.tls_cert_file, config.paths.tls_key_file,
                          min_version=config.tls.min_version, ciphers=config.tls.ciphers)
