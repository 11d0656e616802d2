"""IMAP grammar: raw command bytes → typed commands, modified UTF-7, and fuzzing of the parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schoolsuite.protocols.imap import render
from schoolsuite.protocols.imap.commands import parse_command
from schoolsuite.protocols.imap.grammar import (
    Append, Fetch, ListCommand, Login, ParseError, Search, Section, Select, Store, mutf7_decode, mutf7_encode)

SEEDS = [
    b"a1 LOGIN joe \"pass word\"\r\n",
    b"a UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From Subject)]<0.100>) (CHANGEDSINCE 5)\r\n",
    b"x SEARCH CHARSET UTF-8 OR FROM joe (SINCE 1-Feb-2024 UNSEEN) TEXT {3}\r\nabc\r\n",
    b"b STORE 1,3:5 +FLAGS.SILENT (\\Seen $Junk)\r\n",
    b"c LIST (SUBSCRIBED) \"\" (INBOX \"*\") RETURN (CHILDREN STATUS (MESSAGES))\r\n",
    b"d SELECT INBOX (QRESYNC (1 2 1:5))\r\n",
    b"e APPEND Sent (\\Seen) \"27-Nov-2026 10:00:00 +0000\" {3+}\r\nabc\r\n",
    b"f UID SORT (REVERSE DATE SUBJECT) UTF-8 ALL\r\n",
    b"g THREAD REFERENCES UTF-8 SINCE 1-Jan-2020\r\n",
    b"h FETCH 1 (BINARY.PEEK[1]<0.10> BINARY.SIZE[2] MODSEQ)\r\n",
    b"i SEARCH RETURN (MIN MAX COUNT) MODSEQ 5 NOT DELETED\r\n",
    b"j CREATE \"Projekte/Klasse 5&AOQ-\" (USE (\\Archive))\r\n",
    b"k ID (\"name\" \"Thunderbird\" \"version\" \"128\")\r\n",
    b"l UID EXPUNGE 3:7\r\n",
    b"m UID MOVE 1:4 Trash\r\n",
]


def test_login_hides_password():
    """LOGIN parses user and password; the password never appears in the repr."""
    cmd = parse_command(SEEDS[0])
    assert isinstance(cmd, Login) and cmd.user == "joe" and cmd.password == "pass word"
    assert "pass word" not in repr(cmd)


def test_fetch_sections_and_modifiers():
    """UID FETCH with HEADER.FIELDS, a partial and CHANGEDSINCE."""
    cmd = parse_command(SEEDS[1])
    assert isinstance(cmd, Fetch) and cmd.uid and cmd.sequence == ((1, None),) and cmd.changed_since == 5
    assert cmd.items[1].section == Section((), "HEADER.FIELDS", ("FROM", "SUBJECT"), (0, 100))


def test_search_tree_with_literal():
    """SEARCH nests OR, parentheses and a literal argument."""
    cmd = parse_command(SEEDS[2])
    assert isinstance(cmd, Search) and cmd.charset == "UTF-8"
    assert cmd.criteria[1][0][0] == "OR" and cmd.criteria[1][1] == ("TEXT", b"abc")


def test_store_list_select_append():
    """STORE, LIST-EXTENDED, SELECT QRESYNC and APPEND with flags and date parse to their types."""
    store = parse_command(SEEDS[3])
    assert isinstance(store, Store) and store.mode == "add" and store.silent and store.flags == ("\\Seen", "$Junk")
    lst = parse_command(SEEDS[4])
    assert isinstance(lst, ListCommand) and lst.patterns == ("INBOX", "*") and lst.status_items == ("MESSAGES",)
    sel = parse_command(SEEDS[5])
    assert isinstance(sel, Select) and sel.qresync == (1, 2, ((1, 5),), None)
    app = parse_command(SEEDS[6])
    assert isinstance(app, Append) and app.messages[0].data == b"abc" and app.messages[0].flags == ("\\Seen",)


@pytest.mark.parametrize("line", [
    b"nospace\r\n", b"a FETCH\r\n", b"a FETCH 1 (FLAGS\r\n", b"a FETCH 0 FLAGS\r\n", b"a SEARCH BEFORE 32-Foo-2020\r\n",
    b"a STORE 1 FLAGS.LOUD (x)\r\n", b"a LOGIN \"unterminated\r\n", b"a SELECT\r\n", b"a UID NOOP\r\n",
    b"a CAPABILITY extra\r\n", b"a APPEND INBOX {9}\r\nabc",
])
def test_malformed_commands_raise_parse_error(line):
    """Malformed commands raise ParseError (answered with BAD), never anything else."""
    with pytest.raises(ParseError):
        parse_command(line)


def test_mutf7_examples():
    """RFC 3501 §5.1.3 modified UTF-7 for umlauts, ampersands and CJK."""
    assert mutf7_encode("Klasse 5ä") == b"Klasse 5&AOQ-"
    assert mutf7_encode("A&B") == b"A&-B"
    assert mutf7_encode("日本語") == b"&ZeVnLIqe-"
    assert mutf7_decode(b"&ZeVnLIqe-/&AOQ-") == "日本語/ä"


@given(st.text(max_size=40))
def test_mutf7_round_trip(name):
    """Every Unicode name survives modified UTF-7 encoding and decoding."""
    assert mutf7_decode(mutf7_encode(name)) == name


@given(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=50))
def test_sequence_set_round_trip(numbers):
    """A rendered sequence set parses back to the same numbers."""
    uniq = sorted(set(numbers))
    cmd = parse_command(b"a UID FETCH " + render.sequence_set(uniq) + b" FLAGS\r\n")
    got = set()
    for a, b in cmd.sequence:
        got.update(range(a, b + 1))
    assert sorted(got) == uniq


@given(st.binary(max_size=100))
def test_astring_rendering_round_trip(value):
    """A string rendered for the wire parses back to the same bytes."""
    from schoolsuite.protocols.imap.grammar import Reader

    rendered = render.string(value)
    assert Reader(rendered).string() == value


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SEEDS), st.integers(min_value=0, max_value=200), st.binary(max_size=8))
def test_fuzz_mutated_seeds(seed, position, junk):
    """Real commands with bytes inserted anywhere parse or raise ParseError, nothing else."""
    pos = position % (len(seed) + 1)
    data = seed[:pos] + junk + seed[pos:]
    try:
        parse_command(data)
    except ParseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_raw_bytes(data):
    """Arbitrary bytes parse or raise ParseError."""
    try:
        parse_command(data)
    except ParseError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(SEEDS), st.binary(max_size=40)), max_size=8))
def test_fuzz_protocol_stream(services_for_fuzz, chunks):
    """Any byte stream into a logged-in connection yields only well-formed replies, never an exception."""
    from imap_helpers import Conn

    c = Conn(services_for_fuzz)
    c.login()
    out = b""
    for chunk in chunks:
        out += c.send(chunk)
    c.proto.connectionLost(None)
    for line in out.split(b"\r\n"):
        assert b"Traceback" not in line and b"File \"" not in line
