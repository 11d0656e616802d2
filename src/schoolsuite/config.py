"""The configuration schema, declared once, and its TOML loader.

Every setting is a dataclass field with a type, a default and a help text
(``metadata["help"]``). The loader refuses unknown keys, wrong types and bad
values with one line naming the key; ``render_sample`` writes the commented
sample config (``conf/schoolsuite.toml``) from the same schema.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schoolsuite.errors import UserError

CONFIG_NAME = "schoolsuite.toml"


class ConfigError(UserError):
    """The config file is missing, unreadable or invalid (message names the key)."""


def _opt(default: Any, help: str, **meta: Any) -> Any:
    """A schema field: default value plus help text and optional checks."""
    return field(default=default, metadata={"help": help, **meta})


# -- sizes ("64G") ------------------------------------------------------------

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(value: str | int) -> int:
    """Parse ``"64G"``, ``"512M"``, ``"1TiB"`` or a plain byte count (binary units)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as \"64G\"")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    m = _SIZE_RE.match(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"invalid size {value!r} (use e.g. \"512M\", \"64G\", \"1T\")")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def format_size(n: int) -> str:
    """The shortest exact ``parse_size`` spelling of ``n`` bytes."""
    for unit in ("T", "G", "M", "K"):
        if n and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


# -- the schema ---------------------------------------------------------------

_HOST_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def check_hostname(value: str) -> str:
    """Lower-case ``value`` and require a DNS name (letters, digits, dots, hyphens)."""
    name = value.strip().lower().rstrip(".")
    if not _HOST_RE.match(name):
        raise ValueError(f"invalid DNS name {value!r}")
    return name


@dataclass
class InstanceConfig:
    """[instance]"""

    domain: str = _opt("school.example", "Mail domain: addresses are NAME@domain.", check=check_hostname)
    hostname: str = _opt("mail.school.example", "Host name clients connect to; must match the TLS certificate.",
                         check=check_hostname)


@dataclass
class PathsConfig:
    """[paths]"""

    data_dir: Path = _opt(Path("data"), "Directory of the LMDB store (all user data, sealed).")
    master_key_file: Path = _opt(Path("secrets/master.key"),
                                 "Master key file (32 random bytes, mode 0600, never inside data_dir). "
                                 "A systemd credential $CREDENTIALS_DIRECTORY/master.key takes precedence.")
    tls_cert_file: Path = _opt(Path("tls/cert.pem"), "TLS certificate chain (PEM), leaf first.")
    tls_key_file: Path = _opt(Path("tls/key.pem"), "TLS private key (PEM).")

    def master_key_path(self, environ: os._Environ[str] | dict[str, str] = os.environ) -> Path:
        """The master key to use: the systemd credential if present, else master_key_file."""
        creds = environ.get("CREDENTIALS_DIRECTORY")
        if creds and (Path(creds) / "master.key").is_file():
            return Path(creds) / "master.key"
        return self.master_key_file


@dataclass
class StoreConfig:
    """[store]"""

    map_size: int = _opt(1 << 40, "Maximum size of the LMDB map (sparse; e.g. \"64G\", \"1T\").", kind="size")


@dataclass
class AuthConfig:
    """[auth]"""

    fail_delay_after: int = _opt(3, "Failed logins (per account or client) before answers are delayed.", min=0)
    fail_delay_max_seconds: float = _opt(30.0, "Longest delay before answering a failed login.", min=0)
    block_after_account: int = _opt(10, "Failed logins on one account before it is blocked for block_seconds.",
                                     min=1)
    block_after_client: int = _opt(30, "Failed logins from one client IP before it is blocked for block_seconds.",
                                   min=1)
    block_seconds: int = _opt(900, "How long a block lasts.", min=1)


@dataclass
class AuditConfig:
    """[audit]"""

    retention_days: int = _opt(365, "Days an entry of the audit log (who changed which account, when) is kept; "
                                    "older entries are deleted at start and daily.", min=1)


