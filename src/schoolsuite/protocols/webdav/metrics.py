"""WebDAV metrics (bounded labels: method from a fixed set, status class, direction)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ...metrics import REGISTRY

METHODS = frozenset({"OPTIONS", "GET", "HEAD", "PUT", "DELETE", "PROPFIND", "PROPPATCH", "MKCOL", "COPY",
                     "MOVE", "LOCK", "UNLOCK", "POST"})

REQUESTS = Counter(
    "schoolsuite_webdav_requests_total",
    "WebDAV requests by method and status code.",
    ["method", "status"],
    registry=REGISTRY,
)

BYTES = Counter(
    "schoolsuite_webdav_bytes_total",
    "File content bytes received (in) and sent (out) by WebDAV.",
    ["direction"],
    registry=REGISTRY,
)

SECONDS = Histogram(
    "schoolsuite_webdav_request_seconds",
    "Time from the start of a WebDAV request to the end of its response, by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)

STORED_BYTES = Gauge(
    "schoolsuite_webdav_stored_bytes",
    "Bytes of file content stored in all file spaces (copies counted per file).",
    registry=REGISTRY,
)


def method_label(method: str) -> str:
    return method if method in METHODS else "other"
