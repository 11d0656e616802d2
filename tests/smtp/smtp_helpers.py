"""Helpers for SMTP tests: a protocol on a StringTransport with fake services, transcripts."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from schoolsuite.protocols.smtp.protocol import SMTPServerProtocol
from schoolsuite.protocols.smtp.session import Settings
from schoolsuite.services.auth import AuthFailed, Principal
from schoolsuite.services.mailauth import Verdicts

ALICE = b"A" * 16
BOB = b"B" * 16
PASSWORD = "correct horse battery"


class TLSStringTransport(StringTransport):
    """A StringTransport that records STARTTLS."""

    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        self.tls_started = False
        self.cleartext_before_tls = b""

    def startTLS(self, ctx: Any) -> None:  # noqa: N802
        self.tls_started = True
        self.cleartext_before_tls = self.value()


class FakeAuth:
    def __init__(self) -> None:
        self.attempts: list[tuple[str, str]] = []

    def authenticate(self, address: str, secret: str, client: str, protocol: str) -> defer.Deferred[Principal]:
        self.attempts.append((address, protocol))
        if address == "alice@school.example" and secret == PASSWORD:
            return defer.succeed(Principal(ALICE, address, "password"))
        if address == "blocked@school.example":
            return defer.fail(AuthFailed("blocked", 60))
        return defer.fail(AuthFailed("failed"))


@dataclass
class FakeTransport:
    """Stands in for services.transport.MailTransport: records what would be committed."""

    local_domains: set[str] = field(default_factory=lambda: {"school.example"})
    accounts: dict[str, bytes] = field(default_factory=lambda: {"alice@school.example": ALICE,
                                                                 "alice.alias@school.example": ALICE,
                                                                 "bob@school.example": BOB})
    groups: dict[str, list[bytes]] = field(default_factory=dict)  # list address -> member ids
    submitted: list[dict[str, Any]] = field(default_factory=list)
    received: list[tuple[list[bytes], bytes]] = field(default_factory=list)
    mailboxes: list[str] = field(default_factory=list)
    verdicts: Verdicts = field(default_factory=Verdicts)
    pending: defer.Deferred[Any] | None = None  # set to hold commits back

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self.local_domains

    def find_account(self, address: str) -> bytes | None:
        return self.accounts.get(address.lower())

    def find_group(self, address: str) -> list[bytes] | None:
        return self.groups.get(address.lower())

    def addresses_of(self, account_id: bytes) -> list[str]:
        return [a for a, i in self.accounts.items() if i == account_id]

    def sign(self, message: bytes, domain: str) -> defer.Deferred[bytes]:
        return defer.succeed(message)

    def verify(self, message: bytes, ip: str, helo: str, sender: str, from_domain: str | None) -> Any:
        self.verdicts.from_domain = from_domain
        return defer.succeed(self.verdicts)

    def submit(self, account_id: bytes, sender: str, recipients: list[Any], message: bytes, **kw: Any) -> Any:
        from schoolsuite.services.transport import Submitted

        self.submitted.append({"account": account_id, "sender": sender, "recipients": recipients,
                               "message": message, **kw})
        result = Submitted("q1" if any(r.account_id is None for r in recipients) else None)
        if self.pending is not None:
            return self.pending.addCallback(lambda _: result)
        return defer.succeed(result)

    def receive(self, recipients: list[Any], message: bytes, **kw: Any) -> Any:
        account_ids = [r.account_id for r in recipients if not r.group]
        self.received.append((account_ids, message))
        self.mailboxes.append(kw.get("mailbox", "INBOX"))
        return defer.succeed({a: 1 for a in account_ids})


def make_settings(mode: str = "submission", *, tls: bool = True, implicit: bool = False, **kw: Any) -> Settings:
    values: dict[str, Any] = dict(
        listener="mx" if mode == "mx" else ("submissions" if implicit else "submission"), mode=mode,
        hostname="mail.school.example", max_size=100_000, max_recipients=5, idle_timeout=300,
        max_connections=10, max_connections_per_client=3, reveal_client=False, dmarc_enforce=True,
        tls=object() if tls else None, implicit_tls=implicit, transport=FakeTransport(), auth=FakeAuth(),
        sessions=None, reactor=Clock())
    values.update(kw)
    return Settings(**values)


class Conn:
    """One protocol instance on a transport; ``send`` returns the replies it caused."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proto = SMTPServerProtocol(settings)
        self.transport = TLSStringTransport()
        self.proto.makeConnection(self.transport)
        self.greeting = self.take()

    def take(self) -> str:
        out = self.transport.value().decode("utf-8")
        self.transport.clear()
        return out

    def send(self, data: bytes | str) -> str:
        self.proto.dataReceived(data.encode() if isinstance(data, str) else data)
        return self.take()

    def codes(self, data: bytes | str) -> list[str]:
        """The reply codes (with enhanced codes) of the last line of each reply."""
        out = []
        for line in self.send(data).split("\r\n"):
            if line[3:4] == " ":
                word = line[4:].split(" ")[0]
                out.append(line[:3] + (" " + word if re.match(r"^[245]\.\d{1,3}\.\d{1,3}$", word) else ""))
        return out

    def login(self) -> None:
        """Pretend STARTTLS happened, EHLO and AUTH PLAIN as alice."""
        self.proto.session.tls = True
        self.send("EHLO client.example\r\n")
        token = base64.b64encode(f"\0alice@school.example\0{PASSWORD}".encode()).decode()
        assert self.send(f"AUTH PLAIN {token}\r\n").startswith("235 ")

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()
