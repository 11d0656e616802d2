"""The outbound queue worker: retries with backoff, delay warnings, bounces.

Queued messages live in the store (storage/queue.py), sealed with the
submitting account's key, so the queue survives restarts and ``kill -9``:
a message leaves the queue only in the transaction that records its last
recipient's outcome. Delivery is at least once: an attempt cut off by a crash
is made again.

Schedule: the n-th retry waits ``retry_initial * 2**(n-1)`` seconds, at most
``retry_max`` (5 min, 10, 20, 40, 80, 160, then every 4 h by default); a
delay warning goes to the sender once after ``delay_warning``; after
``give_up`` (5 days) the remaining recipients fail with 4.4.7 and a bounce
(RFC 3464) is delivered to the sender's INBOX.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from . import smtp_metrics as metrics
from ..storage import Store, WriteTxn
from ..storage import queue as records
from ..storage.queue import QueueEntry, QueuedRecipient
from . import dsn
from .outbound import Envelope, Outcome, Route, transmit
from .resolver import MailDNS
from .writer import StoreWriter

log = Logger(namespace="schoolsuite.queue")


@dataclass(frozen=True)
class Schedule:
    retry_initial: float = 300
    retry_max: float = 14400
    delay_warning: float = 14400
    give_up: float = 5 * 86400

    def next_delay(self, attempts: int) -> float:
        return float(min(self.retry_initial * 2 ** max(0, attempts - 1), self.retry_max))


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


class OutboundQueue:
    """Schedules and makes delivery attempts for queued messages."""

    def __init__(self, store: Store, writer: StoreWriter, reactor: Any, *, route: Route, dns: MailDNS,
                 schedule: Schedule, delivery: Callable[[], Any], poll: float = 15.0,
                 clock: Callable[[], float] = time.time, concurrency: int = 4, mta_sts: Any = None) -> None:
        self.store, self.writer, self.reactor = store, writer, reactor
        self.mta_sts = mta_sts  # services.mtasts.MTASTS, or None: no MTA-STS (RFC 8461) checks
        self.route, self.dns, self.schedule = route, dns, schedule
        self._delivery = delivery  # returns services.delivery (None until it exists)
        self.poll = poll
        self.clock = clock
        self._pool = ThreadPool(minthreads=0, maxthreads=concurrency, name="smtp-outbound")
        self._slots = defer.DeferredSemaphore(concurrency)
        self._in_flight: dict[str, defer.Deferred[None]] = {}
        self._loop: task.LoopingCall | None = None
        self._stopping = False

    # -- enqueueing (inside the caller's write transaction) ---------------------

    def enqueue(self, txn: WriteTxn, entry: QueueEntry, message: bytes) -> QueueEntry:
        """Add ``entry`` in ``txn``; the worker is woken once it commits."""
        entry.id = entry.id or records.new_queue_id()
        entry.created = entry.created or self.clock()
        entry.next_attempt = entry.next_attempt or entry.created
        records.add_entry(txn, entry, message)
        txn.after_commit(self.wake)
        return entry

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self._pool.start()
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self.reactor
        self._loop.start(self.poll, now=True).addErrback(
            lambda f: log.failure("queue worker loop stopped", f))

    def stop(self) -> defer.Deferred[None]:
        """Stop scheduling; wait for attempts in flight (their outcome is recorded)."""
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        pending = list(self._in_flight.values())
        d = defer.DeferredList(pending, consumeErrors=True) if pending else defer.succeed(None)
        d.addCallback(lambda _: self._pool.stop())
        return d

    def wake(self) -> None:
        """Look for due messages soon (callable from any thread)."""
        if not self._stopping:
            self.reactor.callFromThread(self.tick)

    # -- the worker -------------------------------------------------------------

    def tick(self) -> None:
        """Start an attempt for every due message that is not already in flight."""
        if self._stopping:
            return
        now = self.clock()
        oldest = None
        count = 0
        with self.store.read() as txn:
            due = []
            for item in records.scan_index(txn):
                count += 1
                oldest = item.created if oldest is None else min(oldest, item.created)
                if item.next_attempt <= now and item.queue_id not in self._in_flight:
                    due.append(item)
        metrics.SMTP_QUEUE_MESSAGES.set(count)
        metrics.SMTP_QUEUE_OLDEST_SECONDS.set(0 if oldest is None else max(0.0, now - oldest))
        for item in due:
            d = self._slots.run(self._attempt, item.queue_id, item.account_id)
            self._in_flight[item.queue_id] = d
            d.addErrback(lambda f, q=item.queue_id: log.failure("queue attempt for {queue_id} failed", f,
                                                                 queue_id=q))
            d.addBoth(lambda _, q=item.queue_id: self._in_flight.pop(q, None))

    @defer.inlineCallbacks
    def _attempt(self, queue_id: str, account_id: bytes):  # type: ignore[no-untyped-def]
        loaded = self._load(queue_id, account_id)
        if loaded is None:
            yield self.writer.run(self._drop_orphan, queue_id, account_id)
            return
        entry, message = loaded
        by_domain: dict[str, list[QueuedRecipient]] = {}
        for r in entry.pending:
            key = "" if self.route.smarthost else domain_of(r.address)
            by_domain.setdefault(key, []).append(r)
        outcomes: dict[str, Outcome] = {}
        for domain, group in by_domain.items():
            envelope = Envelope(entry.sender, tuple((r.address, tuple(r.notify), r.orcpt) for r in group),
                                entry.size, entry.body == "8BITMIME" or not message.isascii(), entry.smtputf8,
                                entry.ret, entry.envid)
            try:
                result = yield threads.deferToThreadPool(self.reactor, self._pool, self._transmit, domain,
                                                         envelope, message)
            except Exception as exc:  # a bug or an unexpected library error: retry later, keep the message
                log.failure("delivery attempt error", None)
                result = {r.address: Outcome(0, "4.3.0", f"local error: {type(exc).__name__}") for r in group}
            outcomes.update(result)
        for outcome in outcomes.values():
            label = "delivered" if outcome.delivered else "failed" if outcome.permanent else "deferred"
            metrics.SMTP_DELIVERY_ATTEMPTS.labels(label).inc()
        yield self.writer.run(self._record, queue_id, account_id, outcomes)

    def _transmit(self, domain: str, envelope: Envelope, message: bytes) -> dict[str, Outcome]:
        """One domain's attempt (a pool thread): its MTA-STS policy, if any, then the delivery."""
        policy = self.mta_sts.policy(domain) if self.mta_sts is not None and domain else None
        return transmit(self.route, self.dns, domain, envelope, message, policy)

    def _load(self, queue_id: str, account_id: bytes) -> tuple[QueueEntry, bytes] | None:
        with self.store.read() as txn:
            entry = records.get_entry(txn, account_id, queue_id)
            if entry is None:
                return None
            return entry, records.read_message(txn, entry)

    def _drop_orphan(self, queue_id: str, account_id: bytes) -> None:
        with self.store.write() as txn:
            if records.get_entry(txn, account_id, queue_id) is None:
                records.drop_orphan_index(txn, queue_id)

    def _record(self, queue_id: str, account_id: bytes, outcomes: dict[str, Outcome]) -> None:
        """Writer thread: record outcomes, reschedule or finish, deliver DSNs to the sender."""
        now = self.clock()
        with self.store.write() as txn:
            entry = records.get_entry(txn, account_id, queue_id)
            if entry is None:
                return  # deleted meanwhile (queue delete)
            message = records.read_message(txn, entry)
            entry.attempts += 1
            failed: list[QueuedRecipient] = []
            relayed: list[QueuedRecipient] = []
            for r in entry.pending:
                outcome = outcomes.get(r.address)
                if outcome is None:
                    continue
                r.attempts += 1
                r.last_reply, r.remote, r.enhanced = outcome.text, outcome.remote, outcome.enhanced
                if outcome.delivered:
                    r.status = "sent"
                    if not outcome.dsn_passed and dsn.wants(r, "relayed"):
                        relayed.append(r)
                elif outcome.permanent:
                    r.status = "failed"
                    failed.append(r)
                    log.info("queue {queue_id}: recipient refused permanently: {reply}", queue_id=queue_id,
                             reply=outcome.text)
            expired = now - entry.created >= self.schedule.give_up
            if expired:
                for r in entry.pending:
                    r.status, r.enhanced = "failed", "4.4.7"  # RFC 3463: delivery time expired
                    r.last_reply = r.last_reply or "delivery time expired"
                    failed.append(r)
            bounces = [r for r in failed if dsn.wants(r, "failed")]
            if bounces:
                self._notify(txn, entry, message, bounces, "failed", now)
            if relayed:
                self._notify(txn, entry, message, relayed, "relayed", now)
            if not entry.pending:
                records.delete_entry(txn, account_id, queue_id)
                return
            if not entry.warned and now - entry.created >= self.schedule.delay_warning:
                entry.warned = True
                delayed = [r for r in entry.pending if dsn.wants(r, "delayed")]
                if delayed:
                    self._notify(txn, entry, message, delayed, "delayed", now,
                                 retry_until=entry.created + self.schedule.give_up)
            entry.next_attempt = now + self.schedule.next_delay(entry.attempts)
            records.save_entry(txn, entry)

    def _notify(self, txn: WriteTxn, entry: QueueEntry, message: bytes, recipients: list[QueuedRecipient],
                action: str, now: float, retry_until: float | None = None) -> None:
        """Deliver a DSN into the sender's INBOX in this transaction (RFC 3461 §6)."""
        if not entry.sender:
            return  # RFC 5321 §6.1: never a notification about a notification
        delivery = self._delivery()
        report = dsn.build(self.route.hostname, entry, message, recipients, action, now=now, retry_until=retry_until)
        if delivery is None:
            log.error("cannot deliver a {action} notice for queue {queue_id}: no delivery service",
                      action=action, queue_id=entry.id)
            return
        try:
            delivery.deliver_sync(txn, entry.account_id, report)
        except Exception as exc:  # quota or a missing INBOX must not keep the message in the queue forever
            log.warn("{action} notice for queue {queue_id} not delivered: {error}", action=action,
                     queue_id=entry.id, error=type(exc).__name__)
        else:
            metrics.SMTP_DSN_SENT.labels(action).inc()

    # -- operator actions (CLI or admin) ----------------------------------------------


def list_queue(store: Store) -> list[QueueEntry]:
    """Every queued message (for ``schoolsuite queue list``), oldest first."""
    entries = []
    with store.read() as txn:
        for item in records.scan_index(txn):
            entry = records.get_entry(txn, item.account_id, item.queue_id)
            if entry is not None:
                entries.append(entry)
    return sorted(entries, key=lambda e: e.created)


def retry_now(store: Store, queue_id: str) -> bool:
    """Make a queued message due at once; False if there is no such message."""
    with store.write() as txn:
        item = records.find_index(txn, queue_id)
        entry = None if item is None else records.get_entry(txn, item.account_id, queue_id)
        if entry is None:
            return False
        entry.next_attempt = 0.0
        records.save_entry(txn, entry)
    return True


def delete(store: Store, queue_id: str) -> bool:
    """Drop a queued message without notice; False if there is no such message."""
    with store.write() as txn:
        item = records.find_index(txn, queue_id)
        if item is None:
            return False
        return records.delete_entry(txn, item.account_id, queue_id)
