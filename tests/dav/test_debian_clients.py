"""Real Debian clients: vdirsyncer syncs a calendar and an address book both ways; khal lists an event."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from support import require_program

from dav_helpers import PASSWORD, event, vcard
from dav_server import DavServer

pytestmark = pytest.mark.realclient
A = "anna@school.example"


def vdirsyncer_config(dav: DavServer, tmp: Path) -> Path:
    """A pair for the default calendar and one for the address book, each with a local folder."""
    conf = tmp / "vdirsyncer.conf"
    parts = [f'[general]\nstatus_path = "{tmp}/status/"\n']
    for name, coll, ext, kind in (("cal", "calendar", ".ics", "caldav"), ("book", "contacts", ".vcf", "carddav")):
        parts.append(f"""
[pair {name}]
a = "{name}_local"
b = "{name}_remote"
collections = null
conflict_resolution = "b wins"

[storage {name}_local]
type = "filesystem"
path = "{tmp}/{name}/"
fileext = "{ext}"

[storage {name}_remote]
type = "{kind}"
url = "{dav.base}/dav/{A}/{coll}/"
username = "{A}"
password = "{PASSWORD}"
verify = "{dav.instance.cert}"
""")
    conf.write_text("".join(parts))
    (tmp / "cal").mkdir()
    (tmp / "book").mkdir()
    return conf


def vdirsyncer(conf: Path, *args: str) -> str:
    out = subprocess.run([require_program("vdirsyncer"), "-c", str(conf), *args], input="y\ny\ny\ny\n",
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def server_uids(dav: DavServer, coll: str) -> set[str]:
    report = ('<C:calendar-query xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><prop><C:calendar-data/>'
              '</prop><C:filter><C:comp-filter name="VCALENDAR"/></C:filter></C:calendar-query>'
              if coll == "calendar" else
              '<CR:addressbook-query xmlns="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><prop>'
              '<CR:address-data/></prop></CR:addressbook-query>')
    answer = dav.request("REPORT", f"/dav/{A}/{coll}/", report, user=A, headers={"Depth": "1"})
    assert answer.status == 207
    return set(re.findall(r"^UID:(.+?)\r?$", answer.text, re.M))


def test_vdirsyncer_syncs_calendar_and_contacts_both_ways(dav: DavServer, tmp_path: Path) -> None:
    """Server items arrive in the local folders; local new and edited items arrive on the server."""
    require_program("vdirsyncer")
    dav.request("PUT", f"/dav/{A}/calendar/srv-ev.ics", event("srv-ev-1", summary="Vom Server"), user=A,
                headers={"Content-Type": "text/calendar"})
    dav.request("PUT", f"/dav/{A}/contacts/srv-card.vcf", vcard("srv-card-1", "Server Karte"), user=A,
                headers={"Content-Type": "text/vcard"})
    conf = vdirsyncer_config(dav, tmp_path)
    vdirsyncer(conf, "discover")
    vdirsyncer(conf, "sync")
    local_events = "".join(p.read_text() for p in (tmp_path / "cal").glob("*.ics"))
    local_cards = "".join(p.read_text() for p in (tmp_path / "book").glob("*.vcf"))
    assert "UID:srv-ev-1" in local_events and "Vom Server" in local_events
    assert "UID:srv-card-1" in local_cards

    (tmp_path / "cal" / "local-ev-1.ics").write_text(event("local-ev-1", summary="Vom Laptop"))
    (tmp_path / "book" / "local-card-1.vcf").write_text(vcard("local-card-1", "Lokale Karte"))
    edited = next(p for p in (tmp_path / "cal").glob("*.ics") if "srv-ev-1" in p.read_text())
    edited.write_text(event("srv-ev-1", summary="Lokal geändert"))
    vdirsyncer(conf, "sync")
    assert {"srv-ev-1", "local-ev-1"} <= server_uids(dav, "calendar")
    assert {"srv-card-1", "local-card-1"} <= server_uids(dav, "contacts")
    got = dav.request("GET", f"/dav/{A}/calendar/srv-ev.ics", user=A).text
    assert "Lokal geändert" in got

    dav.request("DELETE", f"/dav/{A}/calendar/srv-ev.ics", user=A)
    vdirsyncer(conf, "sync")
    assert not any("srv-ev-1" in p.read_text() for p in (tmp_path / "cal").glob("*.ics"))


def test_khal_lists_an_event_created_over_caldav(dav: DavServer, tmp_path: Path) -> None:
    """An event PUT over CalDAV, synced by vdirsyncer, is listed by khal on its day."""
    require_program("khal")
    dav.request("PUT", f"/dav/{A}/calendar/khal.ics",
                event("khal-ev-1", "20260615T090000Z", "20260615T100000Z", "Sportfest"), user=A,
                headers={"Content-Type": "text/calendar"})
    conf = vdirsyncer_config(dav, tmp_path)
    vdirsyncer(conf, "discover")
    vdirsyncer(conf, "sync")
    khal_conf = tmp_path / "khal.conf"
    khal_conf.write_text(f"""[calendars]
[[school]]
path = {tmp_path}/cal/
type = calendar

[locale]
timeformat = %H:%M
dateformat = %Y-%m-%d
longdateformat = %Y-%m-%d
datetimeformat = %Y-%m-%d %H:%M
longdatetimeformat = %Y-%m-%d %H:%M
default_timezone = UTC
local_timezone = UTC

[sqlite]
path = {tmp_path}/khal.db
""")
    out = subprocess.run([require_program("khal"), "-c", str(khal_conf), "list", "2026-06-15", "2026-06-16"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Sportfest" in out.stdout
    out = subprocess.run([require_program("khal"), "-c", str(khal_conf), "list", "2026-06-17", "2026-06-18"],
                         capture_output=True, text=True, timeout=60)
    assert "Sportfest" not in out.stdout
