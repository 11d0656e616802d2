"""End to end over real sockets and TLS: imaplib (stdlib) and imapclient against ``schoolsuite serve``."""

from __future__ import annotations

import imaplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest

from imap_server import PASSWORD, USER, ImapServer, start, tls_context

MESSAGE = (b"From: Carol <carol@example.org>\r\nTo: alice@school.example\r\nSubject: Ausflug\r\n"
           b"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <trip@example.org>\r\n\r\n"
           b"Wir fahren am Montag in den Zoo.\r\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImapServer]:
    s = start(tmp_path_factory.mktemp("imap-e2e"), users=(USER, "bob@school.example"))
    yield s
    s.stop()


def _imaps(server: ImapServer, user: str = USER) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=tls_context(), timeout=20)
    m.login(user, PASSWORD)
    return m


def test_starttls_required_before_login(server):
    """On the STARTTLS port LOGIN is refused before TLS, and works after it."""
    m = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=20)
    assert "LOGINDISABLED" in m.capabilities and "STARTTLS" in m.capabilities
    typ, data = m._simple_command("LOGIN", USER, '"x"')  # type: ignore[attr-defined]
    assert typ == "NO" and b"PRIVACYREQUIRED" in data[0]
    m.starttls(ssl_context=tls_context())
    assert "AUTH=PLAIN" in m.capabilities
    assert m.login(USER, PASSWORD)[0] == "OK"
    m.logout()


def test_starttls_injection_discarded(server):
    """Plaintext pipelined after STARTTLS in the same packet is never executed."""
    raw = socket.create_connection(("127.0.0.1", server.imap_port), 10)
    raw.recv(4096)
    raw.sendall(b"a STARTTLS\r\nb CREATE Injected\r\n")
    time.sleep(0.3)
    reply = raw.recv(4096)
    assert reply == b"a OK Begin TLS negotiation now\r\n"
    tls = tls_context().wrap_socket(raw)
    tls.sendall(f'c LOGIN {USER} "{PASSWORD}"\r\nd LIST "" Injected\r\ne LOGOUT\r\n'.encode())
    data = b""
    while b"e OK" not in data:
        chunk = tls.recv(4096)
        if not chunk:
            break
        data += chunk
    assert b"b " not in data and b"Injected" not in data.split(b"d OK")[0].split(b"c OK")[-1].replace(b"d LIST", b"")
    tls.close()


def test_imaplib_append_fetch_search_store_expunge(server):
    """The stdlib client: APPEND, SELECT, FETCH, SEARCH, STORE, COPY, EXPUNGE round trip."""
    m = _imaps(server)
    typ, data = m.append("INBOX", "(\\Flagged)", None, MESSAGE)
    assert typ == "OK" and b"APPENDUID" in data[0]
    typ, data = m.select("INBOX")
    count = int(data[0])
    typ, data = m.fetch(str(count), "(BODY.PEEK[])")
    assert data[0][1] == MESSAGE
    typ, data = m.search(None, "BODY", "Zoo")
    assert str(count).encode() in data[0].split()
    assert m.search(None, "SUBJECT", "nothing-like-this")[1] == [b""]
    m.store(str(count), "+FLAGS", "\\Deleted")
    assert m.copy(str(count), "Archive")[0] == "OK"
    typ, data = m.expunge()
    assert data == [str(count).encode()]
    m.logout()


def test_idle_sees_other_sessions_append(server):
    """An IDLE session hears EXISTS when another session appends to its mailbox."""
    watcher = _imaps(server, "bob@school.example")
    watcher.select("INBOX")
    sock = watcher.socket()
    watcher.send(b"i1 IDLE\r\n")
    assert watcher.readline().startswith(b"+")

    def append() -> None:
        other = _imaps(server, "bob@school.example")
        other.append("INBOX", None, None, MESSAGE)
        other.logout()

    t = threading.Thread(target=append)
    t.start()
    sock.settimeout(10)
    line = watcher.readline()
    t.join()
    assert line.endswith(b" EXISTS\r\n")
    watcher.send(b"DONE\r\n")
    while True:
        line = watcher.readline()
        if line.startswith(b"i1 "):
            break
    assert line.startswith(b"i1 OK")
    watcher.logout()


def test_imapclient_folders_flags_move(server):
    """imapclient: special-use folders, flags, MOVE with COPYUID, CONDSTORE modseqs."""
    imapclient = pytest.importorskip("imapclient")
    import imapclient.imapclient  # noqa: F401  (the flag and folder constants)
    c = imapclient.IMAPClient("127.0.0.1", port=server.imaps_port, ssl=True, ssl_context=tls_context(), timeout=20)
    c.login(USER, PASSWORD)
    assert c.find_special_folder(imapclient.imapclient.SENT) == "Sent"
    assert c.find_special_folder(imapclient.imapclient.TRASH) == "Trash"
    c.append("Drafts", MESSAGE, flags=[imapclient.imapclient.DRAFT])
    info = c.select_folder("Drafts")
    assert info[b"EXISTS"] >= 1 and b"HIGHESTMODSEQ" in info
    uids = c.search(["DRAFT"])
    c.add_flags(uids, ["$Important"])
    flags = c.get_flags(uids)
    assert all(b"$Important" in f for f in flags.values())
    modseqs = c.fetch(uids, ["MODSEQ"])
    assert all(v[b"MODSEQ"][0] > 0 for v in modseqs.values())
    c.move(uids, "Archive")
    assert c.search(["ALL"]) == []
    c.create_folder("Projekte/Klasse 5ä")
    assert "Projekte/Klasse 5ä" in [f[2] for f in c.list_folders()]
    c.logout()


def test_logout_over_tls_closes_even_if_client_waits(server):
    """After LOGOUT over TLS the server closes TCP even though the client never sends close_notify."""
    raw = socket.create_connection(("127.0.0.1", server.imaps_port), 10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tls_context().wrap_bio(incoming, outgoing)

    def pump() -> bytes:
        """Send what TLS wants sent; feed what arrives; b"" once TCP is closed."""
        if outgoing.pending:
            raw.sendall(outgoing.read())
        data = raw.recv(65536)
        if data:
            incoming.write(data)
        return data

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            assert pump(), "closed during the handshake"
    tls.write(b"a LOGOUT\r\n")
    raw.sendall(outgoing.read())
    raw.settimeout(8)
    plain = b""
    start = time.monotonic()
    while True:
        try:
            if not pump():
                break  # TCP FIN from the server
        except (ConnectionResetError, socket.timeout) as exc:
            assert not isinstance(exc, socket.timeout), "server kept the connection open"
            break
        try:
            while True:
                piece = tls.read(65536)
                if not piece:
                    break
                plain += piece
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
    assert b"a OK LOGOUT completed" in plain and time.monotonic() - start < 8
    raw.close()
