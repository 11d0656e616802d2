"""Helpers of the IMAP tests."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer


class InlineReactor:
    """callFromThread runs at once (the tests have no threads)."""

    def callFromThread(self, fn: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N802
        fn(*args, **kwargs)


class InlineWriter:
    """A StoreWriter stand-in that runs the transaction synchronously."""

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        return defer.maybeDeferred(fn, *args, **kwargs)

    def run_early(self, fn: Any) -> tuple[defer.Deferred[Any], defer.Deferred[None]]:
        """StoreWriter.run_early, synchronously: (answer, settled), both fired."""
        told: list[Any] = []
        try:
            fn(told.append)
        except BaseException:
            if not told:
                return defer.fail(), defer.succeed(None)
            return defer.succeed(told[0]), defer.fail()
        return defer.succeed(told[0]), defer.succeed(None)


class HeldWriter:
    """A StoreWriter stand-in whose jobs run only when the test says: the answer, then the commit."""

    def __init__(self) -> None:
        self.held: list[tuple[defer.Deferred[Any], Any]] = []
        self.committing: list[defer.Deferred[None]] = []

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.held.append((d, lambda: fn(*args, **kwargs)))
        return d

    def run_early(self, fn: Any) -> tuple[defer.Deferred[Any], defer.Deferred[None]]:
        answer: defer.Deferred[Any] = defer.Deferred()
        settled: defer.Deferred[None] = defer.Deferred()

        def job() -> None:
            fn(answer.callback)  # the transaction commits at the end of fn, here at once
            self.committing.append(settled)

        self.held.append((defer.Deferred(), job))
        return answer, settled

    def release(self) -> None:
        """Run the held jobs up to their answers; their commits stay pending."""
        while self.held:
            d, job = self.held.pop(0)
            d.callback(job())

    def commit(self) -> None:
        """Let the pending commits report done."""
        while self.committing:
            self.committing.pop(0).callback(None)


def result_of(d: defer.Deferred) -> Any:  # type: ignore[type-arg]
    """The result of a fired Deferred (its exception raised)."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


def message(subject: str = "Hello", body: str = "Hi there.\r\n", sender: str = "carol@example.org") -> bytes:
    return (f"From: Carol <{sender}>\r\nTo: alice@school.example\r\nSubject: {subject}\r\n"
            f"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{abs(hash(subject))}@example.org>\r\n"
            f"\r\n{body}").encode()


class FakeAuth:
    """AuthService stand-in: one account, one password, answers at once."""

    def __init__(self, accounts: dict[str, bytes], password: str) -> None:
        self.accounts = accounts
        self.password = password

    def authenticate(self, address: str, secret: str, client_address: Any, protocol: str) -> defer.Deferred[Any]:
        from schoolsuite.services.auth import AuthFailed, Principal

        account_id = self.accounts.get(address.lower())
        if account_id is None or secret != self.password:
            return defer.fail(AuthFailed("failed"))
        return defer.succeed(Principal(account_id, address.lower(), "password"))


class Conn:
    """An IMAP server connection over a StringTransport: feed client bytes, read server bytes."""

    def __init__(self, services: Any, *, tls: bool = True, limits: Any = None, factory: Any = None,
                 clock: Any = None) -> None:
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        from schoolsuite.protocols.imap.protocol import IMAPFactory, ImapLimits

        self.factory = factory or IMAPFactory(services, limits or ImapLimits(), tls=None, implicit_tls=tls)
        self.proto = self.factory.buildProtocol(None)
        if clock is not None:
            self.proto.callLater = clock.callLater
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.1", 40000))
        self.proto.makeConnection(self.transport)
        self.greeting = self.read()

    def read(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def send(self, data: bytes) -> bytes:
        self.proto.dataReceived(data)
        return self.read()

    def cmd(self, line: str) -> list[str]:
        """Send one command line; the reply lines as text."""
        out = self.send(line.encode("utf-8") + b"\r\n")
        return out.decode("utf-8", "replace").split("\r\n")[:-1]

    def login(self, user: str = "alice@school.example", password: str = "correct horse battery") -> None:
        reply = self.cmd(f'L LOGIN {user} "{password}"')
        assert reply[-1].startswith("L OK"), reply

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting
