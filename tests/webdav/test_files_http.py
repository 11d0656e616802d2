"""The /files/ provider over real TLS: content, validators, ranges, copy/move, delete, properties, quota."""

from __future__ import annotations

import os

from webdav_helpers import LOCK_BODY, Dav, FilesServer, prop_values


def test_put_get_roundtrip_and_validators(alice: Dav, unique: str) -> None:
    """PUT then GET returns the bytes, with a strong ETag, Last-Modified and Content-Length."""
    assert alice.mkcol(unique).status == 201
    data = os.urandom(700_000)  # several chunks, streamed
    put = alice.put(f"{unique}/a.bin", data)
    assert put.status == 201 and put.header("etag")
    got = alice.get(f"{unique}/a.bin")
    assert got.status == 200 and got.body == data
    assert got.header("etag") == put.header("etag") and not got.header("etag").startswith("W/")
    assert got.header("last-modified") and got.header("content-length") == str(len(data))
    again = alice.put(f"{unique}/a.bin", b"new")
    assert again.status == 204 and again.header("etag") != put.header("etag")


def test_byte_ranges(alice: Dav, unique: str) -> None:
    """RFC 9110 §14: Range gives 206 with the right bytes, also across chunk boundaries."""
    alice.mkcol(unique)
    data = os.urandom(600_000)
    alice.put(f"{unique}/r.bin", data)
    r = alice.get(f"{unique}/r.bin", Range="bytes=262000-262999")
    assert r.status == 206 and r.body == data[262000:263000]
    assert r.header("content-range") == f"bytes 262000-262999/{len(data)}"
    tail = alice.get(f"{unique}/r.bin", Range="bytes=-100")
    assert tail.status == 206 and tail.body == data[-100:]


def test_conditional_requests(alice: Dav, unique: str) -> None:
    """If-Match / If-None-Match / If-Modified-Since give 412 / 304 as RFC 9110 §13 says."""
    alice.mkcol(unique)
    etag = alice.put(f"{unique}/c.txt", b"one").header("etag")
    assert alice.get(f"{unique}/c.txt", **{"If-None-Match": etag}).status == 304
    assert alice.put(f"{unique}/c.txt", b"two", **{"If-Match": '"nope"'}).status == 412
    assert alice.put(f"{unique}/c.txt", b"two", **{"If-Match": etag}).status == 204
    assert alice.put(f"{unique}/c.txt", b"three", **{"If-None-Match": "*"}).status == 412
    assert alice.put(f"{unique}/new.txt", b"x", **{"If-None-Match": "*"}).status == 201
    lm = alice.get(f"{unique}/c.txt").header("last-modified")
    assert alice.get(f"{unique}/c.txt", **{"If-Modified-Since": lm}).status == 304


def test_copy_shares_content_and_move_keeps_it(alice: Dav, unique: str) -> None:
    """COPY and MOVE do not rewrite content: the ETag (derived from the content id) carries over."""
    alice.mkcol(unique)
    etag = alice.put(f"{unique}/src.bin", os.urandom(300_000)).header("etag")
    dest = alice.home(f"{unique}/copy.bin")
    assert alice.request("COPY", f"{unique}/src.bin", headers={"Destination": dest}).status == 201
    assert alice.get(f"{unique}/copy.bin").header("etag") == etag
    moved = alice.home(f"{unique}/moved.bin")
    assert alice.request("MOVE", f"{unique}/src.bin", headers={"Destination": moved}).status == 201
    assert alice.get(f"{unique}/moved.bin").header("etag") == etag
    assert alice.get(f"{unique}/src.bin").status == 404
    # Deleting one copy leaves the other readable (reference counted).
    assert alice.delete(f"{unique}/moved.bin").status == 204
    assert len(alice.get(f"{unique}/copy.bin").body) == 300_000


def test_move_collection_keeps_subtree_and_properties(alice: Dav, unique: str) -> None:
    """MOVE of a collection carries members and dead properties along."""
    alice.mkcol(unique)
    alice.mkcol(f"{unique}/d")
    alice.mkcol(f"{unique}/d/e")
    alice.put(f"{unique}/d/e/f.txt", b"deep")
    patch = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop>'
             b'<Z:colour>blue</Z:colour></D:prop></D:set></D:propertyupdate>')
    assert alice.request("PROPPATCH", f"{unique}/d/e/f.txt", patch).status == 207
    r = alice.request("MOVE", f"{unique}/d", headers={"Destination": alice.home(f"{unique}/d2")})
    assert r.status == 201
    assert alice.get(f"{unique}/d2/e/f.txt").body == b"deep"
    found = alice.propfind(f"{unique}/d2/e/f.txt", "0",
                           b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><Z:colour xmlns:Z="urn:z"/>'
                           b'</D:prop></D:propfind>')
    assert b"blue" in found.body


