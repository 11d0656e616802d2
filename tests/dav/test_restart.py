"""A restart of the server keeps sync tokens valid and data in place."""

from __future__ import annotations

import re

from dav_helpers import event
from dav_server import DavServer

A = "anna@school.example"
CAL = f"/dav/{A}/calendar/"


def sync(dav: DavServer, token: str = "") -> tuple[int, str]:
    body = (f'<sync-collection xmlns="DAV:"><sync-token>{token}</sync-token><sync-level>1</sync-level>'
            '<prop><getetag/></prop></sync-collection>')
    answer = dav.request("REPORT", CAL, body, user=A, headers={"Depth": "1"})
    return answer.status, answer.text


def test_restart_keeps_sync_tokens(dav: DavServer) -> None:
    """A token from before a clean restart yields exactly the changes made after it."""
    dav.request("PUT", f"{CAL}before.ics", event("before-1"), user=A, headers={"Content-Type": "text/calendar"})
    status, text = sync(dav)
    assert status == 207
    token = re.search(r"<sync-token>([^<]+)</sync-token>", text).group(1)
    assert dav.stop() == 0
    dav.start()
    dav.request("PUT", f"{CAL}after.ics", event("after-1"), user=A, headers={"Content-Type": "text/calendar"})
    status, text = sync(dav, token)
    assert status == 207
    hrefs = re.findall(r"<href>([^<]+)</href>", text)
    assert [h.rsplit("/", 1)[1] for h in hrefs] == ["after.ics"]
    assert dav.request("GET", f"{CAL}before.ics", user=A).status == 200


def test_unknown_token_is_valid_sync_token_error(dav: DavServer) -> None:
    """An unknown token is refused with the DAV:valid-sync-token precondition (RFC 6578 §3.2)."""
    status, text = sync(dav, "https://schoolsuite.invalid/ns/sync/feedface-1")
    assert status in (403, 409) and "valid-sync-token" in text
