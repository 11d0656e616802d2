"""Prometheus metrics shared by every layer.

Names follow ``schoolsuite_<protocol>_<thing>_<unit>``. Labels are bounded
(protocol, result, operation); never a user name or an address.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

AUTH_ATTEMPTS = Counter(
    "schoolsuite_auth_attempts_total",
    "Authentication attempts by protocol and result "
    "(ok, failed, throttled, blocked, disabled).",
    ["protocol", "result"],
    registry=REGISTRY,
)

STORE_TXN_SECONDS = Histogram(
    "schoolsuite_store_transaction_seconds",
    "Duration of store transactions, by kind (read, write).",
    ["kind"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)

STORE_MAP_USED_BYTES = Gauge(
    "schoolsuite_store_map_used_bytes",
    "Bytes of the LMDB map in use (last page number times page size).",
    registry=REGISTRY,
)

STORE_MAP_SIZE_BYTES = Gauge(
    "schoolsuite_store_map_size_bytes",
    "Configured size of the LMDB map.",
    registry=REGISTRY,
)

STORE_RECORD_FAILURES = Counter(
    "schoolsuite_store_sealed_record_failures_total",
    "Sealed records that failed authentication when opened (corruption or tampering).",
    registry=REGISTRY,
)

OPEN_CONNECTIONS = Gauge(
    "schoolsuite_connections_open",
    "Open client connections by protocol.",
    ["protocol"],
    registry=REGISTRY,
)

CONNECTIONS_TOTAL = Counter(
    "schoolsuite_connections_total",
    "Client connections accepted by protocol.",
    ["protocol"],
    registry=REGISTRY,
)

ACCOUNTS = Gauge(
    "schoolsuite_accounts",
    "Accounts in the store.",
    registry=REGISTRY,
)

ADMIN_REQUESTS = Counter(
    "schoolsuite_admin_requests_total",
    "Provisioning API (SCIM) requests by operation (e.g. user.create, group.list) and HTTP status.",
    ["operation", "status"],
    registry=REGISTRY,
)
