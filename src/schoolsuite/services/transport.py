"""Mail transport: what the SMTP listeners share (local delivery, the queue, DKIM, inbound checks).

:meth:`MailTransport.submit` commits a submitted message in ONE write
transaction: a sealed copy into each local recipient's INBOX (through
``services.delivery``), one queue entry for the remote recipients (sealed with
the sender's key), and a bounce into the sender's INBOX for local recipients
that refused it (quota). :meth:`MailTransport.receive` delivers MX mail to
local recipients. A recipient may be a group's list address (SCIM groups,
``services.groups``): it is expanded to its members inside the delivering
transaction, like a Postfix virtual alias (RFC 5321 §3.9.1: the envelope
recipient is replaced, the message is left unchanged); an account reached both
directly and through a group gets one copy. Both fire after the commit, so
the SMTP ``250`` follows durability. Signing, verification and DNS run on a
thread pool of their own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from ..storage import accounts as directory
from ..storage import admin as records
from ..storage import mime
from ..storage.mail import MailboxNotFound, QuotaExceeded
from ..storage.queue import QueueEntry, QueuedRecipient
from . import dsn, resolver
from .accounts import AccountError, normalize_address
from .dkim_keys import DkimSigner
from .mailauth import MailAuthenticator, Verdicts
from .mtasts import MTASTS
from .outbound import Route
from .queue import OutboundQueue, Schedule

log = Logger(namespace="schoolsuite.transport")

MAX_BATCH = 64  # messages per group commit


@dataclass(frozen=True)
class Recipient:
    address: str
    account_id: bytes | None  # None: remote (or a group)
    notify: tuple[str, ...] = ()
    orcpt: str | None = None
    group: bool = False  # a group's list address: expanded to its members at delivery

    @property
    def local(self) -> bool:
        return self.account_id is not None or self.group


@dataclass
class Submitted:
    queue_id: str | None
    delivered: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # local address -> reason (bounced)


class MailTransport:
    """One per server process; shared by the submission and MX listeners."""

    def __init__(self, services: Any, config: Any) -> None:
        smtp = config.smtp
        self.services = services
        self.store = services.store
        self.hostname = config.instance.hostname
        self.local_domains = {config.instance.domain.lower(), *(
            d.strip().lower() for d in smtp.extra_domains.split(",") if d.strip())}
        self.postmaster = smtp.postmaster.strip().lower()
        self.resolver = resolver.configure(smtp.dns_servers) if smtp.dns_servers else resolver.make_resolver("")
        self.dns = resolver.MailDNS(self.resolver)
        self.signer = DkimSigner(self.store)
        self.authenticator = MailAuthenticator(self.dns)
        self._pool = ThreadPool(minthreads=0, maxthreads=4, name="smtp-work")
        route = Route(smarthost=smtp.smarthost, smarthost_tls=smtp.smarthost_tls, username=smtp.smarthost_username,
                      password_file=smtp.smarthost_password_file, ca_file=smtp.smarthost_ca_file,
                      outbound_port=smtp.outbound_port, hostname=self.hostname)
        schedule = Schedule(smtp.queue_retry_initial_seconds, smtp.queue_retry_max_seconds,
                            smtp.queue_delay_warning_seconds, smtp.queue_give_up_seconds)
        # RFC 8461: direct delivery honours MTA-STS; policies cached in the store are written on the writer thread.
        self.mta_sts = MTASTS(self.store, self.dns, save=self._save_policy) if smtp.mta_sts and not smtp.smarthost \
            else None
        self.queue = OutboundQueue(self.store, services.writer, services.reactor, route=route, dns=self.dns,
                                   schedule=schedule, delivery=lambda: getattr(services, "delivery", None),
                                   poll=smtp.queue_poll_seconds, mta_sts=self.mta_sts)
        self._started = False
        self._inbound: list[_Inbound] = []
        self._committing = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._pool.start()
            self.queue.start()

    def stop(self) -> defer.Deferred[None]:
        if not self._started:
            return defer.succeed(None)
        self._started = False
        d = self.queue.stop()
        d.addCallback(lambda _: self._pool.stop())
        return d

    def _save_policy(self, write: Any) -> None:
        """From an outbound thread: run ``write`` (an MTA-STS cache record) on the store writer."""
        def run() -> None:
            self.services.writer.run(write).addErrback(  # e.g. at shutdown: the cache is refilled later
                lambda f: log.warn("MTA-STS policy not saved: {error}", error=f.getErrorMessage()))
        self.services.reactor.callFromThread(run)

    def in_thread(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        """Run blocking work (DNS, RSA) off the reactor."""
        if not self._started:
            self.start()
        return threads.deferToThreadPool(self.services.reactor, self._pool, fn, *args)

    # -- lookups (reactor thread: read transactions are cheap) --------------------

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower().rstrip(".") in self.local_domains

    def find_account(self, address: str) -> bytes | None:
        """The account for a local address; postmaster@ falls back to ``[smtp] postmaster`` (RFC 5321 §4.5.1)."""
        account_id = self.services.accounts.find_id(address)
        if account_id is None and self.postmaster and address.rpartition("@")[0].lower() == "postmaster":
            account_id = self.services.accounts.find_id(self.postmaster)
        return account_id

    def find_group(self, address: str) -> list[bytes] | None:
        """The member ids of the group with this list address; None if it is not one."""
        groups = getattr(self.services, "groups", None)
        return None if groups is None else groups.expand(address)

    @staticmethod
    def expand(txn: Any, recipients: list[Recipient]) -> list[Recipient]:
        """The local recipients with groups replaced by their members, one entry per account.

        Runs inside the delivering transaction, so a member removed (or an
        account deleted) before the commit gets nothing. Direct recipients
        come first and win over a group naming the same account, which keeps
        their own NOTIFY/ORCPT; a member inherits the group's NOTIFY, and its
        ORCPT is the group address unless the client gave one (RFC 3461 §4.2,
        RFC 3464 §2.3.1). SCIM groups cannot contain groups: no nesting, so no
        loop is possible.
        """
        out: dict[bytes, Recipient] = {}
        for r in recipients:
            if r.account_id is not None and not r.group:
                out.setdefault(r.account_id, r)
        for r in recipients:
            if not r.group:
                continue
            for member in MailTransport.group_members(txn, r.address):
                if member in out:
                    continue
                account = directory.get_account(txn, member)
                if account is not None:
                    out[member] = Recipient(account.address, member, r.notify, r.orcpt or f"rfc822;{r.address}")
        return list(out.values())

    @staticmethod
    def group_members(txn: Any, address: str) -> list[bytes]:
        """The members of the group with this list address, read in ``txn`` ([] if none or no group)."""
        try:
            group_id = records.find_group_id(txn, normalize_address(address))
        except AccountError:
            return []
        group = None if group_id is None else records.get_group(txn, group_id)
        return [] if group is None else list(group.members)

    def addresses_of(self, account_id: bytes) -> list[str]:
        """The account's own address and aliases (lower case)."""
        with self.store.read() as txn:
            account = directory.get_account(txn, account_id)
        return [] if account is None or not account.active else [a.lower() for a in account.addresses]

    # -- signing and verification (thread pool) -------------------------------------

    def sign(self, message: bytes, domain: str) -> defer.Deferred[bytes]:
        return self.in_thread(self.signer.sign, message, domain)

    def verify(self, message: bytes, client_ip: str, helo: str, mail_from: str,
               from_domain: str | None) -> defer.Deferred[Verdicts]:
        return self.in_thread(self.authenticator.check, message, client_ip, helo, mail_from, from_domain)

    # -- committing messages (writer thread) ------------------------------------------

    def submit(self, account_id: bytes, sender: str, recipients: list[Recipient], message: bytes, *,
               envid: str | None = None, ret: str | None = None, smtputf8: bool = False,
               body: str | None = None) -> defer.Deferred[Submitted]:
        """Deliver locally and queue for remote recipients, in one transaction."""
        delivery = getattr(self.services, "delivery", None)
        local = [r for r in recipients if r.local]
        remote = [r for r in recipients if not r.local]
        if local and delivery is None:
            return defer.fail(RuntimeError("no delivery service"))

        def run() -> Submitted:
            structure = mime.parse(message) if local else None
            now = time.time()
            result = Submitted(None)
            refused: list[QueuedRecipient] = []
            delivered: list[QueuedRecipient] = []
            with self.store.write() as txn:
                done: set[bytes] = set()
                for r in self.expand(txn, local):
                    assert r.account_id is not None
                    if r.account_id in done:
                        continue
                    try:
                        delivery.deliver_sync(txn, r.account_id, message, internal_date=now, structure=structure)
                    except (QuotaExceeded, MailboxNotFound) as exc:  # refused before writing: bounced below
                        reason = "mailbox full" if isinstance(exc, QuotaExceeded) else "mailbox unavailable"
                        result.refused[r.address] = reason
                        enhanced = "5.2.2" if reason == "mailbox full" else "5.2.1"
                        refused.append(QueuedRecipient(r.address, "failed", list(r.notify), r.orcpt, 1,
                                                       f"local delivery failed: {reason}", self.hostname, enhanced))
                    else:
                        done.add(r.account_id)
                        result.delivered.append(r.address)
                        delivered.append(QueuedRecipient(r.address, "sent", list(r.notify), r.orcpt, 1,
                                                         "delivered to the mailbox", self.hostname, "2.0.0"))
                for r in local:  # a group that lost its last member after RCPT (RFC 3463 X.2.4)
                    if r.group and not self.group_members(txn, r.address):
                        result.refused[r.address] = "group has no members"
                        refused.append(QueuedRecipient(r.address, "failed", list(r.notify), r.orcpt, 1,
                                                       "local delivery failed: group has no members",
                                                       self.hostname, "5.2.4"))
                entry = QueueEntry(
                    id="", account_id=account_id, sender=sender,
                    recipients=[QueuedRecipient(r.address, notify=list(r.notify), orcpt=r.orcpt) for r in remote],
                    envid=envid, ret=ret, smtputf8=smtputf8, body=body, created=now)
                if remote:
                    result.queue_id = self.queue.enqueue(txn, entry, message).id
                # RFC 3461 §6: failures (unless NOTIFY says otherwise) and, when asked, successes.
                for action, group in (("failed", refused), ("delivered", delivered)):
                    notices = [r for r in group if dsn.wants(r, action)]
                    if not notices or not sender:
                        continue
                    report = dsn.build(self.hostname, entry, message, notices, action, now=now)
                    try:
                        delivery.deliver_sync(txn, account_id, report, internal_date=now)
                    except (QuotaExceeded, MailboxNotFound) as exc:
                        log.warn("{action} notice for the sender not delivered: {error}", action=action,
                                 error=type(exc).__name__)
            return result

        return self.services.writer.run(run)

    def receive(self, recipients: list[Recipient], message: bytes, *, sender: str = "", envid: str | None = None,
                ret: str | None = None, mailbox: str = "INBOX") -> defer.Deferred[dict[bytes, Any]]:
        """MX: one sealed copy per local recipient; fires after the commit with uid or refusal per account.

        Group commit: messages that arrive while a transaction is being
        committed go together into the next one (one fsync for many), and
        each caller's Deferred fires only after that commit returned. When
        some recipients refuse the message (quota) and others take it, the
        SMTP reply is 250, so a bounce to ``sender`` is queued in the same
        transaction (RFC 5321 §6.1, RFC 3464).
        """
        delivery = getattr(self.services, "delivery", None)
        if delivery is None:
            return defer.fail(RuntimeError("no delivery service"))
        local = [r for r in recipients if r.local]

        def parsed(structure: Any) -> defer.Deferred[dict[bytes, Any]]:
            # The MIME structure is computed off the writer thread, so parsing overlaps the commit.
            d: defer.Deferred[dict[bytes, Any]] = defer.Deferred()
            self._inbound.append(_Inbound(local, message, sender, envid, ret, d, structure, mailbox))
            if not self._committing:
                self._commit_inbound(delivery)
            return d

        return self.in_thread(mime.parse, message).addCallback(parsed)

    def _commit_inbound(self, delivery: Any) -> None:
        batch, self._inbound = self._inbound[:MAX_BATCH], self._inbound[MAX_BATCH:]
        self._committing = True

        def run() -> list[dict[bytes, Any]]:
            now = time.time()
            out: list[dict[bytes, Any]] = []
            with self.store.write() as txn:
                for item in batch:
                    structure = item.structure
                    results: dict[bytes, Any] = {}
                    targets = self.expand(txn, item.recipients)
                    for r in targets:
                        results[r.account_id] = self._deliver_one(delivery, txn, r.account_id, item, structure, now)
                    self._bounce_partial(txn, item, targets, results, now)
                    out.append(results)
            return out

        def done(results: Any) -> None:
            self._committing = False
            if isinstance(results, Failure):
                for item in batch:
                    item.done.errback(results)
            else:
                for item, result in zip(batch, results):
                    item.done.callback(result)
            if self._inbound:
                self._commit_inbound(delivery)

        self.services.writer.run(run).addBoth(done)

    @staticmethod
    def _deliver_one(delivery: Any, txn: Any, account_id: bytes, item: "_Inbound", structure: Any, now: float) -> Any:
        """The uid, or the refusal (raised before anything was written); Junk falls back to INBOX if missing."""
        for mailbox in dict.fromkeys([item.mailbox, "INBOX"]):
            try:
                return delivery.deliver_sync(txn, account_id, item.message, mailbox=mailbox, internal_date=now,
                                             structure=structure)
            except QuotaExceeded as exc:
                return exc
            except MailboxNotFound as exc:
                refusal = exc
        return refusal

    def _bounce_partial(self, txn: Any, item: "_Inbound", targets: list[Recipient], results: dict[bytes, Any],
                        now: float) -> None:
        failed = [r for r in targets if isinstance(results.get(r.account_id), Exception)]
        if not failed or len(failed) == len(targets) or not item.sender:
            return  # all refused: the SMTP reply says so; nobody to tell: nothing to do
        if self.is_local_domain(item.sender.rpartition("@")[2]):
            return
        notices = []
        for r in failed:
            full = isinstance(results[r.account_id], QuotaExceeded)
            q = QueuedRecipient(r.address, "failed", list(r.notify), r.orcpt, 1,
                                "mailbox full" if full else "mailbox unavailable", self.hostname,
                                "5.2.2" if full else "5.2.1")
            if dsn.wants(q, "failed"):
                notices.append(q)
        if not notices:
            return
        original = QueueEntry(id="", account_id=failed[0].account_id, sender=item.sender, recipients=[],
                              envid=item.envid, ret=item.ret, created=now)
        report = dsn.build(self.hostname, original, item.message, notices, "failed", now=now)
        # Owned (and sealed) by the first refusing recipient; a null sender, so never bounced itself.
        self.queue.enqueue(txn, QueueEntry(id="", account_id=failed[0].account_id, sender="",
                                           recipients=[QueuedRecipient(item.sender)], created=now), report)


@dataclass
class _Inbound:
    recipients: list[Recipient]
    message: bytes
    sender: str
    envid: str | None
    ret: str | None
    done: defer.Deferred[dict[bytes, Any]]
    structure: Any = None  # storage.mime.Entity
    mailbox: str = "INBOX"
