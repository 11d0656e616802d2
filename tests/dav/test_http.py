"""CalDAV/CardDAV on the wire: discovery, limits, preconditions, isolation, Unicode (raw HTTPS requests)."""

from __future__ import annotations

import re
import urllib.request

from dav_helpers import event, todo, vcard
from dav_server import DavServer

A, B = "anna@school.example", "bert@school.example"
CAL = f"/dav/{A}/calendar"
PROPFIND_PRINCIPAL = ('<propfind xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" '
                      'xmlns:CR="urn:ietf:params:xml:ns:carddav"><prop><current-user-principal/>'
                      '<C:calendar-home-set/><CR:addressbook-home-set/></prop></propfind>')


def test_well_known_redirects_to_the_dav_root(dav: DavServer) -> None:
    """RFC 6764 §5: /.well-known/caldav and /carddav answer 301 to /dav/ for GET and PROPFIND."""
    for name in ("caldav", "carddav"):
        for method in ("GET", "PROPFIND"):
            answer = dav.request(method, f"/.well-known/{name}")
            assert answer.status == 301 and answer.headers["location"] == "/dav/"


def test_root_propfind_needs_credentials(dav: DavServer) -> None:
    """PROPFIND / without or with wrong credentials is 401 with a Basic challenge."""
    answer = dav.request("PROPFIND", "/", PROPFIND_PRINCIPAL, headers={"Depth": "0"})
    assert answer.status == 401 and answer.headers["www-authenticate"].startswith("Basic")
    answer = dav.request("PROPFIND", "/", PROPFIND_PRINCIPAL, user=A, password="wrong-password-1")
    assert answer.status == 401


def test_root_propfind_names_principal_and_homes(dav: DavServer) -> None:
    """PROPFIND / answers current-user-principal, calendar-home-set and addressbook-home-set under /dav/."""
    answer = dav.request("PROPFIND", "/", PROPFIND_PRINCIPAL, user=A, headers={"Depth": "0"})
    assert answer.status == 207
    assert answer.text.count(f"<href>/dav/{A}/</href>") == 3
    assert "<href>/</href>" in answer.text


def test_root_options_advertises_caldav_and_carddav(dav: DavServer) -> None:
    """OPTIONS / says DAV with calendar-access and addressbook, and allows PROPFIND."""
    answer = dav.request("OPTIONS", "/")
    assert answer.status == 200
    assert "calendar-access" in answer.headers["dav"] and "addressbook" in answer.headers["dav"]
    assert "PROPFIND" in answer.headers["allow"]


def test_root_get_still_serves_the_index(dav: DavServer) -> None:
    """GET / is the site's page, not DAV."""
    answer = dav.request("GET", "/")
    assert answer.status == 200 and b"schoolsuite" in answer.body


def test_dav_root_and_principal_discovery(dav: DavServer) -> None:
    """PROPFIND /dav/ names the principal; the principal names both homes (RFC 5397, 4791 §6.2.1, 6352 §7.1.1)."""
    answer = dav.request("PROPFIND", "/dav/", PROPFIND_PRINCIPAL, user=A, headers={"Depth": "0"})
    assert answer.status == 207 and "current-user-principal" in answer.text
    home = re.search(r"<current-user-principal><href>([^<]+)</href>", answer.text).group(1)
    answer = dav.request("PROPFIND", home, PROPFIND_PRINCIPAL, user=A, headers={"Depth": "0"})
    assert answer.status == 207
    assert re.search(r"calendar-home-set><href>/dav/anna(%40|@)school.example/</href>", answer.text)
    assert re.search(r"addressbook-home-set><href>/dav/anna(%40|@)school.example/</href>", answer.text)


def test_new_account_has_calendar_contacts_and_directory(dav: DavServer) -> None:
    """Depth-1 PROPFIND of a home lists the default calendar, address book and the school directory."""
    answer = dav.request("PROPFIND", f"/dav/{B}/", '<propfind xmlns="DAV:"><prop><resourcetype/></prop></propfind>',
                         user=B, headers={"Depth": "1"})
    assert answer.status == 207
    for name in ("calendar", "contacts", "school-directory"):
        assert re.search(rf"/dav/bert(%40|@)school.example/{name}/</href>", answer.text), name