@dataclass
class DavConfig:
    """[dav]"""

    max_item_size: int = _opt(2 << 20, "Largest calendar object or vCard accepted by PUT (413 above).", kind="size")
    max_request_size: int = _opt(32 << 20, "Largest other DAV request body, e.g. a whole-calendar import (413 above).",
                                 kind="size")
    max_collection_items: int = _opt(50000, "Items one calendar or address book may hold (507 above).", min=1)
    threads: int = _opt(8, "Threads answering CalDAV/CardDAV requests (their own pool, not the reactor's).", min=1)
    school_directory: bool = _opt(True, "Offer every account the read-only school directory address book.")


@dataclass
class WebDAVConfig:
    """[webdav]"""

    max_upload_size: int = _opt(10 << 30, "Largest file one PUT to /files/ may upload (413 before the body).",
                                kind="size")
    block_size: int = _opt(1 << 20, "Bytes WsgiDAV reads and writes per step (1M measured best: "
                                    "benchmarks/webdav_vs_wsgidav.py).", kind="size", min=4096)
    threads: int = _opt(16, "Threads answering WebDAV requests (their own pool, not the reactor's).", min=1)
    auth_cache_seconds: float = _opt(60.0, "How long a verified Authorization header is remembered, so that "
                                           "clients sending it with every request cost one password check.", min=0)


MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!SHA1"


@dataclass
class TLSConfig:
    """[tls]"""

    min_version: str = _opt("1.2", "Lowest TLS version accepted: \"1.2\" or \"1.3\".", choices=("1.2", "1.3"))
    ciphers: str = _opt(MODERN_CIPHERS, "OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are always AEAD).")


TLS_MODES = ("none", "starttls", "implicit")


@dataclass
class Listener:
    """One listener: a Twisted server endpoint and how it does TLS."""

    endpoint: str = _opt("", "Twisted endpoint: \"tcp:PORT:interface=ADDR\" or "
                             "\"systemd:domain=INET:index=N\" (socket activation).")
    tls: str = _opt("none", "TLS: \"none\", \"starttls\" or \"implicit\".", choices=TLS_MODES)
    enabled: bool = _opt(True, "Set to false to not listen at all.")


def _listener(port: int, tls: str, help: str) -> Any:
    return field(default_factory=lambda: Listener(f"tcp:{port}:interface=127.0.0.1", tls),
                 metadata={"help": help})


@dataclass
class ListenersConfig:
    """[listeners.NAME]: default ports need no root; production uses 143/993/587/465/25/443 or systemd."""

    imap: Listener = _listener(1143, "starttls", "IMAP; LOGIN is refused before STARTTLS.")
    imaps: Listener = _listener(1993, "implicit", "IMAP over implicit TLS.")
    submission: Listener = _listener(1587, "starttls", "SMTP submission; AUTH is refused before STARTTLS.")
    submissions: Listener = _listener(1465, "implicit", "SMTP submission over implicit TLS.")
    mx: Listener = _listener(1025, "starttls", "SMTP for mail from the internet; STARTTLS offered.")
    https: Listener = _listener(8443, "implicit", "HTTPS: CalDAV, CardDAV, WebDAV, well-known, admin API.")
    metrics: Listener = _listener(9464, "none", "Prometheus /metrics, plain HTTP: keep it on loopback.")

    def items(self) -> list[tuple[str, Listener]]:
        """(name, listener) for every listener, in schema order."""
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


@dataclass
class IMAPConfig:
    """[imap]"""

    max_line: int = _opt(64 << 10, "Longest IMAP command line; a longer one gets BAD and the connection stays.",
                         kind="size")
    max_message_size: int = _opt(50 << 20, "Largest message APPEND accepts (APPENDLIMIT; above: NO [TOOBIG]).",
                                 kind="size")
    max_connections_per_client: int = _opt(50, "Concurrent IMAP connections from one client IP address.", min=1)
    max_connections_per_account: int = _opt(30, "Concurrent IMAP sessions of one account (Thunderbird opens up "
                                                "to 5 per device).", min=1)
    autologout_seconds: int = _opt(1800, "Close a connection idle this long (RFC 3501 §5.4 asks for 30 minutes "
                                         "or more).", min=1)
    max_buffered: int = _opt(1 << 30, "Literal bytes (messages being APPENDed) all IMAP connections together may "
                                      "hold in memory while receiving; beyond it a literal is answered "
                                      "NO [UNAVAILABLE] (try again later).", kind="size")


