"""Per-listener settings and per-connection session state of the SMTP server."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ...services.budget import MemoryBudget
from .grammar import MailFrom


@dataclass(frozen=True)
class Reply:
    """One reply; ``text`` may be several lines (RFC 5321 §4.2.1)."""

    code: int
    enhanced: str | None
    text: str | list[str]
    close: bool = False


@dataclass
class Settings:
    """What one listener needs: its mode and limits, TLS, and the shared services."""

    listener: str  # submission, submissions, mx
    mode: str  # "submission" (AUTH required, any recipient) or "mx" (local recipients only)
    hostname: str
    max_size: int
    max_recipients: int
    idle_timeout: float
    max_connections: int
    max_connections_per_client: int
    reveal_client: bool
    dmarc_enforce: bool
    tls: Any  # CertificateOptions for STARTTLS, or None
    implicit_tls: bool
    transport: Any  # services.transport.MailTransport
    auth: Any  # services.auth.AuthService
    sessions: Any = None  # services.sessions
    reactor: Any = None
    open_per_client: dict[str, int] = field(default_factory=dict)
    open_total: int = 0
    budget: "MemoryBudget | None" = None  # shared by every SMTP listener of the process


@dataclass
class Transaction:
    """A mail transaction: MAIL FROM up to the end of DATA/BDAT (RFC 5321 §3.3)."""

    mail: MailFrom
    recipients: list[Any] = field(default_factory=list)  # transport.Recipient
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    bdat: bool = False
    too_big: bool = False


@dataclass
class Session:
    settings: Settings
    client_ip: str
    queue_id_seed: str = ""
    helo: str | None = None
    extended: bool = False
    tls: bool = False
    principal: Any = None  # services.auth.Principal after AUTH
    own_addresses: list[str] = field(default_factory=list)
    transaction: Transaction | None = None
    started: float = field(default_factory=time.monotonic)
    messages: int = 0

    @property
    def submission(self) -> bool:
        return self.settings.mode == "submission"

    def reset(self) -> None:
        """RSET, a new EHLO, or the end of a message (RFC 5321 §4.1.1.5)."""
        self.transaction = None