def test_other_home_is_out_of_reach(dav: DavServer) -> None:
    """A user gets 403 (or 404) for another user's home, calendar and items, for reading and writing."""
    dav.request("PUT", f"{CAL}/private.ics", event("private-1"), user=A, headers={"Content-Type": "text/calendar"})
    for method, path, body in (("PROPFIND", f"/dav/{A}/", None), ("PROPFIND", f"{CAL}/", None),
                               ("GET", f"{CAL}/private.ics", None), ("DELETE", f"{CAL}/private.ics", None),
                               ("PUT", f"{CAL}/intruder.ics", event("intruder"))):
        answer = dav.request(method, path, body, user=B, headers={"Depth": "1", "Content-Type": "text/calendar"})
        assert answer.status in (403, 404), (method, path, answer.status)
    assert dav.request("GET", f"{CAL}/private.ics", user=A).status == 200


def test_unauthenticated_dav_request_is_challenged(dav: DavServer) -> None:
    """Any DAV request without credentials is 401 with WWW-Authenticate."""
    answer = dav.request("PROPFIND", f"{CAL}/", headers={"Depth": "0"})
    assert answer.status == 401 and "www-authenticate" in answer.headers


def test_unicode_href_and_uid_round_trip(dav: DavServer) -> None:
    """A percent-encoded UTF-8 href and a non-ASCII UID are stored and listed as sent."""
    path = f"{CAL}/%C3%9Cbung-%E6%97%A5%E6%9C%AC.ics"
    assert dav.request("PUT", path, event("ünï-😀@schule", summary="Prüfung"), user=A,
                       headers={"Content-Type": "text/calendar; charset=utf-8"}).status == 201
    answer = dav.request("GET", path, user=A)
    assert answer.status == 200 and "UID:ünï-😀@schule" in answer.text and "Prüfung" in answer.text
    listing = dav.request("PROPFIND", f"{CAL}/", '<propfind xmlns="DAV:"><prop><getetag/></prop></propfind>',
                          user=A, headers={"Depth": "1"})
    assert "%C3%9Cbung-%E6%97%A5%E6%9C%AC.ics" in listing.text


def test_path_that_is_not_utf8_is_400(dav: DavServer) -> None:
    """A path whose bytes are not UTF-8 is refused with 400, not 500."""
    assert dav.request("GET", f"{CAL}/%FF%FE.ics", user=A).status == 400


def test_chunked_put_is_accepted(dav: DavServer) -> None:
    """A PUT with Transfer-Encoding: chunked (no Content-Length) creates the item (Radicale alone says 400)."""
    answer = dav.request("PUT", f"{CAL}/chunked.ics", event("chunked-1"), user=A, chunked=True,
                         headers={"Content-Type": "text/calendar"})
    assert answer.status == 201
    assert "UID:chunked-1" in dav.request("GET", f"{CAL}/chunked.ics", user=A).text


def test_oversized_item_is_413_with_precondition(dav: DavServer) -> None:
    """A PUT above [dav] max_item_size is 413 with CALDAV:max-resource-size, declared or chunked."""
    big = event("big-1", summary="x" * (3 << 20))
    for chunked in (False, True):
        answer = dav.request("PUT", f"{CAL}/big.ics", big, user=A, chunked=chunked,
                             headers={"Content-Type": "text/calendar"})
        assert answer.status == 413, chunked
        if not chunked:
            assert "max-resource-size" in answer.text
    assert dav.request("GET", f"{CAL}/big.ics", user=A).status == 404


def test_invalid_icalendar_and_vcard_name_the_precondition(dav: DavServer) -> None:
    """Unparsable data is 400 with valid-calendar-data / valid-address-data, never 500."""
    answer = dav.request("PUT", f"{CAL}/bad.ics", "BEGIN:VCALENDAR\r\nnot ical", user=A,
                         headers={"Content-Type": "text/calendar"})
    assert answer.status == 400 and "valid-calendar-data" in answer.text
    answer = dav.request("PUT", f"/dav/{A}/contacts/bad.vcf", "BEGIN:VCARD\r\nbroken", user=A,
                         headers={"Content-Type": "text/vcard"})
    assert answer.status == 400 and "valid-address-data" in answer.text


