"""Prometheus metrics of mail transport (SMTP listeners, queue, authentication verdicts).

Registered in the shared :data:`schoolsuite.metrics.REGISTRY`; labels are
bounded (listener, reason, result, method), never an address.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ..metrics import REGISTRY

SMTP_MESSAGES = Counter(
    "schoolsuite_smtp_messages_total",
    "Messages at end of DATA/BDAT by listener and result (accepted, or the refusal reason).",
    ["listener", "result"],
    registry=REGISTRY,
)

SMTP_REJECTIONS = Counter(
    "schoolsuite_smtp_rejections_total",
    "Refused commands by listener and reason (relay, unknown_user, sender, size, recipients, syntax, ...).",
    ["listener", "reason"],
    registry=REGISTRY,
)

SMTP_SESSION_SECONDS = Histogram(
    "schoolsuite_smtp_session_seconds",
    "Duration of SMTP sessions by listener.",
    ["listener"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)

SMTP_QUEUE_MESSAGES = Gauge(
    "schoolsuite_smtp_queue_messages",
    "Messages in the outbound queue.",
    registry=REGISTRY,
)

SMTP_QUEUE_OLDEST_SECONDS = Gauge(
    "schoolsuite_smtp_queue_oldest_seconds",
    "Age of the oldest message in the outbound queue.",
    registry=REGISTRY,
)

SMTP_DELIVERY_ATTEMPTS = Counter(
    "schoolsuite_smtp_delivery_attempts_total",
    "Outbound delivery attempts per recipient by result (delivered, deferred, failed).",
    ["result"],
    registry=REGISTRY,
)

SMTP_DSN_SENT = Counter(
    "schoolsuite_smtp_dsn_total",
    "Delivery status notifications delivered to senders by action (failed, delayed, relayed).",
    ["action"],
    registry=REGISTRY,
)

SMTP_AUTH_VERDICTS = Counter(
    "schoolsuite_smtp_verdicts_total",
    "Inbound SPF, DKIM, ARC and DMARC verdicts by method and result.",
    ["method", "result"],
    registry=REGISTRY,
)

SMTP_MTA_STS = Counter(
    "schoolsuite_smtp_mta_sts_total",
    "Outbound MX hosts checked against a recipient domain's MTA-STS policy (RFC 8461), by policy mode "
    "(enforce, testing) and result (valid, mx_not_allowed, starttls_missing, certificate_invalid).",
    ["mode", "result"],
    registry=REGISTRY,
)

SMTP_MTA_STS_POLICY = Counter(
    "schoolsuite_smtp_mta_sts_policy_total",
    "MTA-STS policy look-ups that got past the TXT record, by result (fetched, cached, fetch_failed, invalid, "
    "fetch_deferred after a recent failure, dns_error).",
    ["result"],
    registry=REGISTRY,
)
