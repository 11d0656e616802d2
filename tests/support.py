"""Helpers for tests that run instances and servers (imported as ``support``; fixtures live in conftest)."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest


LISTENERS = ("imap", "imaps", "submission", "submissions", "mx", "https", "metrics")

# Debian package that ships each client program the tests may use.
DEBIAN_PACKAGES = {"promtool": "prometheus", "curl": "curl", "openssl": "openssl"}
DEBIAN_PACKAGES.update({"mbsync": "isync", "offlineimap": "offlineimap"})  # IMAP issue
DEBIAN_PACKAGES.update({"swaks": "swaks", "msmtp": "msmtp"})  # SMTP clients (issue 4)
DEBIAN_PACKAGES.update({"litmus": "litmus", "rclone": "rclone", "cadaver": "cadaver", "mount.davfs": "davfs2",
                        "script": "bsdutils"})  # WebDAV clients (issue 6)
DEBIAN_PACKAGES.update({"vdirsyncer": "vdirsyncer", "khal": "khal"})  # CalDAV/CardDAV clients (issue 5)
DEBIAN_PACKAGES.update({"systemd-analyze": "systemd", "named-checkzone": "bind9-utils"})  # operations (issue 7)


def active_listeners() -> int:
    """How many "listening:" lines a fresh instance prints: listeners whose protocol module is registered."""
    from schoolsuite import server

    server.load_protocols()
    return sum(1 for name in LISTENERS if name in server.PROTOCOL_FACTORIES)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, never handed out before in this run.

    Taken below the kernel's ephemeral range: a port from ``bind(0)`` can be
    taken by some test's outgoing connection before the server binds it
    ("Address already in use"); ports outside that range never are.
    """
    high = _ephemeral_low() - 1
    for _ in range(1000):
        port = random.randint(max(1024, high - 20000), high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def require_program(name: str) -> str:
    """Path of a real client program; skip without it, or fail under SCHOOLSUITE_REQUIRE_CLIENTS=1."""
    path = shutil.which(name)
    if path:
        return path
    pkg = DEBIAN_PACKAGES.get(name, name)
    message = f"needs {name} from Debian (apt-get install {pkg})"
    if os.environ.get("SCHOOLSUITE_REQUIRE_CLIENTS") == "1":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Instance:
    """An initialised instance directory with its listener ports."""

    dir: Path
    config: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def cert(self) -> Path:
        return self.dir / "tls" / "cert.pem"

    def set_listener(self, name: str, **values: str | bool) -> None:
        """Rewrite keys of ``[listeners.NAME]`` in the config file."""
        text = self.config.read_text()
        head = f"[listeners.{name}]\n"
        start = text.index(head) + len(head)
        end = text.find("\n[", start)
        end = len(text) if end < 0 else end
        section = text[start:end]
        for key, value in values.items():
            rendered = ("true" if value else "false") if isinstance(value, bool) else f'"{value}"'
            section = re.sub(rf"^{key} = .*$", f"{key} = {rendered}", section, flags=re.M)
        self.config.write_text(text[:start] + section + text[end:])


def schoolsuite_cmd(*args: str) -> list[str]:
    """Command line running the CLI with this interpreter."""
    return [sys.executable, "-m", "schoolsuite", *args]


@dataclass
class Running:
    """A ``schoolsuite serve`` subprocess and the listener lines it printed."""

    proc: subprocess.Popen[str]
    lines: list[str]
    head: list[str] = field(default_factory=list)
    out: str = ""
    err: str = ""

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM and wait; return the exit status (rest of the output in ``out``/``err``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rest, self.err = self.proc.communicate(timeout=timeout)
        self.out = "".join(self.head) + rest
        return self.proc.returncode


def start_server(cmd: list[str], expect: int, env: dict[str, str] | None = None,
                 timeout: float = 20, **popen: object) -> Running:
    """Start ``cmd``; wait for ``expect`` "listening:" lines (fail with its output if it dies)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, **popen)  # type: ignore[call-overload]
    lines: list[str] = []
    head: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while len(lines) < expect:
        line = proc.stdout.readline()
        if not line:
            proc.wait(5)
            pytest.fail(f"server exited {proc.returncode}: {''.join(head)} {proc.stderr.read() if proc.stderr else ''}")
        head.append(line)
        if line.startswith("listening: "):
            lines.append(line.strip())
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("server did not start in time")
    return Running(proc, lines, head)


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> int:  # type: ignore[type-arg]
    """SIGTERM a test's server and wait for it; SIGKILL if it has not gone within ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
