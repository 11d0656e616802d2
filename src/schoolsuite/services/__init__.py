"""What the protocols share: accounts, authentication, the store writer, sessions.

:meth:`Services.build` assembles them from the config; protocol modules get
one :class:`Services` object and call nothing below it but the storage API.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from .. import metrics
from ..storage import Store
from ..storage import accounts as directory
from ..storage import dav as dav_store
from ..storage import files as files_store
from .accounts import ACCOUNT_INITIALIZERS, AccountService
from .auth import AuthService
from .cred import SchoolsuiteRealm, make_portal
from .delivery import Delivery, init_mailboxes
from .notifications import MailNotifier
from .groups import GroupService
from .throttle import Throttle
from .writer import StoreWriter

log = Logger(namespace="schoolsuite.services")


class SessionRegistry:
    """Open sessions per account, so that a deleted or disabled account's
    connections can be closed at once."""

    def __init__(self) -> None:
        self._sessions: dict[bytes, set[Callable[[], None]]] = defaultdict(set)

    def add(self, account_id: bytes, close: Callable[[], None]) -> Callable[[], None]:
        """Register a session's ``close``; returns the function that unregisters it."""
        self._sessions[account_id].add(close)

        def remove() -> None:
            sessions = self._sessions.get(account_id)
            if sessions is not None:
                sessions.discard(close)
                if not sessions:
                    del self._sessions[account_id]

        return remove

    def count(self, account_id: bytes) -> int:
        return len(self._sessions.get(account_id, ()))

    def close_all(self, account_id: bytes) -> int:
        sessions = self._sessions.pop(account_id, set())
        for close in sessions:
            close()
        return len(sessions)


@dataclass
class Services:
    """Everything the protocol layer may use."""

    store: Store
    writer: StoreWriter
    accounts: AccountService
    auth: AuthService
    realm: SchoolsuiteRealm
    sessions: SessionRegistry
    reactor: Any
    portal: Any = field(default=None)
    notifier: MailNotifier | None = field(default=None)  # mailbox change notifications (IDLE)
    delivery: Delivery | None = field(default=None)  # messages into mailboxes (services/delivery.py)
    groups: GroupService | None = field(default=None)  # mailing lists + shared address books (services/groups.py)
    transport: Any = field(default=None)  # SMTP transport: queue, DKIM, checks (services/transport.py)

    @classmethod
    def build(cls, config: Any, store: Store, reactor: Any) -> "Services":
        """Assemble the services of one server process."""
        auth_config = config.auth
        throttle = Throttle(
            delay_after=auth_config.fail_delay_after,
            delay_max=auth_config.fail_delay_max_seconds,
            block_after_account=auth_config.block_after_account,
            block_after_client=auth_config.block_after_client,
            block_seconds=auth_config.block_seconds,
        )
        auth = AuthService(store, throttle, reactor)
        sessions = SessionRegistry()
        realm = SchoolsuiteRealm()

        def on_change(event: str, account_id: bytes) -> None:
            # Runs on the writer thread after commit; act on the reactor.
            reactor.callFromThread(_account_changed, event, account_id)

        def _account_changed(event: str, account_id: bytes) -> None:
            if event != "created":  # a new account has nothing cached
                auth.forget_cached()
            if event == "deleted":
                sessions.close_all(account_id)
            elif event == "changed":
                with store.read() as txn:
                    account = directory.get_account(txn, account_id)
                if account is not None and not account.active:
                    sessions.close_all(account_id)
            # Follow the event instead of recounting: a count reads every account
            # record on the reactor (about 20 ms at 33,000 accounts).
            if event == "created":
                metrics.ACCOUNTS.inc()
            elif event == "deleted":
                metrics.ACCOUNTS.dec()

        services = cls(
            store=store,
            writer=StoreWriter(reactor),
            accounts=AccountService(store, on_change),
            auth=auth,
            realm=realm,
            sessions=sessions,
            reactor=reactor,
        )
        services.portal = make_portal(auth, realm)
        services.notifier = MailNotifier(reactor)
        services.delivery = Delivery(store, services.writer, services.notifier)
        services.groups = GroupService(store)
        _update_account_gauge(store)
        return services

    def shutdown(self) -> defer.Deferred[None]:
        """Stop the mail queue, wait for the queued store writes, then stop the writer thread."""
        if self.transport is not None:
            return self.transport.stop().addBoth(lambda _: self.writer.shutdown())
        return self.writer.shutdown()


def _update_account_gauge(store: Store) -> None:
    with store.read() as txn:
        metrics.ACCOUNTS.set(directory.count_accounts(txn))


# Every new account gets INBOX and the special-use mailboxes (storage/mail.py),
# a default calendar and address book (storage/dav.py) and an empty file space
# (storage/files.py), whoever creates it: the server, SCIM or the CLI, which
# loads no protocol module. Registered here, once, for that reason.
for _init in (init_mailboxes, dav_store.init_account, files_store.init_account):
    if _init not in ACCOUNT_INITIALIZERS:
        ACCOUNT_INITIALIZERS.append(_init)

__all__ = ["Services", "SessionRegistry"]
