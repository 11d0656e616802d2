"""A running schoolsuite with DAV users for end-to-end tests, and a small HTTPS client."""

from __future__ import annotations

import base64
import http.client
import signal
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schoolsuite.instance import init_instance
from support import LISTENERS, Instance, Running, free_port, schoolsuite_cmd, start_server

from dav_helpers import PASSWORD

USERS = {"anna@school.example": "Anna Berg", "bert@school.example": "Bert Chu"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class DavServer:
    instance: Instance
    run: Running | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.instance.ports["https"]

    @property
    def base(self) -> str:
        return f"https://localhost:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    log: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.run = start_server(schoolsuite_cmd("serve", "-c", str(self.instance.config)), expect=2)
        # Keep reading the server's output: a full pipe would block the server.
        for stream in (self.run.proc.stdout, self.run.proc.stderr):
            threading.Thread(target=self._drain, args=(stream,), daemon=True).start()

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self.log.append(line)
            del self.log[:-2000]

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit; returns the exit status."""
        if self.run is None:
            return 0
        proc, self.run = self.run.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.instance.cert))

    def request(self, method: str, path: str, body: bytes | str | None = None, *, user: str | None = None,
                password: str = PASSWORD, headers: dict[str, str] | None = None,
                chunked: bool = False) -> Answer:
        """One request over TLS; ``user`` adds Basic credentials."""
        conn = http.client.HTTPSConnection("localhost", self.port, context=self.tls(), timeout=30)
        hdrs = dict(headers or {})
        if user:
            hdrs["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        data = body.encode() if isinstance(body, str) else body
        try:
            if chunked:
                conn.request(method, path, body=iter([data or b""]), headers=hdrs, encode_chunked=True)
            else:
                conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()


def make_dav_server(directory: Path, users: dict[str, str] = USERS) -> DavServer:
    """An instance with only https and metrics listening, and ``users`` made by the CLI."""
    inst = Instance(directory, init_instance(directory, "school.example", "localhost"))
    for name in LISTENERS:
        if name in ("https", "metrics"):
            inst.ports[name] = free_port()
            inst.set_listener(name, endpoint=f"tcp:{inst.ports[name]}:interface=127.0.0.1")
        else:
            inst.set_listener(name, enabled=False)
    for address, name in users.items():
        subprocess.run(schoolsuite_cmd("user", "add", address, "--name", name, "--password-stdin",
                                       "-c", str(inst.config)), input=PASSWORD + "\n", text=True,
                       check=True, capture_output=True)
    return DavServer(inst)
