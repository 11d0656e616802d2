"""The SMTP command grammar: parsing, refusals, and fuzzing with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schoolsuite.protocols.smtp.errors import BadCommand, SMTPReply, UnknownCommand, UnknownParameter
from schoolsuite.protocols.smtp.grammar import (
    Auth, Bdat, Hello, MailFrom, RcptTo, Simple, parse_command, xtext_decode, xtext_encode)


def test_mail_with_all_parameters() -> None:
    """MAIL FROM parses SIZE, BODY, SMTPUTF8, RET and xtext ENVID."""
    cmd = parse_command(b"mail from:<a.b+c@x.example> SIZE=123 BODY=8bitmime SMTPUTF8 RET=hdrs ENVID=q+2Bx")
    assert cmd == MailFrom("MAIL", "a.b+c@x.example", 123, "8BITMIME", True, "HDRS", "q+x")


def test_null_sender_and_source_route() -> None:
    """<> is the null reverse-path; an RFC 5321 source route is dropped."""
    assert parse_command(b"MAIL FROM:<>").sender == ""
    assert parse_command(b"RCPT TO:<@relay.example:bob@x.example>").recipient == "bob@x.example"


def test_rcpt_dsn_parameters() -> None:
    """RCPT parses NOTIFY lists and ORCPT with xtext; NEVER cannot be combined."""
    cmd = parse_command(b"RCPT TO:<bob@x.example> NOTIFY=success,failure ORCPT=rfc822;bob+40x.example")
    assert cmd == RcptTo("RCPT", "bob@x.example", ("SUCCESS", "FAILURE"), "rfc822;bob@x.example")
    with pytest.raises(BadCommand):
        parse_command(b"RCPT TO:<bob@x.example> NOTIFY=NEVER,SUCCESS")


def test_quoted_local_part_and_postmaster() -> None:
    """A quoted local part may hold '>' and spaces; bare <Postmaster> is accepted."""
    assert parse_command(b'RCPT TO:<"odd >name"@x.example>').recipient == '"odd >name"@x.example'
    assert parse_command(b"RCPT TO:<Postmaster>").recipient == "postmaster"


def test_utf8_address() -> None:
    """UTF-8 local parts and domains parse (RFC 6531)."""
    assert parse_command("MAIL FROM:<jörg@müller.example> SMTPUTF8".encode()).sender == "jörg@müller.example"


@pytest.mark.parametrize("line,error", [
    (b"MAIL FROM:a@b.example", BadCommand),
    (b"MAIL FROM:<a@b.example> SIZE=big", BadCommand),
    (b"MAIL FROM:<a@b.example> BODY=BINARYMIME", UnknownParameter),
    (b"MAIL FROM:<a@b.example> XFOO=1", UnknownParameter),
    (b"MAIL FROM:<a@b.example> SIZE=1 SIZE=2", BadCommand),
    (b"RCPT TO:<>", BadCommand),
    (b"RCPT TO:<a..b@x.example>", BadCommand),
    (b"RCPT TO:<a@>", BadCommand),
    (b"EHLO", BadCommand),
    (b"DATA now", BadCommand),
    (b"BDAT x", BadCommand),
    (b"BDAT 10 FIRST", BadCommand),
    (b"\xff\xfe", BadCommand),
    (b"TURN", UnknownCommand),
])
def test_refusals(line: bytes, error: type) -> None:
    """Malformed commands raise the matching refusal."""
    with pytest.raises(error):
        parse_command(line)


def test_simple_commands() -> None:
    """EHLO, BDAT, AUTH and argument-less commands parse to their dataclasses."""
    assert parse_command(b"ehlo client.example") == Hello("EHLO", "client.example", True)
    assert parse_command(b"BDAT 42 last") == Bdat("BDAT", 42, True)
    assert parse_command(b"AUTH plain AGEAYg==") == Auth("AUTH", "PLAIN", "AGEAYg==")
    assert parse_command(b"quit") == Simple("QUIT")


@given(st.text(min_size=0, max_size=60))
def test_xtext_round_trip(value: str) -> None:
    """xtext encoding round-trips for any text of printable and non-printable ASCII."""
    value = "".join(ch for ch in value if ord(ch) < 128)
    assert xtext_decode(xtext_encode(value)) == value


SEEDS = [b"MAIL FROM:<a@b.example> SIZE=10", b"RCPT TO:<b@c.example> NOTIFY=NEVER", b"BDAT 5 LAST",
         b"EHLO x", b"AUTH PLAIN AGEAYg==", b"DATA", b"RSET"]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SEEDS), st.binary(max_size=40), st.integers(min_value=0, max_value=40))
def test_fuzz_parser_only_raises_smtp_replies(seed: bytes, noise: bytes, cut: int) -> None:
    """Any bytes (real commands mutated) parse or raise an SMTPReply, never anything else."""
    line = seed[:cut] + noise + seed[cut:]
    try:
        parse_command(line)
    except SMTPReply:
        pass