def test_conditional_create_update_delete(dav: DavServer) -> None:
    """If-None-Match: * refuses overwriting, a stale If-Match refuses update and delete (412), a fresh one works."""
    path = f"{CAL}/cond.ics"
    created = dav.request("PUT", path, event("cond-1"), user=A,
                          headers={"Content-Type": "text/calendar", "If-None-Match": "*"})
    assert created.status == 201
    etag = created.headers["etag"]
    assert dav.request("PUT", path, event("cond-1"), user=A,
                       headers={"Content-Type": "text/calendar", "If-None-Match": "*"}).status == 412
    assert dav.request("PUT", path, event("cond-1", summary="v2"), user=A,
                       headers={"Content-Type": "text/calendar", "If-Match": '"stale"'}).status == 412
    updated = dav.request("PUT", path, event("cond-1", summary="v2"), user=A,
                          headers={"Content-Type": "text/calendar", "If-Match": etag})
    assert updated.status == 204 and updated.headers["etag"] != etag
    assert dav.request("DELETE", path, user=A, headers={"If-Match": etag}).status == 412
    assert dav.request("DELETE", path, user=A, headers={"If-Match": updated.headers["etag"]}).status in (200, 204)
    assert dav.request("GET", path, user=A).status == 404


def test_uid_conflict_is_409(dav: DavServer) -> None:
    """A second href with an existing UID is refused with CALDAV:no-uid-conflict (RFC 4791 §5.3.2.1)."""
    assert dav.request("PUT", f"{CAL}/u1.ics", event("same-uid"), user=A,
                       headers={"Content-Type": "text/calendar"}).status == 201
    answer = dav.request("PUT", f"{CAL}/u2.ics", event("same-uid"), user=A, headers={"Content-Type": "text/calendar"})
    assert answer.status == 409 and "no-uid-conflict" in answer.text


def test_home_cannot_be_deleted(dav: DavServer) -> None:
    """DELETE on one's own home is refused; the calendars stay."""
    assert dav.request("DELETE", f"/dav/{A}/", user=A).status in (401, 403)
    assert dav.request("PROPFIND", f"{CAL}/", user=A, headers={"Depth": "0"}).status == 207


def test_vcard_in_contacts_and_query(dav: DavServer) -> None:
    """A vCard PUT into the address book is found by addressbook-query on its name (RFC 6352 §8.6)."""
    assert dav.request("PUT", f"/dav/{A}/contacts/j.vcf", vcard("card-j", "Jörg Müller"), user=A,
                       headers={"Content-Type": "text/vcard"}).status == 201
    query = ('<CR:addressbook-query xmlns="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><prop><getetag/>'
             '<CR:address-data/></prop><CR:filter><CR:prop-filter name="FN"><CR:text-match collation="i;unicode-casemap"'
             ' match-type="contains">müller</CR:text-match></CR:prop-filter></CR:filter></CR:addressbook-query>')
    answer = dav.request("REPORT", f"/dav/{A}/contacts/", query, user=A, headers={"Depth": "1"})
    assert answer.status == 207 and "Jörg Müller" in answer.text


def test_school_directory_lists_every_account_read_only(dav: DavServer) -> None:
    """The school directory holds a card for each account and refuses writes."""
    query = ('<CR:addressbook-query xmlns="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><prop>'
             '<CR:address-data/></prop></CR:addressbook-query>')
    answer = dav.request("REPORT", f"/dav/{B}/school-directory/", query, user=B, headers={"Depth": "1"})
    assert answer.status == 207
    assert "FN:Anna Berg" in answer.text and "EMAIL;TYPE=INTERNET,WORK:anna@school.example" in answer.text
    assert "FN:Bert Chu" in answer.text
    answer = dav.request("PUT", f"/dav/{B}/school-directory/x.vcf", vcard("x"), user=B,
                         headers={"Content-Type": "text/vcard"})
    assert answer.status == 403


def test_free_busy_query(dav: DavServer) -> None:
    """free-busy-query over a week with an event in it returns a VFREEBUSY with a busy period (RFC 4791 §7.10)."""
    dav.request("PUT", f"{CAL}/fb.ics", event("fb-1", "20270301T090000Z", "20270301T100000Z"), user=A,
                headers={"Content-Type": "text/calendar"})
    query = ('<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">'
             '<C:time-range start="20270301T000000Z" end="20270308T000000Z"/></C:free-busy-query>')
    answer = dav.request("REPORT", f"{CAL}/", query, user=A, headers={"Depth": "1"})
    assert answer.status == 200 and "VFREEBUSY" in answer.text and "20270301T090000Z" in answer.text


def test_task_round_trip(dav: DavServer) -> None:
    """A VTODO is stored in the default calendar and found by a VTODO calendar-query."""
    assert dav.request("PUT", f"{CAL}/t.ics", todo("task-1"), user=A,
                       headers={"Content-Type": "text/calendar"}).status == 201
    query = ('<C:calendar-query xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><prop><C:calendar-data/>'
             '</prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VTODO"/></C:comp-filter>'
             '</C:filter></C:calendar-query>')
    answer = dav.request("REPORT", f"{CAL}/", query, user=A, headers={"Depth": "1"})
    assert answer.status == 207 and "UID:task-1" in answer.text and "VEVENT" not in answer.text


