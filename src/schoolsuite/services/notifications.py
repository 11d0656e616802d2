"""Change notifications between sessions: "mailbox M of account A changed".

Writers publish after commit (``txn.after_commit``), from any thread; the
hub hops to the reactor thread and calls each subscriber of the account.
Subscribers (selected or IDLE IMAP sessions) then read what changed from the
store themselves (the change log since their last MODSEQ), so a notification
carries no content and a missed one costs only latency.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from twisted.logger import Logger

log = Logger(namespace="schoolsuite.notifications")

Listener = Callable[[frozenset[int]], None]


class MailNotifier:
    """Per-account listeners of mailbox changes."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._listeners: dict[bytes, set[Listener]] = defaultdict(set)

    def subscribe(self, account_id: bytes, listener: Listener) -> Callable[[], None]:
        """Call ``listener(mailbox_ids)`` on the reactor after each change; returns the unsubscriber."""
        self._listeners[account_id].add(listener)

        def remove() -> None:
            listeners = self._listeners.get(account_id)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._listeners[account_id]

        return remove

    def publish(self, account_id: bytes, mailbox_ids: Iterable[int]) -> None:
        """Tell the account's listeners; safe from any thread (runs them on the reactor)."""
        if account_id not in self._listeners:
            return
        self._reactor.callFromThread(self._fire, account_id, frozenset(mailbox_ids))

    def after_commit(self, txn: Any, account_id: bytes, mailbox_ids: Iterable[int]) -> None:
        """Publish once ``txn`` has committed."""
        ids = frozenset(mailbox_ids)
        txn.after_commit(lambda: self.publish(account_id, ids))

    def _fire(self, account_id: bytes, mailbox_ids: frozenset[int]) -> None:
        for listener in list(self._listeners.get(account_id, ())):
            try:
                listener(mailbox_ids)
            except Exception:
                log.failure("mailbox change listener failed")

    def listeners(self, account_id: bytes) -> int:
        return len(self._listeners.get(account_id, ()))
