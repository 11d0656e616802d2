"""Real Debian clients against ``schoolsuite serve``: mbsync (isync) both ways, offlineimap."""

from __future__ import annotations

import imaplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imap_server import PASSWORD, USER, ImapServer, mbsync_config, offlineimap, start, tls_context
from support import require_program

pytestmark = pytest.mark.realclient


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImapServer]:
    s = start(tmp_path_factory.mktemp("imap-clients"), users=(USER, "sync@school.example", "oi@school.example"))
    yield s
    s.stop()


def _message(n: int) -> bytes:
    return (f"From: t{n}@example.org\r\nTo: {USER}\r\nSubject: message {n}\r\n"
            f"Message-ID: <m{n}@example.org>\r\nDate: Fri, 27 Nov 2026 10:00:{n:02d} +0000\r\n\r\nBody {n}\r\n").encode()


def _imap(server: ImapServer, user: str) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, ssl_context=tls_context(), timeout=20)
    m.login(user, PASSWORD)
    return m


def _maildir_files(root: Path, folder: str) -> list[Path]:
    base = root / folder
    return sorted([*(base / "cur").glob("*"), *(base / "new").glob("*")])


def test_mbsync_both_ways(server: ImapServer, tmp_path: Path) -> None:
    """mbsync pulls 5 messages into a Maildir, pushes a local one and a flag change back."""
    mbsync = require_program("mbsync")
    user = "sync@school.example"
    m = _imap(server, user)
    for n in range(5):
        m.append("INBOX", None, None, _message(n))
    m.logout()
    config, maildir = mbsync_config(server, user, PASSWORD, tmp_path, local="SubFolders Verbatim\n",
                                    channel="Patterns *\nCreate Both\nExpunge Both\n")
    run = subprocess.run([mbsync, "-c", str(config), "-a"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    files = _maildir_files(maildir, "INBOX")
    assert len(files) == 5
    assert (maildir / "Sent").is_dir() and (maildir / "Archive").is_dir()
    # local changes: a new message in Drafts and \Seen on one INBOX message
    new = maildir / "Drafts" / "new" / "1700000000.local.host"
    new.write_bytes(_message(99))
    first = files[0]
    first.rename(first.parent.parent / "cur" / (first.name.split(":2,")[0] + ":2,S"))
    run = subprocess.run([mbsync, "-c", str(config), "-a"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    m = _imap(server, user)
    m.select("Drafts", readonly=True)
    typ, data = m.search(None, "SUBJECT", '"message 99"')
    assert data[0] != b""
    m.select("INBOX", readonly=True)
    assert len(m.search(None, "SEEN")[1][0].split()) == 1
    m.logout()


def test_offlineimap_sync(server: ImapServer, tmp_path: Path) -> None:
    """offlineimap mirrors the account into a Maildir in one run."""
    user = "oi@school.example"
    m = _imap(server, user)
    for n in range(3):
        m.append("INBOX", None, None, _message(n))
    m.append("Sent", "(\\Seen)", None, _message(50))
    m.logout()
    maildir = offlineimap(server, user, PASSWORD, tmp_path)
    assert len(_maildir_files(maildir, "INBOX")) == 3
    assert len(_maildir_files(maildir, "Sent")) == 1
