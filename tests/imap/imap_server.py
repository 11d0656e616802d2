"""A real ``schoolsuite serve`` with one user, shared by the end-to-end IMAP tests of a module."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from typing import Any
from pathlib import Path

from schoolsuite.instance import init_instance
from support import LISTENERS, Instance, free_port, require_program, schoolsuite_cmd, stop_process

PASSWORD = "correct horse battery"
USER = "alice@school.example"


@dataclass
class ImapServer:
    instance: Instance
    proc: subprocess.Popen[bytes]

    @property
    def imap_port(self) -> int:
        return self.instance.ports["imap"]

    @property
    def imaps_port(self) -> int:
        return self.instance.ports["imaps"]

    def add_user(self, address: str, password: str = PASSWORD, quota: str | None = None) -> None:
        args = ["user", "add", address, "--password-stdin", "-c", str(self.instance.config)]
        if quota:
            args += ["--quota", quota]
        subprocess.run(schoolsuite_cmd(*args), input=password.encode(), check=True, capture_output=True)

    def stop(self) -> None:
        stop_process(self.proc)


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def start(base: Path, users: tuple[str, ...] = (USER,)) -> ImapServer:
    inst = Instance(base / "inst", init_instance(base / "inst", "school.example", "localhost"))
    for name in LISTENERS:
        inst.ports[name] = free_port()
        inst.set_listener(name, endpoint=f"tcp:{inst.ports[name]}:interface=127.0.0.1")
    for name in ("submission", "submissions", "mx"):
        inst.set_listener(name, enabled=False)
    for user in users:
        subprocess.run(schoolsuite_cmd("user", "add", user, "--password-stdin", "-c", str(inst.config)),
                       input=PASSWORD.encode(), check=True, capture_output=True)
    log = open(base / "serve.log", "wb")
    proc = subprocess.Popen(schoolsuite_cmd("serve", "-c", str(inst.config)), stdout=log, stderr=subprocess.STDOUT)
    server = ImapServer(inst, proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {(base / 'serve.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", inst.ports["imaps"]), 0.5).close()
            return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError("server did not start")


def offlineimap(server: "ImapServer", user: str, password: str, home: Path, *, only_inbox: bool = False,
                timeout: float = 120) -> Path:
    """Run offlineimap once (IMAPS, the test CA) mirroring ``user``'s account into ``home``/Mail; returns that
    Maildir (the caller asserts on what it holds)."""
    program = require_program("offlineimap")
    maildir = home / "Mail"
    config = home / "offlineimaprc"
    folders = 'folderfilter = lambda name: name == "INBOX"\n' if only_inbox else ""
    config.write_text(f"""[general]
accounts = school
metadata = {home / 'meta'}

[Account school]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {maildir}

[Repository remote]
type = IMAP
remotehost = localhost
remoteport = {server.imaps_port}
remoteuser = {user}
remotepass = {password}
ssl = yes
sslcacertfile = {server.instance.cert}
tls_level = tls_compat
{folders}""")
    run = subprocess.run([program, "-c", str(config), "-o", "-u", "basic"], capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, run.stdout + run.stderr
    return maildir


def mbsync_config(server: "ImapServer", user: str, password: str, home: Path, *, local: str = "",
                  channel: str) -> tuple[Path, Path]:
    """An mbsyncrc (IMAPS, the test CA) for ``user`` with a Maildir store under ``home``/Mail: ``local`` adds
    lines to the Maildir store, ``channel`` the channel's own (Patterns, Create, ...). (config, Maildir)."""
    maildir = home / "Mail"
    maildir.mkdir()
    (home / "pass").write_text(password)
    config = home / "mbsyncrc"
    config.write_text(f"""IMAPAccount school
Host 127.0.0.1
Port {server.imaps_port}
User {user}
PassCmd "cat {home / 'pass'}"
SSLType IMAPS
CertificateFile {server.instance.cert}
SystemCertificates no

IMAPStore remote
Account school

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
{local}
Channel school
Far :remote:
Near :local:
{channel}SyncState *
""")
    return config, maildir


def tls_session(server: "ImapServer", user: str = USER, password: str = PASSWORD, then: bytes = b"", *,
                small_rcvbuf: bool = False, timeout: float = 30) -> tuple[socket.socket, Any]:
    """A raw IMAPS connection, logged in, after the tagged OK of its last command: ``then`` holds further
    command lines sent with the LOGIN (tagged; the last one is waited for). ``small_rcvbuf``: a 64 KiB
    receive buffer, so that the server cannot run far ahead of what the test reads. (socket, reading file)."""
    raw = socket.socket()
    if small_rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    raw.settimeout(timeout)
    raw.connect(("127.0.0.1", server.imaps_port))
    sock = tls_context().wrap_socket(raw, server_hostname="localhost")
    f = sock.makefile("rb")
    f.readline()
    lines = f'l LOGIN {user} "{password}"\r\n'.encode() + then
    last_tag = lines.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1].split(b" ", 1)[0]
    sock.sendall(lines)
    while not f.readline().startswith(last_tag + b" OK"):
        pass
    return sock, f