@dataclass
class SMTPConfig:
    """[smtp]"""

    max_message_size: int = _opt(50 << 20, "Largest message accepted (announced as SIZE in EHLO).", kind="size")
    max_recipients: int = _opt(100, "Recipients per message.", min=1)
    max_buffered: int = _opt(1 << 30, "Message bytes all SMTP connections together may hold in memory while "
                                      "receiving; beyond it a message is answered 452 4.3.1.", kind="size")
    max_connections: int = _opt(500, "Concurrent SMTP connections per listener.", min=1)
    max_connections_per_client: int = _opt(20, "Concurrent SMTP connections from one client IP.", min=1)
    idle_timeout_seconds: int = _opt(300, "Close an SMTP connection idle this long (RFC 5321 §4.5.3.2).", min=5)
    extra_domains: str = _opt("", "More local mail domains besides [instance] domain, comma-separated.")
    postmaster: str = _opt("", "Address of the account that receives mail for postmaster@ every local domain "
                               "(RFC 5321 §4.5.1) when no account or alias is named postmaster.")
    submission_reveal_client: bool = _opt(False, "Put the submitting client's IP address in the Received: header.")
    dmarc_enforce_reject: bool = _opt(True, "Refuse MX mail that fails DMARC for a domain with p=reject.")
    dns_servers: str = _opt("", "DNS servers for MX, SPF, DKIM and DMARC lookups as \"IP\" or \"IP:PORT\", "
                                "comma-separated; empty: the system resolver.")
    smarthost: str = _opt("", "Relay all outbound mail through \"HOST:PORT\"; empty: deliver to each domain's MX.")
    smarthost_tls: str = _opt("starttls", "TLS to the smarthost: \"starttls\" (required), \"implicit\" or \"none\".",
                              choices=TLS_MODES)
    smarthost_username: str = _opt("", "User name for AUTH at the smarthost (empty: no AUTH).")
    smarthost_password_file: str = _opt("", "File holding the smarthost password.")
    smarthost_ca_file: str = _opt("", "CA certificates (PEM) to verify the smarthost; empty: the system's.")
    outbound_port: int = _opt(25, "Port of remote MX hosts for direct delivery.", min=1)
    mta_sts: bool = _opt(True, "Honour recipient domains' MTA-STS policies (RFC 8461) for direct delivery: with "
                               "mode enforce, only the MX hosts the policy names, with STARTTLS and a valid "
                               "certificate. Policies are cached (sealed) in the store until they expire.")
    queue_retry_initial_seconds: int = _opt(300, "First retry delay; it doubles after each failed attempt.", min=1)
    queue_retry_max_seconds: int = _opt(14400, "Longest delay between two attempts.", min=1)
    queue_delay_warning_seconds: int = _opt(14400, "Warn the sender once a message has waited this long.", min=1)
    queue_give_up_seconds: int = _opt(5 * 86400, "Bounce a message still undelivered after this long.", min=1)
    queue_poll_seconds: float = _opt(15.0, "How often the queue worker looks for due messages.", min=0.05)


