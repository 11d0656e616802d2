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
