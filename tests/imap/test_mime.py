"""MIME structure computed at delivery: offsets, types, RFC 2231 parameters, envelopes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schoolsuite.storage import mime

MULTI = (
    b"From: =?utf-8?q?J=C3=B6rg?= <joerg@example.org>, Group: a@b.c, \"Q, R\" <q@r.s>;\r\n"
    b"To: undisclosed-recipients:;\r\n"
    b"Subject: Mixed\r\n"
    b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"hello\r\nworld\r\n"
    b"--XX\r\n"
    b"Content-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename*0*=utf-8''Zeugnis%20;\r\n filename*1=\"2026.pdf\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAAA\r\n"
    b"--XX\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--XX--\r\n"
    b"epilogue\r\n"
)


def test_multipart_offsets_are_byte_exact():
    """Part body offsets slice exactly the bytes between delimiters."""
    e = mime.parse(MULTI)
    assert e.multipart and len(e.parts) == 3
    text, pdf, msg = e.parts
    assert MULTI[text.bstart:text.end] == b"hello\r\nworld"
    assert text.lines == 2 and text.params == [["charset", "utf-8"]]
    assert MULTI[pdf.bstart:pdf.end] == b"AAAA" and pdf.encoding == "base64"
    assert msg.message is not None and msg.message.envelope[1] == "inner"
    assert MULTI[msg.message.bstart:msg.message.end] == b"inner body"


def test_rfc2231_continuations_joined():
    """filename*0*/filename*1 join into one encoded filename* parameter (RFC 2231 §3-4)."""
    pdf = mime.parse(MULTI).parts[1]
    assert pdf.disposition == ["attachment", [["filename*", "utf-8''Zeugnis%202026.pdf"]]]


def test_envelope_addresses_and_groups():
    """From with encoded word, a group and a quoted name parse to RFC 3501 address structures."""
    env = mime.parse(MULTI).envelope
    assert env[2] == [
        ("=?utf-8?q?J=C3=B6rg?=", None, "joerg", "example.org"),
        (None, None, "Group", None), (None, None, "a", "b.c"), ("Q, R", None, "q", "r.s"),
        (None, None, None, None),
    ]
    assert env[5] == [(None, None, "undisclosed-recipients", None), (None, None, None, None)]
    assert env[3] == env[2]  # sender defaults to from


def test_resolve_sections():
    """Section paths reach parts and parts of encapsulated messages (RFC 3501 §6.4.5)."""
    e = mime.parse(MULTI)
    assert mime.resolve(e, [1]) is e.parts[0]
    assert mime.resolve(e, [3, 1]) is e.parts[2].message
    assert mime.resolve(e, [4]) is None
    single = mime.parse(b"Subject: x\r\n\r\nbody")
    assert mime.resolve(single, [1]) is single


def test_malformed_still_has_structure():
    """A multipart without boundary or close delimiter, or no blank line, still parses."""
    assert mime.parse(b"Content-Type: multipart/mixed\r\n\r\nno boundary").parts
    e = mime.parse(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nunterminated")
    assert len(e.parts) == 1
    only_header = mime.parse(b"Subject: no body")
    assert only_header.bstart == only_header.end == len(b"Subject: no body")


def test_serialisation_round_trip():
    """to_bytes/from_bytes keep the whole tree."""
    e = mime.parse(MULTI)
    assert mime.Entity.from_bytes(e.to_bytes()).to_bytes() == e.to_bytes()
    assert mime.Entity.from_bytes(e.to_bytes()).parts[2].message.envelope[1] == "inner"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parse_never_fails_on_garbage(data):
    """Any bytes parse to a structure whose offsets stay inside the message."""
    e = mime.parse(data)

    def check(x):
        assert 0 <= x.hstart <= x.bstart <= x.end <= len(data)
        for p in x.parts:
            check(p)
        if x.message:
            check(x.message)
    check(e)
    mime.Entity.from_bytes(e.to_bytes())
