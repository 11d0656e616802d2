"""A running schoolsuite with DAV users for end-to-end tests, and a small HTTPS client."""

from __future__ import annotations

import base64
import http.client
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

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

    def start(self) -> None:
        self.run = start_server(schoolsuite_cmd("serve", "-c", str(self.instance.config)), expect=2)

    def stop(self) -> None:
        if self.run is not None:
            self.run.stop()
            self.run = None

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
