"""Helpers of the operations tests: an HTTPS client for SCIM and autoconfig, CLI runs."""

from __future__ import annotations

import base64
import http.client
import json
import signal
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schoolsuite.instance import init_instance
from support import LISTENERS, Instance, Running, free_port, schoolsuite_cmd, start_server

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
USER_EXT = "urn:schoolsuite:params:scim:schemas:extension:2.0:User"
GROUP_EXT = "urn:schoolsuite:params:scim:schemas:extension:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
BASE = "/admin/scim/v2"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


def cli(instance: Instance, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``schoolsuite -c CONFIG ARGS`` and return the finished process."""
    return subprocess.run(schoolsuite_cmd("-c", str(instance.config), *args), input=stdin, capture_output=True,
                          text=True, timeout=120)


def make_token(instance: Instance, label: str) -> str:
    proc = cli(instance, "admin-token", "add", label)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


class Client:
    """One keep-alive HTTPS connection to the instance (as a portal or a phone would hold)."""

    def __init__(self, instance: Instance, token: str | None = None, basic: tuple[str, str] | None = None) -> None:
        ctx = ssl.create_default_context(cafile=str(instance.cert))
        self._conn = http.client.HTTPSConnection("localhost", instance.ports["https"], context=ctx, timeout=60)
        self.headers: dict[str, str] = {}
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"
        if basic is not None:
            self.headers["Authorization"] = "Basic " + base64.b64encode(":".join(basic).encode()).decode()

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> Reply:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        all_headers = {**self.headers, **(headers or {})}
        if data is not None:
            all_headers.setdefault("Content-Type", "application/scim+json")
        try:
            self._conn.request(method, path, body=data, headers=all_headers)
            resp = self._conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self._conn.close()
            self._conn.request(method, path, body=data, headers=all_headers)
            resp = self._conn.getresponse()
        out = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        if out.headers.get("connection", "").lower() == "close":
            self._conn.close()
        return out

    def close(self) -> None:
        self._conn.close()

    # SCIM conveniences

    def create_user(self, address: str, **attrs: Any) -> Reply:
        return self.request("POST", f"{BASE}/Users", {"schemas": [USER], "userName": address, **attrs})

    def find_user(self, address: str) -> dict[str, Any] | None:
        reply = self.request("GET", f'{BASE}/Users?filter=userName%20eq%20%22{address}%22')
        assert reply.status == 200, reply.raw
        found = reply.json["Resources"]
        return found[0] if found else None

    def patch(self, kind: str, resource_id: str, *ops: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
        return self.request("PATCH", f"{BASE}/{kind}/{resource_id}", {"schemas": [PATCH], "Operations": list(ops)},
                            headers=headers)


def scim_error(reply: Reply, status: int, scim_type: str | None = None) -> None:
    """Assert ``reply`` is a SCIM error body (RFC 7644 §3.12) with this status and scimType."""
    assert reply.status == status, (reply.status, reply.raw)
    assert reply.headers["content-type"].startswith("application/scim+json")
    body = reply.json
    assert body["schemas"] == [ERROR] and body["status"] == str(status)
    if scim_type is not None:
        assert body.get("scimType") == scim_type, body


@dataclass
class Served:
    instance: Instance
    run: Running
    token: str

    def client(self, token: str | None = "default") -> Client:
        return Client(self.instance, self.token if token == "default" else token)


def listening_count() -> int:
    """How many "listening:" lines a server with every listener enabled prints (protocols land over time)."""
    from schoolsuite import server

    server.load_protocols()
    return sum(1 for name in LISTENERS if name in server.PROTOCOL_FACTORIES)


def serve(inst: Instance) -> Running:
    """``schoolsuite serve`` with its log drained in the background (a full pipe would block the reactor)."""
    run = start_server(schoolsuite_cmd("serve", "-c", str(inst.config)), expect=listening_count())
    stdout = run.proc.stdout
    assert stdout is not None
    drain = threading.Thread(target=lambda: run.head.extend(iter(stdout.readline, "")), daemon=True)
    drain.start()

    def stop(timeout: float = 20) -> int:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
        try:
            run.proc.wait(timeout)
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
        drain.join(5)
        run.out = "".join(run.head)
        run.err = run.proc.stderr.read() if run.proc.stderr is not None else ""
        return run.proc.returncode

    run.stop = stop  # type: ignore[method-assign]
    return run


def new_instance(root: Path) -> Instance:
    inst = Instance(root / "inst", init_instance(root / "inst", "school.example", "localhost"))
    for name in LISTENERS:
        inst.ports[name] = free_port()
        inst.set_listener(name, endpoint=f"tcp:{inst.ports[name]}:interface=127.0.0.1")
    return inst
