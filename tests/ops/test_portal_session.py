"""A portal's SCIM session (500 accounts, renames, deactivations, deletions) seen through IMAP and CalDAV."""

from __future__ import annotations

import imaplib
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ops_helpers import new_instance, serve
from ops_helpers import BASE, Client, make_token
from support import Instance

PASSWORD = "correct horse battery"
COUNT = 500
WITH_PASSWORD = 12  # argon2 hashing only where the test logs in


def _imap_login(inst: Instance, address: str) -> bool:
    ctx = ssl.create_default_context(cafile=str(inst.cert))
    imap = imaplib.IMAP4_SSL("localhost", inst.ports["imaps"], ssl_context=ctx, timeout=30)
    try:
        imap.login(address, PASSWORD)
    except imaplib.IMAP4.error:
        return False
    imap.logout()
    return True


def _caldav_home(inst: Instance, address: str, login: str | None = None) -> int:
    body = ('<?xml version="1.0"?><propfind xmlns="DAV:"><prop><current-user-principal/></prop></propfind>')
    reply = Client(inst, basic=(login or address, PASSWORD)).request(
        "PROPFIND", f"/dav/{address}/", raw=body.encode(), headers={"Depth": "0", "Content-Type": "application/xml"})
    return reply.status


def test_portal_session(tmp_path: Path) -> None:
    """Create 500, rename 50, deactivate 50, delete 50 over SCIM; IMAP and CalDAV logins show each effect."""
    inst = new_instance(tmp_path)
    token = make_token(inst, "portal")
    run = serve(inst)
    try:
        def create(i: int) -> tuple[str, str]:
            extra = {"password": PASSWORD} if i % (COUNT // WITH_PASSWORD) == 0 else {}
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = Client(inst, token)
            reply = client.create_user(f"t{i:04d}@school.example", displayName=f"Teacher {i}",
                                       externalId=f"hr-{i}", **extra)
            assert reply.status == 201, reply.raw
            return reply.json["userName"], reply.json["id"]

        local = threading.local()
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            created = list(pool.map(create, range(COUNT)))
        elapsed = time.monotonic() - started
        portal = Client(inst, token)
        listed = portal.request("GET", f"{BASE}/Users?count=1").json
        assert listed["totalResults"] == COUNT
        ids = dict(created)
        with_pw = [f"t{i:04d}@school.example" for i in range(0, COUNT, COUNT // WITH_PASSWORD)]
        renamed, disabled, deleted = with_pw[0:3], with_pw[3:6], with_pw[6:9]
        untouched = with_pw[9:]

        # An IMAP session of an account about to be disabled is open during the change.
        ctx = ssl.create_default_context(cafile=str(inst.cert))
        open_imap = imaplib.IMAP4_SSL("localhost", inst.ports["imaps"], ssl_context=ctx, timeout=30)
        open_imap.login(disabled[0], PASSWORD)
        open_imap.select("INBOX")

        ops = [(a, {"op": "replace", "path": "userName", "value": a.replace("@", ".new@")}) for a in renamed]
        ops += [(a, {"op": "replace", "path": "active", "value": False}) for a in disabled]
        # the rest of the 50 of each kind, on accounts without passwords
        plain = [a for a, _ in created if a not in with_pw]
        ops += [(a, {"op": "replace", "path": "userName", "value": a.replace("@", ".new@")}) for a in plain[:47]]
        ops += [(a, {"op": "replace", "path": "active", "value": False}) for a in plain[47:94]]
        for address, op in ops:
            assert portal.patch("Users", ids[address], op).status == 200
        for address in deleted + plain[94:141]:
            assert portal.request("DELETE", f"{BASE}/Users/{ids[address]}").status == 204

        # The open session of the disabled account was closed by the server.
        with pytest.raises((imaplib.IMAP4.abort, OSError, EOFError, socket.timeout)):
            for _ in range(3):
                open_imap.noop()
                time.sleep(0.2)

        for address in renamed:
            new = address.replace("@", ".new@")
            assert _imap_login(inst, new) and _imap_login(inst, address)  # the old address is an alias
            assert _caldav_home(inst, new) == 207
        for address in disabled + deleted:
            assert not _imap_login(inst, address)
            assert _caldav_home(inst, address) == 401
        for address in untouched:
            assert _imap_login(inst, address) and _caldav_home(inst, address) == 207
        remaining = portal.request("GET", f"{BASE}/Users?count=0").json["totalResults"]
        assert remaining == COUNT - 50
        inactive = portal.request("GET", f"{BASE}/Users?filter=active%20eq%20false&count=0").json
        assert inactive["totalResults"] == 50
        print(f"SCIM: {COUNT} accounts created in {elapsed:.1f} s ({COUNT / elapsed:.0f}/s, "
              f"{WITH_PASSWORD} with argon2 passwords)")
    finally:
        run.stop()
