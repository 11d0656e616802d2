"""What one PUT costs the store: one durable commit for a small body, X-OC-Mtime included; quota checked in it."""

from __future__ import annotations

import http.client
import os
from email.utils import parsedate_to_datetime

from prometheus_client.parser import text_string_to_metric_families
from webdav_helpers import Dav, FilesServer, prop_values


def write_txns(server: FilesServer) -> float:
    """The server's count of store write transactions so far."""
    conn = http.client.HTTPConnection("127.0.0.1", server.metrics_port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "schoolsuite_store_transaction_seconds_count" and sample.labels.get("kind") == "write":
                return sample.value
    raise AssertionError("no write transaction count in /metrics")


def test_small_put_is_one_write_transaction(files_server: FilesServer, alice: Dav, unique: str) -> None:
    """A 10 KB PUT (new file, then replaced) commits exactly one write transaction each."""
    assert alice.mkcol(unique).status == 201
    alice.propfind(unique, "0")  # the login is cached before counting
    before = write_txns(files_server)
    assert alice.put(f"{unique}/a.bin", os.urandom(10_000)).status == 201
    assert write_txns(files_server) - before == 1
    assert alice.put(f"{unique}/a.bin", os.urandom(10_000)).status == 204
    assert write_txns(files_server) - before == 2


def test_client_mtime_stored_with_the_content(files_server: FilesServer, alice: Dav, unique: str) -> None:
    """rclone's X-OC-Mtime is kept as Last-Modified, in the same single commit as the content."""
    alice.mkcol(unique)
    alice.propfind(unique, "0")
    before = write_txns(files_server)
    stamp = 1_500_000_000
    assert alice.put(f"{unique}/m.txt", b"dated", **{"X-OC-Mtime": str(stamp)}).status == 201
    assert write_txns(files_server) - before == 1
    got = alice.get(f"{unique}/m.txt")
    assert parsedate_to_datetime(got.header("last-modified")).timestamp() == stamp
    assert alice.put(f"{unique}/m.txt", b"x", **{"X-OC-Mtime": "yesterday"}).status == 400


def test_small_chunked_put_over_quota(files_server: FilesServer) -> None:
    """A small chunked PUT (no length for the gate to check) that would pass the quota gets 507; nothing stored."""
    bob = files_server.client("bob@school.example")
    filler = os.urandom((1 << 20) - 50_000)
    assert bob.put("filler.bin", filler).status in (201, 204)
    try:
        def body():  # type: ignore[no-untyped-def]
            yield b"%x\r\n" % 60_000 + b"s" * 60_000 + b"\r\n0\r\n\r\n"

        r = bob.request("PUT", "small-over.bin", body(), {"Transfer-Encoding": "chunked"})
        assert r.status == 507
        assert bob.get("small-over.bin").status == 404
        # Replacing a file counts only the difference: the same size again fits.
        assert bob.put("filler.bin", filler[::-1]).status == 204
    finally:
        bob.delete("filler.bin")
    r = bob.propfind("", "0", b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-used-bytes/>'
                     b'</D:prop></D:propfind>')
    assert int(next(iter(prop_values(r, "{DAV:}quota-used-bytes").values()))) < 50_000


def test_quick_put_answers_like_wsgidav(alice: Dav, unique: str) -> None:
    """A small plain PUT (taken without WsgiDAV) gives 201 then 204 with the ETag and type a GET then shows."""
    alice.mkcol(unique)
    first = alice.put(f"{unique}/q.txt", b"one", **{"Content-Type": "text/x-quick"})
    assert first.status == 201 and first.header("etag")
    got = alice.get(f"{unique}/q.txt")
    assert got.body == b"one" and got.header("etag") == first.header("etag")
    assert got.header("content-type") == "text/x-quick"
    second = alice.put(f"{unique}/q.txt", b"two")
    assert second.status == 204 and second.header("etag") != first.header("etag")
    assert alice.get(f"{unique}/q.txt").header("etag") == second.header("etag")
    assert alice.get(f"{unique}/q.txt").header("content-type") == "text/x-quick"  # kept when not sent
    assert alice.put(f"{unique}/empty.txt", b"").status == 201
    assert alice.get(f"{unique}/empty.txt").body == b""


def test_quick_put_leaves_the_hard_cases_to_wsgidav(alice: Dav, unique: str) -> None:
    """Missing parent 409, a collection 405, preconditions 412, a lock 423 (and its token lets the PUT in)."""
    from webdav_helpers import LOCK_BODY

    alice.mkcol(unique)
    assert alice.put(f"{unique}/no/such/dir.txt", b"x").status == 409
    alice.mkcol(f"{unique}/sub")
    assert alice.put(f"{unique}/sub", b"x").status == 405
    etag = alice.put(f"{unique}/c.txt", b"v1").header("etag")
    assert alice.put(f"{unique}/c.txt", b"v2", **{"If-Match": '"nope"'}).status == 412
    assert alice.put(f"{unique}/c.txt", b"v2", **{"If-None-Match": "*"}).status == 412
    assert alice.put(f"{unique}/c.txt", b"v2", **{"If-Match": etag}).status == 204
    assert alice.put(f"{unique}/c.txt", b"v3", **{"Content-Range": "bytes 0-1/2"}).status == 400
    token = alice.request("LOCK", f"{unique}/c.txt", LOCK_BODY, {"Timeout": "Second-60"}).header("lock-token")
    try:
        assert alice.put(f"{unique}/c.txt", b"locked out").status == 423
        assert alice.put(f"{unique}/other.txt", b"not locked").status == 201  # a lock elsewhere: WsgiDAV's way
        assert alice.put(f"{unique}/c.txt", b"with token", **{"If": f"({token})"}).status == 204
    finally:
        alice.request("UNLOCK", f"{unique}/c.txt", headers={"Lock-Token": token})
    assert alice.get(f"{unique}/c.txt").body == b"with token"
