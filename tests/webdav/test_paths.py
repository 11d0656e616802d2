"""The /files/ path grammar (paths.py): raw bytes → checked names; every traversal spelling refused."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schoolsuite.protocols.webdav.paths import FilesPath, PathError, parse_destination, parse_request_path


def test_plain_path() -> None:
    """A home path splits into owner and names, keeping the trailing slash."""
    p = parse_request_path(b"/files/alice@school.example/a/b%20c/")
    assert p == FilesPath("alice@school.example", ("a", "b c"), True)


def test_mount_itself() -> None:
    """/files and /files/ are the top collection (no owner)."""
    assert parse_request_path(b"/files/").owner is None
    assert parse_request_path(b"/files").owner is None


def test_nfd_becomes_nfc() -> None:
    """A name sent in NFD (macOS) comes out NFC."""
    nfd = unicodedata.normalize("NFD", "é").encode()
    p = parse_request_path(b"/files/a@b.example/" + b"".join(b"%%%02X" % c for c in nfd))
    assert p.names == ("\u00e9",)


@pytest.mark.parametrize("raw", [
    b"/files/a@b.example/..", b"/files/a@b.example/../x", b"/files/a@b.example/.",
    b"/files/a@b.example/%2e%2e/x", b"/files/a@b.example/%2E%2e", b"/files/a@b.example/.%2E",
    b"/files/a@b.example/a%2fb", b"/files/a@b.example/a%2Fb", b"/files/a@b.example/a%5cb",
    b"/files/a@b.example/a\\b", b"/files/a@b.example/%00", b"/files/a@b.example/%0a",
    b"/files/a@b.example/%ff", b"/files/a@b.example/%zz", b"/files/a@b.example/%2",
    b"/files/a@b.example/x#frag", b"files/a@b.example/", b"/other/a@b.example/",
])
def test_refused(raw: bytes) -> None:
    """Traversals, encoded separators, NUL/control bytes, bad escapes, non-UTF-8 and fragments are refused."""
    with pytest.raises(PathError):
        parse_request_path(raw)


def test_destination_same_host_absolute() -> None:
    """RFC 4918 §10.3: an absolute Destination on this host is accepted."""
    p = parse_destination(b"https://mail.school.example:8443/files/a@b.example/x", b"mail.school.example:8443")
    assert p.names == ("x",)


@pytest.mark.parametrize("dest,status", [
    (b"https://evil.example/files/a@b.example/x", 403),
    (b"http://h/files/a@b.example/x", 403),
    (b"/files/a@b.example/../c@d.example/x", 400),
    (b"/files/a@b.example/x?q=1", 400),
    (b"", 400),
])
def test_destination_refused(dest: bytes, status: int) -> None:
    """A Destination on another site, with a traversal, a query or empty is refused with the right status."""
    with pytest.raises(PathError) as e:
        parse_destination(dest, b"h")
    assert e.value.status == status


@given(st.lists(st.text(min_size=1, max_size=20).filter(
    lambda s: s not in (".", "..") and not any(c in s for c in "/\\\x00")
    and all(ord(c) >= 0x20 and ord(c) != 0x7F for c in s)), min_size=1, max_size=5))
def test_url_roundtrip(names: list[str]) -> None:
    """Any acceptable names survive url() → parse_request_path() unchanged (NFC)."""
    p = FilesPath("a@b.example", tuple(unicodedata.normalize("NFC", n) for n in names), False)
    assert parse_request_path(p.url().encode()) == p


@given(st.binary(max_size=60))
def test_fuzz_never_crashes_nor_escapes(tail: bytes) -> None:
    """Random bytes after the home either parse to names without separators or raise PathError."""
    try:
        p = parse_request_path(b"/files/a@b.example/" + tail)
    except PathError:
        return
    for name in p.names:
        assert name not in (".", "..") and "/" not in name and "\\" not in name and "\x00" not in name
