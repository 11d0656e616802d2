"""A byte budget shared by the connections of a server (SMTP messages and IMAP literals being received)."""

from __future__ import annotations


class MemoryBudget:
    """Bytes held in memory by every connection together; a taker beyond ``limit`` is refused.

    The protocol answers a refusal with a temporary error (SMTP 452 4.3.1, IMAP NO [UNAVAILABLE]) and
    gives back what it took once the bytes are handed on or the connection is gone. Reactor thread only.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held = max(0, self.held - n)