def test_recursive_delete(alice: Dav, unique: str) -> None:
    """DELETE of a collection removes everything below it (RFC 4918 §9.6.1)."""
    alice.mkcol(unique)
    for i in range(3):
        alice.mkcol(f"{unique}/s{i}")
        alice.put(f"{unique}/s{i}/f.txt", b"x" * 1000)
    assert alice.delete(unique).status == 204
    assert alice.propfind(unique, "0").status == 404
    assert alice.get(f"{unique}/s1/f.txt").status == 404


def test_dead_properties_and_locks_are_in_the_store(files_server: FilesServer, unique: str) -> None:
    """A dead property and a lock come back from the store (PROPFIND, lockdiscovery) on a new connection."""
    dav = files_server.client()
    dav.mkcol(unique)
    dav.put(f"{unique}/p.txt", b"p")
    patch = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop>'
             b'<Z:note>kept</Z:note></D:prop></D:set></D:propertyupdate>')
    assert dav.request("PROPPATCH", f"{unique}/p.txt", patch).status == 207
    lock = dav.request("LOCK", f"{unique}/p.txt", LOCK_BODY, {"Timeout": "Second-600"})
    assert lock.status == 200
    token = lock.header("lock-token")
    fresh = files_server.client()
    body = fresh.propfind(f"{unique}/p.txt", "0").body
    assert b"kept" in body and token.strip("<>").encode() in body
    # Another user cannot use or see the token.
    carol = files_server.client("carol@school.example")
    assert carol.request("UNLOCK", f"{unique}/p.txt", headers={"Lock-Token": token}).status in (403, 404)
    assert dav.put(f"{unique}/p.txt", b"no").status == 423
    assert dav.put(f"{unique}/p.txt", b"yes", **{"If": f"({token})"}).status == 204
    assert dav.request("UNLOCK", f"{unique}/p.txt", headers={"Lock-Token": token}).status == 204


def test_quota_properties(files_server: FilesServer) -> None:
    """RFC 4331: quota-used-bytes and quota-available-bytes are the account's, not the disk's."""
    bob = files_server.client("bob@school.example")
    bob.put("q.bin", b"z" * 1000)
    r = bob.propfind("", "0", b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-used-bytes/>'
                     b'<D:quota-available-bytes/></D:prop></D:propfind>')
    used = int(next(iter(prop_values(r, "{DAV:}quota-used-bytes").values())))
    avail = int(next(iter(prop_values(r, "{DAV:}quota-available-bytes").values())))
    assert used >= 1000 and used + avail == 1 << 20
    bob.delete("q.bin")


