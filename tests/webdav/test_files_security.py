"""/files/ security: Basic auth over TLS, app passwords, isolation between users, traversal in every spelling."""

from __future__ import annotations

import socket
import ssl

import pytest

from webdav_helpers import Dav, FilesServer


def raw_request(server: FilesServer, request: bytes) -> bytes:
    """Send bytes exactly as given (no client-side normalisation of the path); return the status line."""
    ctx = ssl.create_default_context(cafile=str(server.cert))
    with socket.create_connection(("localhost", server.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(request)
            data = b""
            while b"\r\n" not in data:
                piece = s.recv(4096)
                if not piece:
                    break
                data += piece
    return data.split(b"\r\n", 1)[0]


def test_no_credentials_401_with_basic_challenge(files_server: FilesServer) -> None:
    """Without credentials: 401 and a Basic challenge in UTF-8 (RFC 7617)."""
    r = files_server.client(anonymous=True).propfind("", "0")
    assert r.status == 401
    assert r.header("www-authenticate").startswith('Basic realm="schoolsuite files", charset="UTF-8"')


def test_wrong_password_401(files_server: FilesServer) -> None:
    """A wrong password gets 401."""
    assert files_server.client(password="wrong wrong wrong").propfind("", "0").status == 401


def test_app_password_works(files_server: FilesServer) -> None:
    """An app password logs in like the password (per-device secrets)."""
    dav = files_server.client(password=files_server.app_password)
    assert dav.propfind("", "0").status == 207


def test_user_cannot_reach_another_home(files_server: FilesServer, alice: Dav) -> None:
    """Alice's credentials on Bob's home get 403, for reading and writing alike."""
    bob_home = "/files/bob@school.example/"
    assert alice.request("PROPFIND", bob_home, headers={"Depth": "0"}).status == 403
    assert alice.request("PUT", bob_home + "x.txt", b"x").status == 403
    assert alice.request("GET", "/files/BOB@School.Example/x.txt").status == 403


def test_top_lists_only_own_home(alice: Dav) -> None:
    """PROPFIND on /files/ shows the user's own home and nobody else's."""
    r = alice.request("PROPFIND", "/files/", headers={"Depth": "1"})
    assert r.status == 207
    assert r.hrefs() == ["/files/", "/files/alice@school.example/"]


def test_destination_into_another_home_403(alice: Dav, unique: str) -> None:
    """COPY/MOVE with a Destination in another user's home is refused."""
    alice.mkcol(unique)
    alice.put(f"{unique}/f.txt", b"f")
    for dest in ("/files/bob@school.example/stolen.txt",
                 "https://localhost/files/bob@school.example/stolen.txt"):
        r = alice.request("COPY", f"{unique}/f.txt", headers={"Destination": dest})
        assert r.status == 403, dest


@pytest.mark.parametrize("dest", [
    "https://evil.example/files/alice@school.example/x.txt",  # another host
    "http://localhost/files/alice@school.example/x.txt",  # another scheme
    "/files/alice@school.example/../bob@school.example/x.txt",
    "/files/alice@school.example/%2e%2e/bob@school.example/x.txt",
    "/files/alice@school.example/a%2fb.txt",
    "/files/alice@school.example/a%5cb.txt",
    "/etc/passwd",
])
def test_destination_traversal_refused(alice: Dav, unique: str, dest: str) -> None:
    """A Destination that leaves the home in any spelling gets 400 or 403 and changes nothing."""
    alice.mkcol(unique)
    alice.put(f"{unique}/f.txt", b"f")
    r = alice.request("MOVE", f"{unique}/f.txt", headers={"Destination": dest})
    assert r.status in (400, 403), (dest, r.status)
    assert alice.get(f"{unique}/f.txt").body == b"f"


@pytest.mark.parametrize("path", [
    "/files/alice@school.example/../bob@school.example/",
    "/files/alice@school.example/%2e%2e/bob@school.example/",
    "/files/alice@school.example/%2E%2E/%2E%2E/",
    "/files/alice@school.example/.%2e/x",
    "/files/alice@school.example/a%2f..%2f..%2fbob@school.example/",
    "/files/alice@school.example/a%5c..%5cb",
    "/files/alice@school.example/a\\..\\b",
    "/files/alice@school.example/%00",
    "/files/alice@school.example/%ff%fe",
    "/files/alice@school.example/%zz",
    "/files/./alice@school.example/",
    "/files/%2e%2e/",
    "/%66iles/alice@school.example/%2e%2e/bob@school.example/",
])
def test_request_path_traversal_refused(files_server: FilesServer, alice: Dav, path: str) -> None:
    """A request path with a traversal or an encoded separator, as sent on the wire, gets 400/403."""
    auth = alice.auth_headers()["Authorization"]
    line = raw_request(files_server, f"PROPFIND {path} HTTP/1.1\r\nHost: localhost\r\nDepth: 0\r\n"
                                     f"Authorization: {auth}\r\nContent-Length: 0\r\n\r\n".encode("latin-1"))
    assert line.split(b" ")[1] in (b"400", b"403"), (path, line)


def test_traversal_refused_before_auth(files_server: FilesServer) -> None:
    """Even without credentials a traversal is refused outright (nothing resolves it)."""
    line = raw_request(files_server, b"GET /files/alice@school.example/%2e%2e/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert line.split(b" ")[1] == b"400"


def test_errors_leak_no_internals(alice: Dav) -> None:
    """Error bodies name no software, version, path on disk or traceback."""
    for r in (alice.get("no/such/file"), alice.request("MKCOL", "a/b/c/d"),
              alice.request("PROPFIND", "/files/", b"<not-xml", {"Depth": "0"})):
        text = r.body.decode("utf-8", "replace") + str(r.headers)
        for leak in ("WsgiDAV", "wsgidav", "Traceback", "Twisted", "/tmp", "site-packages"):
            assert leak not in text, (r.status, leak)


def test_access_log_names_no_file(files_server: FilesServer, alice: Dav) -> None:
    """The access log shows the mount, not the file, folder or user names below it."""
    import time

    alice.put("Zeugnis-Entwurf-Mueller.txt", b"grades")
    time.sleep(0.5)
    log = (files_server.dir.parent / "server.log").read_text()
    assert '"PUT /files/... HTTP/1.1" 201' in log
    assert "Zeugnis-Entwurf-Mueller" not in log and "alice@school.example/" not in log


def test_propfind_infinity_refused(alice: Dav) -> None:
    """RFC 4918 §9.1: Depth infinity (or no Depth) is refused with propfind-finite-depth, like Apache does."""
    for headers in ({"Depth": "infinity"}, {}):
        r = alice.request("PROPFIND", "", headers=headers)
        assert r.status == 403 and b"propfind-finite-depth" in r.body
    assert alice.propfind("", "1").status == 207
