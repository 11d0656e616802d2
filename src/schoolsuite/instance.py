"""Making and finding an instance: config, TLS certificate, master key, store.

Layout (interfaces.md): ``DIR/schoolsuite.toml``, ``DIR/tls/{cert,key}.pem``,
``DIR/secrets/master.key`` (mode 0600, never inside the store), ``DIR/data/``.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
from argparse import Namespace
from pathlib import Path
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from schoolsuite.config import CONFIG_NAME, Config, ConfigError, check_hostname, load_config, render_sample
from schoolsuite.errors import UserError

if TYPE_CHECKING:
    from schoolsuite.storage import Store

CERT_DAYS = 825  # the longest validity Apple clients accept for a TLS server certificate


class InstanceError(UserError):
    """An instance cannot be made, found or opened (one-line message)."""


def instance_paths(directory: Path) -> dict[str, Path]:
    """The files and directories ``init`` creates, by role."""
    return {
        "config": directory / CONFIG_NAME,
        "cert": directory / "tls" / "cert.pem",
        "key": directory / "tls" / "key.pem",
        "master_key": directory / "secrets" / "master.key",
        "data": directory / "data",
    }


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (fails if it exists)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def make_self_signed(hostname: str, cert_path: Path, key_path: Path) -> None:
    """A self-signed ECDSA P-256 certificate for hostname, localhost, 127.0.0.1 and ::1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys([hostname, "localhost"])]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def init_instance(directory: Path, domain: str, hostname: str) -> Path:
    """Make a ready-to-run instance in ``directory``; return its config path.

    Refuses when any part of an instance is already there.
    """
    from schoolsuite.storage import Store
    from schoolsuite.storage.crypto import write_master_key

    try:
        domain, hostname = check_hostname(domain), check_hostname(hostname)
    except ValueError as exc:
        raise InstanceError(str(exc)) from None
    directory = Path(directory)
    paths = instance_paths(directory)
    for path in paths.values():
        if path.exists():
            raise InstanceError(f"{path} exists already; refusing to overwrite an instance")
    try:
        for sub in ("tls", "secrets"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(directory / "secrets", 0o700)
        paths["config"].write_text(render_sample(domain, hostname))
        make_self_signed(hostname, paths["cert"], paths["key"])
        write_master_key(paths["master_key"])
        config = load_config(paths["config"])
        master_key = _load_key(config)
        Store.open(config.paths.data_dir, master_key, map_size=config.store.map_size).close()
    except OSError as exc:
        raise InstanceError(f"cannot create instance in {directory}: {exc.strerror}: {exc.filename}") from None
    except UserError:
        raise
    except Exception as exc:  # StoreError, MasterKeyError: already one line
        raise InstanceError(str(exc)) from None
    return paths["config"]


def find_config(args: Namespace | Any) -> Path:
    """The config file: ``-c`` beats ``$SCHOOLSUITE_CONFIG`` beats ``./schoolsuite.toml``."""
    given = getattr(args, "config", None) or os.environ.get("SCHOOLSUITE_CONFIG")
    if given:
        path = Path(given)
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            raise InstanceError(f"no instance: config file {path} does not exist")
        return path
    path = Path.cwd() / CONFIG_NAME
    if path.is_file():
        return path
    raise InstanceError(f"no instance: give -c DIR/{CONFIG_NAME}, set SCHOOLSUITE_CONFIG, "
                        f"or run in a directory with {CONFIG_NAME} (make one with 'schoolsuite init DIR')")


def _load_key(config: Config) -> bytes:
    from schoolsuite.storage.crypto import MasterKeyError, load_master_key

    try:
        return load_master_key(config.paths.master_key_path())
    except MasterKeyError as exc:
        raise InstanceError(str(exc)) from None


def open_store(config: Config) -> Store:
    """Load the master key and open the store; errors become one-line InstanceErrors."""
    from schoolsuite.storage import Store, StoreError

    key = _load_key(config)
    try:
        return Store.open(config.paths.data_dir, key, map_size=config.store.map_size)
    except StoreError as exc:
        raise InstanceError(str(exc)) from None


def open_instance(args: Namespace | Any) -> tuple[Config, Store]:
    """Find and load the config, then open its store (for the CLI's account commands)."""
    config = load_config(find_config(args))
    return config, open_store(config)



@contextlib.contextmanager
def instance_store(args: Namespace | Any) -> Iterator[tuple[Config, "Store"]]:
    """(config, store) of the instance for one CLI command; the store is closed afterwards."""
    config, store = open_instance(args)
    try:
        yield config, store
    finally:
        store.close()


__all__ = ["ConfigError", "InstanceError", "find_config", "init_instance", "instance_store", "open_instance",
           "open_store"]