def test_proxy_headers_are_ignored(dav: DavServer) -> None:
    """X-Script-Name and X-Remote-User from a client change neither hrefs nor the user."""
    answer = dav.request("PROPFIND", "/dav/", PROPFIND_PRINCIPAL, headers={
        "Depth": "0", "X-Remote-User": A, "X-Script-Name": "/evil"})
    assert answer.status == 401
    answer = dav.request("PROPFIND", "/dav/", PROPFIND_PRINCIPAL, user=A, headers={
        "Depth": "0", "X-Script-Name": "/evil", "X-Forwarded-For": "1.2.3.4"})
    assert answer.status == 207 and "/evil" not in answer.text


def test_metrics_count_dav_requests(dav: DavServer) -> None:
    """/metrics has DAV request counts by method and status and the latency histogram."""
    dav.request("PROPFIND", f"{CAL}/", user=A, headers={"Depth": "0"})
    port = dav.instance.ports["metrics"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert re.search(r'schoolsuite_dav_requests_total\{method="PROPFIND",status="207"\} [1-9]', text)
    assert "schoolsuite_dav_request_seconds_bucket" in text
    assert "schoolsuite_dav_items_stored_total" in text
    assert "anna" not in text


def test_vcard4_is_stored_and_returned_unchanged(dav: DavServer) -> None:
    """A vCard 4.0 (RFC 6350) PUT into the address book comes back byte for byte on GET."""
    card = ("BEGIN:VCARD\r\nVERSION:4.0\r\nUID:urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1\r\n"
            "FN:Zoë Ñandú\r\nN:Ñandú;Zoë;;;\r\nEMAIL;TYPE=work:zoe@example.org\r\nKIND:individual\r\nEND:VCARD\r\n")
    path = f"/dav/{A}/contacts/zoe.vcf"
    assert dav.request("PUT", path, card, user=A, headers={"Content-Type": "text/vcard; version=4.0"}).status == 201
    answer = dav.request("GET", path, user=A)
    assert answer.status == 200 and "VERSION:4.0" in answer.text and "FN:Zoë Ñandú" in answer.text


def test_calendar_query_with_expand_returns_occurrences_in_range(dav: DavServer) -> None:
    """An expanded month query (calendar-data and getetag) returns the occurrences and in-range events only."""
    cal = f"/dav/{A}/expand-test/"
    assert dav.request("MKCALENDAR", cal, user=A).status == 201
    dav.request("PUT", cal + "weekly.ics", event("exp-weekly", "20260105T100000Z", "20260105T110000Z",
                                                 rrule="FREQ=WEEKLY;COUNT=52"), user=A,
                headers={"Content-Type": "text/calendar"})
    dav.request("PUT", cal + "march.ics", event("exp-march", "20260317T080000Z", "20260317T090000Z"), user=A,
                headers={"Content-Type": "text/calendar"})
    dav.request("PUT", cal + "june.ics", event("exp-june", "20260617T080000Z", "20260617T090000Z"), user=A,
                headers={"Content-Type": "text/calendar"})
    query = ('<C:calendar-query xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><prop><C:calendar-data>'
             '<C:expand start="20260301T000000Z" end="20260401T000000Z"/></C:calendar-data><getetag/></prop>'
             '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"><C:time-range start="20260301T000000Z"'
             ' end="20260401T000000Z"/></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>')
    answer = dav.request("REPORT", cal, query, user=A, headers={"Depth": "1"})
    assert answer.status == 207
    assert "exp-march" in answer.text and "exp-june" not in answer.text
    occurrences = re.findall(r"RECURRENCE-ID:(\d{8}T\d{6}Z)", answer.text)
    assert occurrences == ["20260302T100000Z", "20260309T100000Z", "20260316T100000Z", "20260323T100000Z",
                           "20260330T100000Z"]


def test_garbage_requests_never_get_a_server_error(dav: DavServer) -> None:
    """Malformed XML, binary bodies and odd methods get a 4xx (or a normal answer), never a 5xx."""
    import random

    rng = random.Random(5)
    bodies = [b"", b"<", b"<propfind xmlns='DAV:'><prop>", b"\x00\xff\xfe" * 50, bytes(rng.randrange(256) for _ in range(300)),
              b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><x>&a;</x>",
              b"<C:calendar-query xmlns:C='urn:ietf:params:xml:ns:caldav'><C:filter><C:comp-filter name='VCALENDAR'>"
              b"<C:comp-filter name='VEVENT'><C:time-range start='garbage' end='20270101T000000Z'/>"
              b"</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"]
    for method in ("PROPFIND", "REPORT", "PROPPATCH", "MKCALENDAR", "MKCOL", "PUT", "MOVE", "POST", "LOCK"):
        for body in bodies:
            for path in (f"{CAL}/", f"{CAL}/garbage.ics", f"/dav/{A}/newcoll-{method.lower()}/"):
                answer = dav.request(method, path, body, user=A, headers={"Depth": "1", "Content-Type": "text/xml"})
                assert answer.status < 500, (method, path, body[:40], answer.status, answer.text[:200])


def test_concurrent_writers_lose_nothing_and_if_match_races_have_one_winner(dav: DavServer) -> None:
    """4 parallel writers store every item; two updates racing on one ETag: exactly one wins, one gets 412."""
    from concurrent.futures import ThreadPoolExecutor

    cal = f"/dav/{A}/race/"
    assert dav.request("MKCALENDAR", cal, user=A).status == 201

    def put(n: int) -> int:
        return dav.request("PUT", f"{cal}{n}.ics", event(f"race-{n}"), user=A,
                           headers={"Content-Type": "text/calendar", "If-None-Match": "*"}).status

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(put, range(40))) == {201}
    listing = dav.request("PROPFIND", cal, '<propfind xmlns="DAV:"><prop><getetag/></prop></propfind>', user=A,
                          headers={"Depth": "1"})
    assert len(re.findall(r"/race/\d+\.ics</href>", listing.text)) == 40
    etag = dav.request("GET", f"{cal}0.ics", user=A).headers["etag"]

    def update(summary: str) -> int:
        return dav.request("PUT", f"{cal}0.ics", event("race-0", summary=summary), user=A,
                           headers={"Content-Type": "text/calendar", "If-Match": etag}).status

    with ThreadPoolExecutor(2) as pool:
        assert sorted(pool.map(update, ["eins", "zwei"])) == [204, 412]


