"""What /files/ keeps in the store survives a restart: content, dead properties, locks; CLI-made accounts work."""

from __future__ import annotations

import subprocess
from pathlib import Path

from webdav_server import start_files_server
from support import schoolsuite_cmd, stop_process
from webdav_helpers import LOCK_BODY, PASSWORD


def test_restart_keeps_content_properties_and_locks(tmp_path: Path) -> None:
    """After `serve` restarts on the same instance, the file, its dead property and its lock are all still there."""
    server, proc = start_files_server(tmp_path / "a")
    try:
        dav = server.client()
        dav.put("kept.txt", b"still here")
        patch = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop>'
                 b'<Z:tag>restart-proof</Z:tag></D:prop></D:set></D:propertyupdate>')
        assert dav.request("PROPPATCH", "kept.txt", patch).status == 207
        token = dav.request("LOCK", "kept.txt", LOCK_BODY, {"Timeout": "Second-3600"}).header("lock-token")
        config = server.dir / "schoolsuite.toml"
    finally:
        stop_process(proc, 30)
    from support import start_server

    run = start_server(schoolsuite_cmd("serve", "-c", str(config)), expect=2, timeout=60)
    try:
        body = dav.propfind("kept.txt", "0").body
        assert b"restart-proof" in body and token.strip("<>").encode() in body
        assert dav.get("kept.txt").body == b"still here"
        assert dav.put("kept.txt", b"overwrite").status == 423  # the lock still holds
        assert dav.request("UNLOCK", "kept.txt", headers={"Lock-Token": token}).status == 204
    finally:
        run.stop()


def test_account_made_by_cli_gets_file_space(tmp_path: Path) -> None:
    """An account added with `schoolsuite user add` while the server runs has an empty file space at once."""
    server, proc = start_files_server(tmp_path / "b")
    try:
        subprocess.run(schoolsuite_cmd("-c", str(server.dir / "schoolsuite.toml"), "user", "add",
                                       "dave@school.example", "--password-stdin"),
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True, timeout=60)
        dave = server.client("dave@school.example")
        r = dave.propfind("", "1")
        assert r.status == 207 and r.hrefs() == ["/files/dave@school.example/"]
        assert dave.put("first.txt", b"hello").status == 201
    finally:
        stop_process(proc, 30)


def test_sigterm_with_requests_in_flight(tmp_path: Path) -> None:
    """SIGTERM during an upload and a download: clean exit 0, store closed, the upload abandoned, data intact."""
    import http.client
    import os
    import socket
    import ssl
    import time

    from schoolsuite.config import load_config
    from schoolsuite.instance import open_store

    server, proc = start_files_server(tmp_path / "c")
    dav = server.client()
    kept = os.urandom(6 << 20)
    assert dav.put("kept.bin", kept).status == 201
    ctx = ssl.create_default_context(cafile=str(server.cert))
    # An upload that has sent 3 of 40 MiB ...
    up = ctx.wrap_socket(socket.create_connection(("localhost", server.port), timeout=10), server_hostname="localhost")
    up.sendall((f"PUT {dav.home('partial.bin')} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {40 << 20}\r\n"
                f"Authorization: {dav.auth_headers()['Authorization']}\r\n\r\n").encode() + os.urandom(3 << 20))
    # ... and a download nobody reads.
    down = http.client.HTTPSConnection("localhost", server.port, context=ctx, timeout=10)
    down.request("GET", dav.home("kept.bin"), headers=dav.auth_headers())
    time.sleep(1.0)
    started = time.monotonic()
    proc.terminate()
    code = proc.wait(30)
    assert code == 0 and time.monotonic() - started < 20
    up.close()
    down.close()
    time.sleep(0.3)
    log = (tmp_path / "c" / "server.log").read_text()
    assert "store closed" in log and "Traceback" not in log
    store = open_store(load_config(server.dir / "schoolsuite.toml"))
    try:
        with store.read() as txn:
            assert list(txn.meta_scan(b"pending/")) == []  # the half upload was aborted, not left pending
    finally:
        store.close()


def test_abandoned_upload_swept_at_start(tmp_path: Path) -> None:
    """Pending content an upload left behind (a crash mid-upload) is removed when `serve` starts."""
    import struct

    from schoolsuite.config import load_config
    from schoolsuite.instance import open_store
    from schoolsuite.storage import accounts, content
    from schoolsuite.storage.spaces import SPACE_CONTENT
    from support import start_server

    server, proc = start_files_server(tmp_path / "c")
    stop_process(proc, 30)
    config = server.dir / "schoolsuite.toml"
    store = open_store(load_config(config))
    try:
        with store.read() as txn:
            alice = accounts.find_account_id(txn, "alice@school.example")
        writer = content.ContentWriter(store, alice, batch_bytes=content.CHUNK_SIZE)
        writer.write(b"q" * (3 * content.CHUNK_SIZE))  # batches committed, never published
        with store.write() as txn:  # as if the upload's last batch came two hours ago
            txn.meta_put(b"pending/" + alice + writer.content_id, struct.pack(">d", 0.0))
        with store.read() as txn:
            assert len(list(txn.meta_scan(b"pending/"))) == 1
            assert txn.user(alice).get(SPACE_CONTENT, writer.content_id) is not None
    finally:
        store.close()
    run = start_server(schoolsuite_cmd("serve", "-c", str(config)), expect=2, timeout=60)
    try:
        assert server.client().propfind("", "0").status == 207
    finally:
        run.stop()
    store = open_store(load_config(config))
    try:
        with store.read() as txn:
            assert list(txn.meta_scan(b"pending/")) == []
            assert txn.user(alice).get(SPACE_CONTENT, writer.content_id) is None
    finally:
        store.close()
