"""The config schema: loading, refusing mistakes with one line, the generated sample."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from schoolsuite.config import (
    Config, ConfigError, format_size, load_config, parse_size, render_sample)

REPO = Path(__file__).resolve().parent.parent


def load_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "schoolsuite.toml"
    path.write_text(text)
    return load_config(path)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_sample_file_is_generated_from_schema() -> None:
    """conf/schoolsuite.toml is exactly render_sample() for school.example (regenerate it if this fails)."""
    assert (REPO / "conf" / "schoolsuite.toml").read_text() == render_sample("school.example", "mail.school.example")


def test_sample_loads_to_defaults(tmp_path: Path) -> None:
    """The generated sample loads back to the schema defaults."""
    cfg = load_text(tmp_path, render_sample("school.example", "mail.school.example"))
    default = Config()
    assert cfg.listeners == default.listeners
    assert cfg.auth == default.auth and cfg.tls == default.tls and cfg.store == default.store


def test_default_listeners_match_interface_contract() -> None:
    """Default ports and TLS modes are those of interfaces.md, all on 127.0.0.1."""
    expected = {"imap": (1143, "starttls"), "imaps": (1993, "implicit"), "submission": (1587, "starttls"),
                "submissions": (1465, "implicit"), "mx": (1025, "starttls"), "https": (8443, "implicit"),
                "metrics": (9464, "none")}
    got = {n: (int(lst.endpoint.split(":")[1]), lst.tls) for n, lst in Config().listeners.items()}
    assert got == expected
    assert all(lst.endpoint.endswith("interface=127.0.0.1") and lst.enabled for _, lst in Config().listeners.items())


def test_empty_file_gives_defaults_and_resolves_paths(tmp_path: Path) -> None:
    """An empty config is valid; relative paths resolve against the config's directory."""
    cfg = load_text(tmp_path, "")
    assert cfg.paths.data_dir == tmp_path.resolve() / "data"
    assert cfg.paths.tls_key_file == tmp_path.resolve() / "tls" / "key.pem"


def test_absolute_paths_stay(tmp_path: Path) -> None:
    """An absolute path in [paths] is used as given."""
    assert load_text(tmp_path, '[paths]\ndata_dir = "/srv/mail"\n').paths.data_dir == Path("/srv/mail")


def test_credentials_directory_wins(tmp_path: Path) -> None:
    """A systemd credential master.key beats master_key_file; without it master_key_file is used."""
    cfg = load_text(tmp_path, "")
    creds = tmp_path / "creds"
    creds.mkdir()
    assert cfg.paths.master_key_path({"CREDENTIALS_DIRECTORY": str(creds)}) == cfg.paths.master_key_file
    (creds / "master.key").write_bytes(b"x")
    assert cfg.paths.master_key_path({"CREDENTIALS_DIRECTORY": str(creds)}) == creds / "master.key"


@pytest.mark.parametrize("text, expected", [
    ("[listeners.imap]\nprot = 1\n", "schoolsuite.toml: [listeners.imap] unknown key 'prot'"),
    ("[auth]\nblock_seconds = \"x\"\n", "schoolsuite.toml: [auth] block_seconds: expected an integer"),
    ("[store]\nmap_size = \"12X\"\n", "schoolsuite.toml: [store] map_size: invalid size"),
    ("[listeners.https]\nenabled = 1\n", "[listeners.https] enabled: expected true or false"),
    ("[tls]\nmin_version = \"1.1\"\n", "[tls] min_version: expected one of '1.2', '1.3'"),
    ("[listeners.imap]\ntls = \"yes\"\n", "[listeners.imap] tls: expected one of"),
    ("[listeners.https]\ntls = \"starttls\"\n", "[listeners.https] tls: https cannot use starttls"),
    ("[listeners.https]\nendpoint = \"ssl:443\"\n", "[listeners.https] endpoint: expected"),
    ("[listeners.pop3]\nendpoint = \"tcp:110\"\n", "[listeners] unknown key 'pop3'"),
    ("[instance]\ndomain = \"not a domain\"\n", "[instance] domain: invalid DNS name"),
    ("[auth]\nblock_seconds = 0\n", "[auth] block_seconds: must be at least 1"),
    ("[frobnicate]\n", "unknown section 'frobnicate'"),
    ("paths = 3\n", "[paths] must be a table"),
    ("[auth\n", "invalid TOML"),
])
def test_bad_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    """Each mistake is refused with one line that names the file, section and key."""
    assert expected in error_of(tmp_path, text)


def test_missing_file(tmp_path: Path) -> None:
    """A missing config file is one clear line."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_listener_override_keeps_other_defaults(tmp_path: Path) -> None:
    """Setting one key of a listener keeps the listener's other defaults."""
    cfg = load_text(tmp_path, '[listeners.imaps]\nenabled = false\n')
    assert not cfg.listeners.imaps.enabled
    assert cfg.listeners.imaps.endpoint == "tcp:1993:interface=127.0.0.1" and cfg.listeners.imaps.tls == "implicit"


@pytest.mark.parametrize("text, value", [
    ("64G", 64 << 30), ("512M", 512 << 20), ("1T", 1 << 40), ("1TiB", 1 << 40), ("10k", 10 << 10),
    ("4096", 4096), (4096, 4096), (" 2 G ", 2 << 30),
])
def test_parse_size(text: str | int, value: int) -> None:
    """Sizes take binary K/M/G/T suffixes (optionally iB/B) or plain byte counts."""
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "G", "1.5G", "-1", "12X", "1GG", True, -5])
def test_parse_size_refuses(text: str | int) -> None:
    """Malformed or negative sizes are refused."""
    with pytest.raises(ValueError):
        parse_size(text)


@given(st.integers(min_value=0, max_value=1 << 60))
def test_format_size_round_trips(n: int) -> None:
    """format_size gives a spelling that parse_size reads back exactly."""
    assert parse_size(format_size(n)) == n