def test_quota_507_before_body(files_server: FilesServer) -> None:
    """A PUT whose Content-Length exceeds the quota gets 507 without the body being read."""
    import socket
    import ssl

    bob = files_server.client("bob@school.example")
    ctx = ssl.create_default_context(cafile=str(files_server.cert))
    with socket.create_connection(("localhost", files_server.port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            head = (f"PUT {bob.home('big.bin')} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {50 << 20}\r\n"
                    f"Authorization: {bob.auth_headers()['Authorization']}\r\n\r\n")
            s.sendall(head.encode())
            s.settimeout(10)
            first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 507")


def test_quota_507_chunked_midway(files_server: FilesServer) -> None:
    """A chunked upload (no length known) that outgrows the quota fails with 507 and stores nothing."""
    bob = files_server.client("bob@school.example")

    def body():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"%x\r\n" % 65536 + b"y" * 65536 + b"\r\n"
        yield b"0\r\n\r\n"

    try:
        r = bob.request("PUT", "chunky.bin", body(), {"Transfer-Encoding": "chunked"})
        assert r.status == 507
    except (ConnectionError, OSError):
        pass  # the server may close while we still send; what matters is below
    assert bob.get("chunky.bin").status == 404
    r = bob.propfind("", "0", b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-used-bytes/>'
                     b'</D:prop></D:propfind>')
    assert int(next(iter(prop_values(r, "{DAV:}quota-used-bytes").values()))) < 1 << 20


def test_new_account_has_empty_file_space(files_server: FilesServer) -> None:
    """A new account's home exists at once and is empty."""
    carol = files_server.client("carol@school.example")
    r = carol.propfind("", "1")
    assert r.status == 207 and r.hrefs() == ["/files/carol@school.example/"]


def test_metrics(files_server: FilesServer, alice: Dav, unique: str) -> None:
    """Prometheus: requests by method and status, bytes in and out, latency, stored bytes; no names as labels."""
    import http.client

    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        conn = http.client.HTTPConnection("127.0.0.1", files_server.metrics_port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        assert "alice" not in text and unique not in text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples
                if s.name.startswith("schoolsuite_webdav_")}

    before = scrape()
    alice.mkcol(unique)
    alice.put(f"{unique}/m.bin", b"m" * 5000)
    alice.get(f"{unique}/m.bin")
    alice.get(f"{unique}/none")
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("schoolsuite_webdav_requests_total", method="PUT", status="201") == 1
    assert delta("schoolsuite_webdav_requests_total", method="GET", status="404") == 1
    assert delta("schoolsuite_webdav_bytes_total", direction="in") == 5000
    assert delta("schoolsuite_webdav_bytes_total", direction="out") == 5000
    assert delta("schoolsuite_webdav_request_seconds_count", method="GET") == 2
    assert delta("schoolsuite_webdav_stored_bytes") == 5000


def test_slow_reader_does_not_fill_server_memory(files_server: FilesServer, alice: Dav, unique: str) -> None:
    """A GET read slowly is paced by the connection: the server does not buffer the file in memory."""
    import http.client
    import ssl
    import time
    from pathlib import Path

    def rss_anon_mb() -> float:
        for line in Path(f"/proc/{files_server.pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
        return 0.0

    alice.mkcol(unique)
    block = os.urandom(1 << 20)
    assert alice.request("PUT", f"{unique}/big.bin", (block for _ in range(96)),
                         {"Content-Length": str(96 << 20)}).status == 201
    ctx = ssl.create_default_context(cafile=str(files_server.cert))
    conn = http.client.HTTPSConnection("localhost", files_server.port, context=ctx, timeout=30)
    conn.request("GET", alice.home(f"{unique}/big.bin"), headers=alice.auth_headers())
    resp = conn.getresponse()
    base = rss_anon_mb()
    resp.read(1 << 20)
    time.sleep(1.5)  # the server could have produced all 96 MiB by now if it did not wait for us
    grown = rss_anon_mb() - base
    conn.close()  # and going away mid-response leaves the server fine
    assert grown < 40, f"server grew by {grown:.0f} MB while the client did not read"
    assert alice.get(f"{unique}/big.bin", Range="bytes=0-9").status == 206


def test_long_range_read_ahead(alice: Dav, unique: str) -> None:
    """A range spanning several blocks (read ahead on a thread) returns exactly those bytes; so does a full GET."""
    alice.mkcol(unique)
    data = os.urandom(5 << 20)
    alice.put(f"{unique}/long.bin", data)
    r = alice.get(f"{unique}/long.bin", Range="bytes=1000001-4500000")
    assert r.status == 206 and r.body == data[1000001:4500001]
    assert alice.get(f"{unique}/long.bin").body == data


def test_early_error_on_streamed_put(alice: Dav) -> None:
    """A streamed PUT that WsgiDAV refuses before reading (no parent: 409) is answered and the connection closed."""
    block = os.urandom(1 << 20)
    try:
        r = alice.request("PUT", "no-such-parent/x.bin", (block for _ in range(8)), {"Content-Length": str(8 << 20)})
    except OSError:
        return  # the server may close while we still send; the log check at teardown still applies
    assert r.status == 409
    assert alice.get("no-such-parent/x.bin").status == 404


def test_copy_over_quota_507(files_server: FilesServer) -> None:
    """A COPY that would take the account over its quota gets 507 (copies count against the quota)."""
    bob = files_server.client("bob@school.example")
    assert bob.put("half.bin", b"h" * 600_000).status == 201
    r = bob.request("COPY", "half.bin", headers={"Destination": bob.home("half-copy.bin")})
    assert r.status == 507
    assert bob.get("half-copy.bin").status == 404
    bob.delete("half.bin")


def test_client_gone_mid_upload_leaves_nothing(files_server: FilesServer, alice: Dav, unique: str) -> None:
    """A client that disconnects half-way through a PUT leaves no file and no used bytes behind."""
    import socket
    import ssl
    import time

    alice.mkcol(unique)

    def used() -> int:
        r = alice.propfind("", "0", b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
                           b'<D:quota-used-bytes/></D:prop></D:propfind>')
        return int(next(iter(prop_values(r, "{DAV:}quota-used-bytes").values())))

    before = used()
    ctx = ssl.create_default_context(cafile=str(files_server.cert))
    raw = socket.create_connection(("localhost", files_server.port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    s.sendall((f"PUT {alice.home(unique + '/half.bin')} HTTP/1.1\r\nHost: localhost\r\n"
               f"Authorization: {alice.auth_headers()['Authorization']}\r\nContent-Length: {40 << 20}\r\n\r\n").encode())
    block = os.urandom(1 << 20)
    for _ in range(20):
        s.sendall(block)
    s.close()
    time.sleep(1.5)
    assert alice.get(f"{unique}/half.bin").status == 404
    assert used() == before
    # No half-written content is left pending in the store (LMDB allows a second process to read).
    from schoolsuite.config import load_config
    from schoolsuite.instance import open_store

    store = open_store(load_config(files_server.dir / "schoolsuite.toml"))
    try:
        with store.read() as txn:
            assert list(txn.meta_scan(b"pending/")) == []
    finally:
        store.close()
