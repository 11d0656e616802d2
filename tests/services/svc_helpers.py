"""Helpers of the services tests."""

from twisted.internet import defer

PASSWORD = "correct horse battery"


class Verifications:
    """A synchronous stand-in for the thread pool that counts argon2 verifications."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fn, *args):  # type: ignore[no-untyped-def]
        self.calls += 1
        return defer.maybeDeferred(fn, *args)


def result_of(d: defer.Deferred):  # type: ignore[type-arg]
    """The result of a fired Deferred (its exception raised)."""
    box: list = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]