@dataclass
class Config:
    """The whole configuration; ``source`` is the file it came from (None for defaults)."""

    instance: InstanceConfig = field(default_factory=InstanceConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    dav: DavConfig = field(default_factory=DavConfig)
    webdav: WebDAVConfig = field(default_factory=WebDAVConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    listeners: ListenersConfig = field(default_factory=ListenersConfig)
    smtp: SMTPConfig = field(default_factory=SMTPConfig)
    imap: IMAPConfig = field(default_factory=IMAPConfig)
    source: Path | None = field(default=None, metadata={"internal": True})


# -- loading ------------------------------------------------------------------

def _schema_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def _convert(f: dataclasses.Field[Any], value: Any, where: str) -> Any:
    """Check and convert one TOML value to the field's type; ValueError on mismatch."""
    kind = f.metadata.get("kind")
    typ = f.type if isinstance(f.type, type) else type(f.default)
    if kind == "size":
        return parse_size(value)
    if typ is bool:
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
    elif typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected an integer")
    elif typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("expected a number")
        value = float(value)
    elif typ in (str, Path) or isinstance(f.default, Path):
        if not isinstance(value, str) or (not value and f.default != ""):  # "" only where it is the default
            raise ValueError("expected a non-empty string")
        value = Path(value) if isinstance(f.default, Path) else value
    if "choices" in f.metadata and value not in f.metadata["choices"]:
        raise ValueError("expected one of " + ", ".join(repr(c) for c in f.metadata["choices"]))
    if "min" in f.metadata and value < f.metadata["min"]:
        raise ValueError(f"must be at least {f.metadata['min']}")
    if "check" in f.metadata:
        value = f.metadata["check"](value)
    return value


def _build(default: Any, table: Any, where: str, fname: str) -> Any:
    """A copy of dataclass instance ``default`` updated from TOML ``table`` at section ``where``."""
    if not isinstance(table, dict):
        raise ConfigError(f"{fname}: {where} must be a table")
    fields = {f.name: f for f in _schema_fields(type(default))}
    for key in table:
        if key not in fields:
            raise ConfigError(f"{fname}: {where} unknown key {key!r}")
    obj = dataclasses.replace(default)
    for name, value in table.items():
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            setattr(obj, name, _build(current, value, f"[{where[1:-1]}.{name}]", fname))
            continue
        try:
            setattr(obj, name, _convert(fields[name], value, where))
        except ValueError as exc:
            raise ConfigError(f"{fname}: {where} {name}: {exc}") from None
    return obj


def _check_listeners(cfg: Config, fname: str) -> None:
    for name, lst in cfg.listeners.items():
        where = f"{fname}: [listeners.{name}]"
        if not lst.endpoint.split(":", 1)[0] in ("tcp", "tcp6", "systemd", "unix"):
            raise ConfigError(f"{where} endpoint: expected \"tcp:PORT:interface=ADDR\" or "
                              f"\"systemd:domain=INET:index=N\", got {lst.endpoint!r}")
        if name in ("https", "metrics") and lst.tls == "starttls":
            raise ConfigError(f"{where} tls: {name} cannot use starttls (use \"implicit\" or \"none\")")


def load_config(path: Path) -> Config:
    """Load and validate ``path``; relative paths are resolved against its directory."""
    path = Path(path)
    fname = path.name
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{fname}: invalid TOML: {exc}") from None
    top = {f.name: f for f in _schema_fields(Config)}
    for key, value in data.items():
        if key not in top:
            raise ConfigError(f"{fname}: unknown {'section' if isinstance(value, dict) else 'key'} {key!r}")
    cfg = Config(source=path.resolve())
    for name, value in data.items():
        setattr(cfg, name, _build(getattr(cfg, name), value, f"[{name}]", fname))
    _check_listeners(cfg, fname)
    base = path.resolve().parent
    for f in _schema_fields(PathsConfig):
        setattr(cfg.paths, f.name, base / getattr(cfg.paths, f.name))
    return cfg


# -- the sample -----------------------------------------------------------------

def _toml_value(f: dataclasses.Field[Any], value: Any) -> str:
    if f.metadata.get("kind") == "size":
        return json.dumps(format_size(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def _render_table(obj: Any, header: str, out: list[str], doc: str | None = None) -> None:
    out.append("")
    if doc:
        out.append(f"# {doc}")
    out.append(f"[{header}]")
    for f in _schema_fields(type(obj)):
        out.extend(textwrap.wrap(f.metadata["help"], 88, initial_indent="# ", subsequent_indent="# "))
        out.append(f"{f.name} = {_toml_value(f, getattr(obj, f.name))}")


def render_sample(domain: str, hostname: str) -> str:
    """The complete commented config for ``domain``/``hostname``, generated from the schema."""
    cfg = Config()
    cfg.instance.domain, cfg.instance.hostname = domain, hostname
    out = [
        "# schoolsuite configuration (generated from the schema in schoolsuite/config.py).",
        "# Relative paths are resolved against the directory of this file.",
        "# Unknown keys are refused, so a typo never silently falls back to a default.",
    ]
    for f in _schema_fields(Config):
        section = getattr(cfg, f.name)
        if isinstance(section, ListenersConfig):
            for lf in _schema_fields(ListenersConfig):
                _render_table(getattr(section, lf.name), f"listeners.{lf.name}", out, lf.metadata["help"])
        else:
            _render_table(section, f.name, out)
    return "\n".join(out) + "\n"
