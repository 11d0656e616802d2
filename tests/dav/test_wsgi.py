"""The WSGI middleware between Twisted and Radicale, called directly (no server)."""

from __future__ import annotations

import io

from schoolsuite.protocols.dav.wsgi import Limits, Middleware, expand_window

Q = ('<C:calendar-query xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><prop><C:calendar-data>'
     '<C:expand start="20260301T000000Z" end="20260401T000000Z"/></C:calendar-data></prop><C:filter>'
     '<C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">{inner}</C:comp-filter></C:comp-filter>'
     '</C:filter></C:calendar-query>')
RANGE = '<C:time-range start="20260301T000000Z" end="20260401T000000Z"/>'


def call(environ: dict, status: str = "200 OK", body: bytes = b"ok") -> tuple[str, dict, bytes]:
    seen: dict = {}

    def app(env, start_response):  # type: ignore[no-untyped-def]
        seen.update(env)
        seen["body"] = env["wsgi.input"].read(int(env.get("CONTENT_LENGTH") or 0))
        start_response(status, [("Content-Type", "text/plain")])
        return [body]

    result: dict = {}
    out = Middleware(app, Limits(1000, 5000))(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SCRIPT_NAME": "/dav", "wsgi.input": io.BytesIO(), **environ},
        lambda s, h, exc=None: result.update(status=s, headers=dict(h)))
    return result["status"], seen, b"".join(out)


def test_expand_window_only_for_the_plain_shape() -> None:
    """The expand hint is the query's range for one comp-filter with one time-range, else None."""
    assert expand_window(Q.format(inner=RANGE).encode()) == (1772323200, 1775001600)
    assert expand_window(Q.format(inner=RANGE + '<C:prop-filter name="SUMMARY"/>').encode()) is None
    assert expand_window(Q.format(inner=RANGE).replace("C:expand", "C:limit-recurrence-set").encode()) is None
    assert expand_window(b"<not xml") is None


def test_path_is_redecoded_as_utf8() -> None:
    """Twisted's latin-1 PATH_INFO reaches Radicale as the UTF-8 text the client sent."""
    raw = "/anna@school.example/cal/Übung.ics".encode("utf-8").decode("latin-1")
    status, env, _ = call({"PATH_INFO": raw})
    assert status.startswith("200") and env["PATH_INFO"] == "/anna@school.example/cal/Übung.ics"


def test_chunked_body_gets_a_content_length() -> None:
    """A chunked body (no Content-Length) is measured and handed on with one."""
    status, env, _ = call({"REQUEST_METHOD": "PUT", "PATH_INFO": "/a/b/c.ics", "HTTP_TRANSFER_ENCODING": "chunked",
                           "wsgi.input": io.BytesIO(b"BEGIN:VCALENDAR")})
    assert env["CONTENT_LENGTH"] == "15" and env["body"] == b"BEGIN:VCALENDAR"


def test_oversized_put_is_413_before_the_app() -> None:
    """A PUT above the item limit never reaches Radicale and names max-resource-size."""
    status, env, body = call({"REQUEST_METHOD": "PUT", "PATH_INFO": "/a/b/c.ics", "CONTENT_LENGTH": "1001",
                              "wsgi.input": io.BytesIO(b"x" * 1001)})
    assert status.startswith("413") and env == {} and b"max-resource-size" in body


def test_radicale_500_becomes_an_incident_without_details() -> None:
    """A 500 from Radicale is answered with an incident id only."""
    status, _, body = call({}, status="500 Internal Server Error", body=b"Traceback: /secret/path")
    assert status.startswith("500") and b"incident" in body and b"secret" not in body


def test_empty_put_on_a_collection_is_refused() -> None:
    """A PUT with no body on a collection URL (which would erase the collection) is 400."""
    status, env, body = call({"REQUEST_METHOD": "PUT", "PATH_INFO": "/a@school.example/calendar/",
                              "CONTENT_LENGTH": "0"})
    assert status.startswith("400") and env == {} and b"erase" in body
