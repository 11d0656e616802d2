"""Helpers of the WebDAV tests: a small HTTPS DAV client and the running server's facts."""

from __future__ import annotations

import base64
import http.client
import ssl
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

PASSWORD = "correct-horse-battery-staple"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def xml(self) -> ET.Element:
        return ET.fromstring(self.body)

    def hrefs(self) -> list[str]:
        return [e.text or "" for e in self.xml().iter("{DAV:}href")]


@dataclass
class FilesServer:
    """A running ``schoolsuite serve`` with accounts for the WebDAV tests."""

    dir: Path
    port: int
    cert: Path
    pid: int
    temp_dir: Path
    data_dir: Path
    app_password: str = ""
    metrics_port: int = 0
    users: dict[str, str] = field(default_factory=dict)

    def client(self, user: str = "alice@school.example", password: str | None = None, *,
               anonymous: bool = False) -> "Dav":
        if anonymous:
            return Dav(self, user, None)
        return Dav(self, user, self.users.get(user, PASSWORD) if password is None else password)

    def url(self, user: str = "alice@school.example", path: str = "") -> str:
        return f"https://localhost:{self.port}/files/{user}/{path}"


class Dav:
    """One user's connection-per-request DAV client over TLS."""

    def __init__(self, server: FilesServer, user: str, password: str | None) -> None:
        self.server = server
        self.user = user
        self.password = password
        self.ctx = ssl.create_default_context(cafile=str(server.cert))

    def home(self, path: str = "") -> str:
        return f"/files/{quote(self.user, safe='@')}/{path}"

    def connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("localhost", self.server.port, context=self.ctx, timeout=30)

    def auth_headers(self) -> dict[str, str]:
        if self.password is None:
            return {}
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                *, raw_path: bool = False) -> Response:
        conn = self.connection()
        try:
            hdrs = {**self.auth_headers(), **(headers or {})}
            target = path if raw_path or path.startswith("/") else self.home(path)
            conn.putrequest(method, target, skip_accept_encoding=True)
            if isinstance(body, (bytes, bytearray)):
                hdrs.setdefault("Content-Length", str(len(body)))
            elif body is None and method in ("PUT", "POST"):
                hdrs.setdefault("Content-Length", "0")
            for k, v in hdrs.items():
                conn.putheader(k, v)
            conn.endheaders()
            if isinstance(body, (bytes, bytearray)):
                conn.send(body)
            elif body is not None:
                for piece in body:
                    conn.send(piece)
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()

    def put(self, path: str, data: bytes, **headers: str) -> Response:
        return self.request("PUT", path, data, headers)

    def get(self, path: str, **headers: str) -> Response:
        return self.request("GET", path, None, headers)

    def mkcol(self, path: str) -> Response:
        return self.request("MKCOL", path)

    def propfind(self, path: str, depth: str = "1", body: bytes | None = None) -> Response:
        headers = {"Depth": depth}
        if body is not None:
            headers["Content-Type"] = "application/xml; charset=utf-8"
        return self.request("PROPFIND", path, body, headers)

    def delete(self, path: str) -> Response:
        return self.request("DELETE", path)


def prop_values(resp: Response, name: str) -> dict[str, str]:
    """href → text of the property ``name`` (Clark notation) in a multistatus."""
    out = {}
    for r in resp.xml().iter("{DAV:}response"):
        href = r.findtext("{DAV:}href") or ""
        for propstat in r.iter("{DAV:}propstat"):
            if "200" not in (propstat.findtext("{DAV:}status") or ""):
                continue
            el = propstat.find(f"{{DAV:}}prop/{name}")
            if el is not None:
                out[href] = el.text or ""
    return out


LOCK_BODY = (b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
             b'</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>tests</D:owner></D:lockinfo>')
