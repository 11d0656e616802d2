"""Prometheus metrics of CalDAV/CardDAV (bounded labels: method, status class, kind)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from ...metrics import REGISTRY

REQUESTS = Counter(
    "schoolsuite_dav_requests_total",
    "CalDAV/CardDAV requests by method and status code.",
    ["method", "status"],
    registry=REGISTRY,
)

REQUEST_SECONDS = Histogram(
    "schoolsuite_dav_request_seconds",
    "Time to answer a CalDAV/CardDAV request, by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)

ITEMS_WRITTEN = Counter(
    "schoolsuite_dav_items_stored_total",
    "Calendar objects and vCards stored (created or replaced), by kind (vcalendar, vcard).",
    ["kind"],
    registry=REGISTRY,
)

#: Methods counted by name; anything else is counted as "other" (bounded labels).
METHODS = frozenset({"OPTIONS", "GET", "HEAD", "PUT", "DELETE", "PROPFIND", "PROPPATCH", "REPORT",
                     "MKCOL", "MKCALENDAR", "MOVE", "POST"})


def method_label(method: str) -> str:
    return method if method in METHODS else "other"