def test_app_password_works_for_dav(dav: DavServer) -> None:
    """A per-device app password made with the CLI opens the user's home; it opens no other."""
    import subprocess

    from support import schoolsuite_cmd

    out = subprocess.run(schoolsuite_cmd("app-password", "add", A, "phone", "-c", str(dav.instance.config)),
                         capture_output=True, text=True, check=True)
    secret = out.stdout.strip().split()[-1]
    answer = dav.request("PROPFIND", f"{CAL}/", user=A, password=secret, headers={"Depth": "0"})
    assert answer.status == 207
    assert dav.request("PROPFIND", f"/dav/{B}/", user=B, password=secret, headers={"Depth": "0"}).status == 401


def test_options_on_dav_paths_without_credentials(dav: DavServer) -> None:
    """OPTIONS on /dav/ paths answers without credentials and names calendar-access and addressbook."""
    for path in ("/dav/", f"{CAL}/"):
        answer = dav.request("OPTIONS", path)
        assert answer.status == 200 and "calendar-access" in answer.headers["dav"], path
        assert "REPORT" in answer.headers["allow"]


def test_refused_content_is_not_logged(dav: DavServer) -> None:
    """A refused calendar body's text never appears in the server's output."""
    marker = "Geheimnis-im-Log-4711"
    dav.request("PUT", f"{CAL}/leak.ics", f"BEGIN:VCALENDAR\r\n{marker}\r\nEND:VCALENDAR\r\n", user=A,
                headers={"Content-Type": "text/calendar"})
    dav.request("PROPFIND", f"{CAL}/", user=A, headers={"Depth": "0"})
    assert not any(marker in line for line in dav.log)


def test_large_item_round_trip(dav: DavServer) -> None:
    """An event of about 1.5 MB (spilled into sealed chunks, body spooled sealed) comes back intact."""
    text = event("large-1", summary="Gro" + "ß" * (750 * 1024))
    assert dav.request("PUT", f"{CAL}/large.ics", text, user=A, headers={"Content-Type": "text/calendar"}).status == 201
    answer = dav.request("GET", f"{CAL}/large.ics", user=A)
    assert answer.status == 200 and answer.text.count("ß") == 750 * 1024
