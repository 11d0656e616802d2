"""Delivery of messages into mailboxes: what SMTP (local delivery) and IMAP APPEND share.

Every delivered copy is sealed with its recipient's data key; the MIME
structure is parsed once per message and stored next to each copy. Sessions
that have the mailbox selected, or IDLE in it, are told after commit.

:meth:`Delivery.deliver_sync` runs inside a caller's write transaction (on the
writer thread), :meth:`Delivery.deliver` and :meth:`Delivery.deliver_many`
run their own transaction on ``services.writer`` and fire after commit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from twisted.internet import defer

from ..storage import NotFound, WriteTxn
from ..storage import accounts as directory
from ..storage import mail, mime
from ..storage.mail import MailboxNotFound, QuotaExceeded
from .notifications import MailNotifier


class Delivery:
    """Puts messages into accounts' mailboxes."""

    def __init__(self, store: Any, writer: Any, notifier: MailNotifier) -> None:
        self._store = store
        self._writer = writer
        self._notifier = notifier

    def deliver_sync(self, txn: WriteTxn, account_id: bytes, message: bytes, *, mailbox: str = "INBOX",
                     flags: Iterable[str] = (), internal_date: float | None = None,
                     structure: mime.Entity | None = None) -> int:
        """Store ``message`` in the account's ``mailbox`` inside ``txn``; returns the new uid.

        Raises :class:`QuotaExceeded` or :class:`MailboxNotFound` (also for an
        unknown account) before writing anything.
        """
        try:
            user = txn.user(account_id)
        except NotFound:
            raise MailboxNotFound("no such account") from None
        account = directory.get_account(txn, account_id)
        if account is None:
            raise MailboxNotFound("no such account")
        box = mail.require_mailbox(user, mailbox)
        mask = mail.flags_to_mask(user, flags, create=True)
        uid = mail.append(user, box, message, flags=mask, internal_date=internal_date, quota=account.quota,
                          structure=structure)
        mail.save_mailbox(user, box)
        self._notifier.after_commit(txn, account_id, (box.id,))
        return uid

    def deliver(self, account_id: bytes, message: bytes, *, mailbox: str = "INBOX", flags: Iterable[str] = (),
                internal_date: float | None = None) -> defer.Deferred[int]:
        """Deliver in a transaction of its own; fires with the uid after commit."""
        flags = tuple(flags)
        when = time.time() if internal_date is None else internal_date

        def run() -> int:
            structure = mime.parse(message)
            with self._store.write() as txn:
                return self.deliver_sync(txn, account_id, message, mailbox=mailbox, flags=flags,
                                         internal_date=when, structure=structure)

        return self._writer.run(run)

    def deliver_many(self, deliveries: list[tuple[bytes, str]], message: bytes
                     ) -> defer.Deferred[dict[bytes, int | Exception]]:
        """One message to several (account, mailbox) pairs in ONE transaction.

        The result maps each account id to its new uid, or to the
        :class:`QuotaExceeded` / :class:`MailboxNotFound` that refused it; the
        others are delivered regardless. An account listed twice gets one copy.
        """
        when = time.time()

        def run() -> dict[bytes, int | Exception]:
            structure = mime.parse(message)
            results: dict[bytes, int | Exception] = {}
            with self._store.write() as txn:
                for account_id, mailbox in deliveries:
                    if account_id in results:
                        continue
                    try:
                        results[account_id] = self.deliver_sync(
                            txn, account_id, message, mailbox=mailbox, internal_date=when, structure=structure)
                    except (QuotaExceeded, MailboxNotFound) as exc:
                        results[account_id] = exc
            return results

        return self._writer.run(run)


def init_mailboxes(txn: WriteTxn, account: directory.Account) -> None:
    """ACCOUNT_INITIALIZERS hook: INBOX and the RFC 6154 special-use mailboxes."""
    mail.create_default_mailboxes(txn.user(account.id))


__all__ = ["Delivery", "MailboxNotFound", "QuotaExceeded", "init_mailboxes"]
