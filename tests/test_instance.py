"""`init_instance`, `find_config` and `open_instance`: the instance layout of interfaces.md."""

from __future__ import annotations

import ipaddress
import stat
from argparse import Namespace
from pathlib import Path

import pytest
from cryptography import x509

from schoolsuite.config import load_config
from schoolsuite.instance import InstanceError, find_config, init_instance, open_instance


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_makes_every_part(tmp_path: Path) -> None:
    """init writes config, cert, key, master key and store, and the config loads."""
    config = init_instance(tmp_path / "i", "school.example", "mail.school.example")
    d = tmp_path / "i"
    assert config == d / "schoolsuite.toml"
    for part in ("tls/cert.pem", "tls/key.pem", "secrets/master.key"):
        assert (d / part).is_file(), part
    assert (d / "data").is_dir() and any((d / "data").iterdir())
    cfg = load_config(config)
    assert cfg.instance.domain == "school.example" and cfg.instance.hostname == "mail.school.example"
    assert cfg.paths.data_dir == (d / "data").resolve()


def test_secrets_are_private(tmp_path: Path) -> None:
    """The TLS key and master key are mode 0600; the secrets directory is 0700."""
    init_instance(tmp_path / "i", "school.example", "localhost")
    assert mode(tmp_path / "i" / "tls" / "key.pem") == 0o600
    assert mode(tmp_path / "i" / "secrets" / "master.key") == 0o600
    assert mode(tmp_path / "i" / "secrets") == 0o700


def test_certificate_names(tmp_path: Path) -> None:
    """The certificate covers the hostname, localhost, 127.0.0.1 and ::1, for server auth only."""
    init_instance(tmp_path / "i", "school.example", "Mail.School.Example")
    cert = x509.load_pem_x509_certificate((tmp_path / "i" / "tls" / "cert.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mail.school.example", "localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"),
                                                            ipaddress.ip_address("::1")}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize("part", ["schoolsuite.toml", "tls/cert.pem", "secrets/master.key", "data"])
def test_init_refuses_existing_instance(tmp_path: Path, part: str) -> None:
    """init refuses when any part of an instance exists, and leaves that part untouched."""
    target = tmp_path / "i" / part
    target.parent.mkdir(parents=True, exist_ok=True)
    if part == "data":
        target.mkdir()
    else:
        target.write_text("keep")
    with pytest.raises(InstanceError, match="refusing to overwrite"):
        init_instance(tmp_path / "i", "school.example", "localhost")
    if part != "data":
        assert target.read_text() == "keep"


def test_init_refuses_bad_names(tmp_path: Path) -> None:
    """A hostname that is not a DNS name is refused before anything is written."""
    with pytest.raises(InstanceError, match="invalid DNS name"):
        init_instance(tmp_path / "i", "school.example", "no such/host")
    assert not (tmp_path / "i").exists()


def test_find_config_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """-c beats $SCHOOLSUITE_CONFIG beats ./schoolsuite.toml; none of them is a clear error."""
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        d.mkdir()
        (d / "schoolsuite.toml").write_text("")
    monkeypatch.chdir(c)
    monkeypatch.setenv("SCHOOLSUITE_CONFIG", str(b / "schoolsuite.toml"))
    assert find_config(Namespace(config=str(a / "schoolsuite.toml"))) == a / "schoolsuite.toml"
    assert find_config(Namespace(config=None)) == b / "schoolsuite.toml"
    monkeypatch.delenv("SCHOOLSUITE_CONFIG")
    assert find_config(Namespace(config=None)) == c / "schoolsuite.toml"
    assert find_config(Namespace(config=str(a))) == a / "schoolsuite.toml"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InstanceError, match="^no instance: "):
        find_config(Namespace(config=None))


def test_open_instance(tmp_path: Path) -> None:
    """open_instance loads the config and opens the store with the master key."""
    config_path = init_instance(tmp_path / "i", "school.example", "localhost")
    config, store = open_instance(Namespace(config=str(config_path)))
    try:
        assert config.instance.hostname == "localhost"
    finally:
        store.close()


def test_open_instance_wrong_key(tmp_path: Path) -> None:
    """A master key from another instance is refused with one line."""
    init_instance(tmp_path / "i", "school.example", "localhost")
    init_instance(tmp_path / "j", "school.example", "localhost")
    key = tmp_path / "i" / "secrets" / "master.key"
    key.chmod(0o600)
    key.write_bytes((tmp_path / "j" / "secrets" / "master.key").read_bytes())
    with pytest.raises(InstanceError) as info:
        open_instance(Namespace(config=str(tmp_path / "i" / "schoolsuite.toml")))
    assert "\n" not in str(info.value)
