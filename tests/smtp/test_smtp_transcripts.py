"""Protocol transcripts over a StringTransport: state machine, extensions, refusals."""

from __future__ import annotations

import base64
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer

from smtp_helpers import ALICE, BOB, Conn, make_settings, plain

MSG = "From: alice@school.example\r\nTo: bob@school.example\r\nSubject: hi\r\n\r\nHello\r\n"


def test_greeting_and_ehlo_extensions_before_tls() -> None:
    """EHLO advertises SIZE, PIPELINING, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING, DSN, STARTTLS; no AUTH before TLS."""
    c = Conn(make_settings())
    assert c.greeting.startswith("220 mail.school.example ESMTP")
    reply = c.send("EHLO client.example\r\n")
    for ext in ("PIPELINING", "SIZE 100000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN",
                "STARTTLS"):
        assert f"250-{ext}\r\n" in reply or f"250 {ext}\r\n" in reply, ext
    assert "AUTH" not in reply


def test_auth_refused_before_tls() -> None:
    """AUTH on the submission port before STARTTLS gets 538 5.7.11 and no credential check."""
    c = Conn(make_settings())
    c.send("EHLO x\r\n")
    assert c.codes(f"AUTH PLAIN {plain('alice@school.example', 'x')}\r\n") == ["538 5.7.11"]
    assert c.settings.auth.attempts == []


def test_starttls_discards_pipelined_plaintext_and_resets() -> None:
    """Commands pipelined after STARTTLS in plaintext are dropped (CVE-2011-0411) and EHLO is needed again."""
    c = Conn(make_settings())
    c.send("EHLO x\r\n")
    c.proto.dataReceived(b"STARTTLS\r\nMAIL FROM:<alice@school.example>\r\n")
    assert c.transport.tls_started
    assert c.transport.cleartext_before_tls.decode() == "220 2.0.0 Ready to start TLS\r\n"
    assert c.take() == "220 2.0.0 Ready to start TLS\r\n"  # and no answer to the pipelined MAIL
    assert c.codes("MAIL FROM:<alice@school.example>\r\n") == ["503 5.5.1"]
    reply = c.send("EHLO x\r\n")
    assert "AUTH PLAIN LOGIN" in reply and "STARTTLS" not in reply


def test_auth_plain_and_login() -> None:
    """AUTH PLAIN with initial response and AUTH LOGIN challenge/response both log in over TLS."""
    c = Conn(make_settings(implicit=True))
    c.send("EHLO x\r\n")
    assert c.codes(f"AUTH PLAIN {plain('alice@school.example', 'correct horse battery')}\r\n") == ["235 2.7.0"]
    c2 = Conn(make_settings(implicit=True))
    c2.send("EHLO x\r\n")
    assert c2.send("AUTH LOGIN\r\n") == "334 VXNlcm5hbWU6\r\n"
    assert c2.send(base64.b64encode(b"alice@school.example") + b"\r\n") == "334 UGFzc3dvcmQ6\r\n"
    assert c2.codes(base64.b64encode(b"correct horse battery") + b"\r\n") == ["235 2.7.0"]


def test_auth_wrong_password_and_blocked() -> None:
    """A wrong password is 535 5.7.8; a throttled-out account is 454 4.7.0; '*' cancels LOGIN."""
    c = Conn(make_settings(implicit=True))
    c.send("EHLO x\r\n")
    assert c.codes(f"AUTH PLAIN {plain('alice@school.example', 'wrong')}\r\n") == ["535 5.7.8"]
    assert c.codes(f"AUTH PLAIN {plain('blocked@school.example', 'x')}\r\n") == ["454 4.7.0"]
    c.send("AUTH LOGIN\r\n")
    assert c.codes("*\r\n") == ["501 5.0.0"]


def test_submission_requires_auth_and_own_sender() -> None:
    """MAIL without AUTH is 530; after AUTH a foreign envelope sender is 550 5.7.1, an alias is fine."""
    c = Conn(make_settings(implicit=True))
    c.send("EHLO x\r\n")
    assert c.codes("MAIL FROM:<alice@school.example>\r\n") == ["530 5.7.0"]
    c.login()
    assert c.codes("MAIL FROM:<mallory@school.example>\r\n") == ["550 5.7.1"]
    assert c.codes("MAIL FROM:<>\r\n") == ["550 5.7.1"]
    assert c.codes("MAIL FROM:<Alice.Alias@school.example>\r\n") == ["250 2.1.0"]


def test_submission_pipelined_transaction() -> None:
    """A pipelined MAIL/RCPT/RCPT/DATA batch answers in order and the message is committed with DSN params."""
    c = Conn(make_settings())
    c.login()
    codes = c.codes("MAIL FROM:<alice@school.example> BODY=8BITMIME RET=HDRS ENVID=abc+2Bdef\r\n"
                    "RCPT TO:<bob@school.example> NOTIFY=FAILURE,DELAY ORCPT=rfc822;bob@school.example\r\n"
                    "RCPT TO:<friend@elsewhere.example>\r\nDATA\r\n")
    assert codes == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354"]
    assert c.codes(MSG + ".\r\n") == ["250 2.0.0"]
    sub = c.settings.transport.submitted[0]
    assert sub["envid"] == "abc+def" and sub["ret"] == "HDRS"
    rcpts = sub["recipients"]
    assert [(r.address, r.account_id) for r in rcpts] == [("bob@school.example", BOB),
                                                          ("friend@elsewhere.example", None)]
    assert rcpts[0].notify == ("FAILURE", "DELAY") and rcpts[0].orcpt == "rfc822;bob@school.example"
    message = sub["message"]
    assert message.replace(b"\r\n\t", b" ").startswith(
        b"Received: from submission.invalid (authenticated sender) by mail.school.example")
    assert b"client.example" not in message
    assert b"192.0.2.7" not in message
    assert b"\r\nDate: " in message and b"\r\nMessage-ID: <" in message


def test_from_header_must_be_own() -> None:
    """A From: header naming someone else is refused at end of DATA with 550 5.7.1; nothing committed."""
    c = Conn(make_settings())
    c.login()
    c.send("MAIL FROM:<alice@school.example>\r\nRCPT TO:<bob@school.example>\r\nDATA\r\n")
    assert c.codes(MSG.replace("From: alice@", "From: Head <head@") + ".\r\n") == ["550 5.7.1"]
    assert c.settings.transport.submitted == []


def test_commands_out_of_order_and_unknown() -> None:
    """RCPT before MAIL, DATA before RCPT, MAIL before EHLO are 503; unknown verbs 500; syntax errors 501."""
    c = Conn(make_settings("mx"))
    assert c.codes("MAIL FROM:<a@b.example>\r\n") == ["503 5.5.1"]
    c.send("EHLO x\r\n")
    assert c.codes("RCPT TO:<bob@school.example>\r\n") == ["503 5.5.1"]
    assert c.codes("DATA\r\n") == ["503 5.5.1"]
    assert c.codes("FROB\r\n") == ["500 5.5.2"]
    assert c.codes("MAIL FROM:bob\r\n") == ["501 5.1.7"]
    assert c.codes("MAIL FROM:<a@b.example> FOO=bar\r\n") == ["555 5.5.4"]
    c.send("MAIL FROM:<a@b.example>\r\n")
    assert c.codes("MAIL FROM:<a@b.example>\r\n") == ["503 5.5.1"]
    assert c.codes("DATA\r\n") == ["554 5.5.1"]


def test_overlong_line_refused_and_stream_resyncs() -> None:
    """A command line over the limit is answered once with 500 5.5.2 and the next line works."""
    c = Conn(make_settings("mx"))
    assert c.codes(b"NOOP " + b"x" * 10000) == ["500 5.5.2"]
    assert c.codes(b"x" * 100 + b"\r\nNOOP\r\n") == ["250 2.0.0"]


def test_mx_relay_denied_and_unknown_user() -> None:
    """MX refuses foreign domains with 550 5.7.1 and unknown local users with 550 5.1.1."""
    c = Conn(make_settings("mx"))
    c.send("EHLO x\r\nMAIL FROM:<p@parents.example>\r\n")
    assert c.codes("RCPT TO:<someone@elsewhere.example>\r\n") == ["550 5.7.1"]
    assert c.codes("RCPT TO:<nobody@school.example>\r\n") == ["550 5.1.1"]
    assert c.codes("RCPT TO:<bob@school.example>\r\n") == ["250 2.1.5"]


def test_mx_no_auth_offered() -> None:
    """The MX listener never offers or accepts AUTH."""
    c = Conn(make_settings("mx"))
    c.proto.session.tls = True
    assert "AUTH" not in c.send("EHLO x\r\n")
    assert c.codes(f"AUTH PLAIN {plain('alice@school.example', 'correct horse battery')}\r\n") == ["503 5.5.1"]


def test_size_announced_and_enforced() -> None:
    """SIZE= over the limit is 552 5.3.4 at MAIL; a DATA body over the limit is 552 5.3.4 and not delivered."""
    c = Conn(make_settings("mx"))
    c.send("EHLO x\r\n")
    assert c.codes("MAIL FROM:<p@parents.example> SIZE=100001\r\n") == ["552 5.3.4"]
    c.send("MAIL FROM:<p@parents.example>\r\nRCPT TO:<bob@school.example>\r\nDATA\r\n")
    assert c.codes("Subject: x\r\n\r\n" + ("y" * 998 + "\r\n") * 120 + ".\r\n") == ["552 5.3.4"]
    assert c.settings.transport.received == []


def test_too_many_recipients() -> None:
    """Recipients beyond the limit get 452 4.5.3."""
    c = Conn(make_settings("mx"))
    c.send("EHLO x\r\nMAIL FROM:<p@parents.example>\r\n")
    codes = c.codes("RCPT TO:<bob@school.example>\r\n" * 6)
    assert codes == ["250 2.1.5"] * 5 + ["452 4.5.3"]


def test_eight_bit_needs_8bitmime() -> None:
    """8-bit data without BODY=8BITMIME is refused with 554 5.6.1; with it, accepted."""
    c = Conn(make_settings("mx"))
    c.send("EHLO x\r\nMAIL FROM:<p@parents.example>\r\nRCPT TO:<bob@school.example>\r\nDATA\r\n")
    body = "Subject: Grüße\r\n\r\nÄ\r\n.\r\n".encode()
    assert c.codes(body) == ["554 5.6.1"]
    c.send("MAIL FROM:<p@parents.example> BODY=8BITMIME\r\nRCPT TO:<bob@school.example>\r\nDATA\r\n")
    assert c.codes(body) == ["250 2.0.0"]


def test_smtputf8_addresses_need_the_parameter() -> None:
    """A UTF-8 address without SMTPUTF8 is 553 5.6.7; with SMTPUTF8 it is accepted."""
    c = Conn(make_settings("mx"))
    c.send("EHLO x\r\n")
    assert c.codes("MAIL FROM:<jörg@eltern.example>\r\n") == ["553 5.6.7"]
    assert c.codes("MAIL FROM:<jörg@eltern.example> SMTPUTF8\r\n") == ["250 2.1.0"]


def test_bdat_chunks() -> None:
    """BDAT chunks are read exactly, answered per chunk, and joined at LAST."""
    c = Conn(make_settings("mx"))
    c.send("EHLO x\r\nMAIL FROM:<p@parents.example>\r\nRCPT TO:<bob@school.example>\r\n")
    part1, part2 = b"Subject: chunked\r\n\r\nline one\r\n", b"line two\r\n"
    codes = c.codes(b"BDAT %d\r\n" % len(part1) + part1 + b"BDAT %d LAST\r\n" % len(part2) + part2 + b"NOOP\r\n")
    assert codes == ["250 2.0.0", "250 2.0.0", "250 2.0.0"]
    accounts, message = c.settings.transport.received[0]
    assert accounts == [BOB] and message.endswith(part1 + part2)


def test_bdat_out_of_sequence_is_consumed() -> None:
    """BDAT without MAIL is 503 but its chunk is consumed, so a command hidden in it never runs."""
    c = Conn(make_settings("mx"))
    c.send("EHLO x\r\n")
    hidden = b"RSET\r\nQUIT\r\n"
    assert c.codes(b"BDAT %d LAST\r\n" % len(hidden) + hidden + b"NOOP\r\n") == ["503 5.5.1", "250 2.0.0"]
    assert not c.closed


def test_bdat_over_size_and_data_after_bdat() -> None:
    """BDAT chunks that add up to more than SIZE give 552 5.3.4; DATA after BDAT is 503."""
    c = Conn(make_settings("mx", max_size=50))
    c.send("EHLO x\r\nMAIL FROM:<p@parents.example>\r\nRCPT TO:<bob@school.example>\r\n")
    assert c.codes(b"BDAT 30\r\n" + b"a" * 30) == ["250 2.0.0"]
    assert c.codes("DATA\r\n") == ["503 5.5.1"]
    assert c.codes(b"BDAT 30 LAST\r\n" + b"a" * 30) == ["552 5.3.4"]
    assert c.settings.transport.received == []


def test_smuggling_bare_lf_dot_refused() -> None:
    """The <LF>.<LF> smuggling family is not an end of data; the whole message is refused, nothing delivered."""
    c = Conn(make_settings("mx"))
    c.send("EHLO x\r\nMAIL FROM:<p@parents.example>\r\nRCPT TO:<bob@school.example>\r\nDATA\r\n")
    smuggled = ("Subject: a\r\n\r\nbody\n.\nMAIL FROM:<admin@school.example>\r\nRCPT TO:<bob@school.example>\r\n"
                "DATA\r\nSubject: forged\r\n\r\nx\r\n.\r\n")
    assert c.codes(smuggled) == ["550 5.5.2"]
    assert c.settings.transport.received == []
    for variant in ("body\r\n.\n", "body\n.\r\n", "body\r.\r\n", "body\r\n.\r"):
        c.send("MAIL FROM:<p@parents.example>\r\nRCPT TO:<bob@school.example>\r\nDATA\r\n")
        assert c.codes("Subject: a\r\n\r\n" + variant + "\r\n.\r\n") == ["550 5.5.2"], repr(variant)
    assert c.settings.transport.received == []


def test_dot_stuffing_removed() -> None:
    """Leading dots added by the client are removed (RFC 5321 §4.5.2)."""
    c = Conn(make_settings("mx"))
    c.send("EHLO x\r\nMAIL FROM:<p@parents.example>\r\nRCPT TO:<bob@school.example>\r\nDATA\r\n")
    assert c.codes("Subject: a\r\n\r\n..leading\r\n...\r\n.\r\n") == ["250 2.0.0"]
    assert c.settings.transport.received[0][1].endswith(b"\r\n.leading\r\n..\r\n")


def test_mx_adds_authentication_results_and_strips_forged() -> None:
    """MX mail gets our Authentication-Results and loses one forged with our authserv-id; others stay."""
    c = Conn(make_settings("mx"))
    c.send("EHLO x\r\nMAIL FROM:<p@parents.example>\r\nRCPT TO:<bob@school.example>\r\nDATA\r\n")
    c.send("Authentication-Results: mail.school.example; dmarc=pass\r\n"
           "Authentication-Results: other.example; spf=pass\r\nFrom: p@parents.example\r\n\r\nhi\r\n.\r\n")
    message = c.settings.transport.received[0][1].replace(b"\r\n\t", b" ")
    assert message.count(b"Authentication-Results: mail.school.example;") == 1
    assert b"dmarc=none header.from=parents.example" in message
    assert b"Authentication-Results: other.example; spf=pass" in message


def test_dmarc_reject_refused() -> None:
    """A DMARC p=reject failure is refused at end of DATA with 550 5.7.1."""
    settings = make_settings("mx")
    settings.transport.verdicts.dmarc, settings.transport.verdicts.dmarc_policy = "fail", "reject"
    c = Conn(settings)
    c.send("EHLO x\r\nMAIL FROM:<p@bank.example>\r\nRCPT TO:<bob@school.example>\r\nDATA\r\n")
    assert c.codes("From: p@bank.example\r\n\r\nhi\r\n.\r\n") == ["550 5.7.1"]
    assert settings.transport.received == []


def test_reply_waits_for_commit_and_pipelined_commands_wait() -> None:
    """The 250 after DATA comes only when the commit fires; commands pipelined behind it wait their turn."""
    settings = make_settings()
    settings.transport.pending = defer.Deferred()
    c = Conn(settings)
    c.login()
    c.send("MAIL FROM:<alice@school.example>\r\nRCPT TO:<bob@school.example>\r\nDATA\r\n")
    assert c.send(MSG + ".\r\nNOOP\r\n") == ""
    settings.transport.pending.callback(None)
    assert c.codes("") == ["250 2.0.0", "250 2.0.0"]


def test_disconnect_mid_data_delivers_nothing() -> None:
    """A client that goes away in the middle of DATA leaves nothing delivered or queued."""
    c = Conn(make_settings("mx"))
    c.send("EHLO x\r\nMAIL FROM:<p@parents.example>\r\nRCPT TO:<bob@school.example>\r\nDATA\r\nSubject: x\r\n\r\n")
    c.proto.connectionLost(None)
    assert c.settings.transport.received == []


def test_connection_limit_per_client() -> None:
    """Connections from one client beyond the limit get 421 4.7.0 and are closed."""
    settings = make_settings("mx")
    conns = [Conn(settings) for _ in range(3)]
    extra = Conn(settings)
    assert extra.greeting.startswith("421 4.7.0") and extra.closed
    assert all(c.greeting.startswith("220") for c in conns)


def test_quit_and_vrfy() -> None:
    """QUIT answers 221 and closes; VRFY never tells who exists (252)."""
    c = Conn(make_settings("mx"))
    assert c.codes("VRFY bob\r\n") == ["252 2.5.0"]
    assert c.codes("QUIT\r\n") == ["221 2.0.0"] and c.closed


def test_received_reveals_client_when_configured() -> None:
    """With submission_reveal_client the Received line carries the client address."""
    c = Conn(make_settings(reveal_client=True))
    c.login()
    c.send("MAIL FROM:<alice@school.example>\r\nRCPT TO:<bob@school.example>\r\nDATA\r\n")
    c.send(MSG + ".\r\n")
    assert b"([192.0.2.7])" in c.settings.transport.submitted[0]["message"].split(b"\r\n")[0]
    assert ALICE == c.settings.transport.submitted[0]["account"]


def test_idle_timeout_closes() -> None:
    """An idle connection is closed with 421 4.4.2 after the idle timeout."""
    settings = make_settings("mx")
    c = Conn(settings)
    settings.reactor.advance(299)
    assert c.take() == "" and not c.closed
    settings.reactor.advance(2)
    assert c.take().startswith("421 4.4.2") and c.closed


_SESSION_SEEDS = [b"EHLO x\r\n", b"MAIL FROM:<p@parents.example>\r\n", b"RCPT TO:<bob@school.example>\r\n",
                  b"DATA\r\n", b"Subject: x\r\n\r\nbody\r\n.\r\n", b"BDAT 5 LAST\r\nhello", b"RSET\r\n",
                  b"STARTTLS\r\n", b"AUTH PLAIN AGFAYgBj\r\n", b"\n.\n", b"\r\n.\r\n", b"NOOP\r\n"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_SESSION_SEEDS), st.binary(max_size=30)), max_size=12),
       st.sampled_from(["mx", "submission"]))
def test_fuzz_sessions_answer_only_with_replies(chunks: list[bytes], mode: str) -> None:
    """Any byte stream (real commands mixed with noise) gets only well-formed replies, never a server fault."""
    c = Conn(make_settings(mode))
    out = "".join(c.send(chunk) for chunk in chunks)
    for line in out.split("\r\n")[:-1]:
        assert re.match(r"^[2345]\d\d[ -]", line), line
    assert "incident" not in out
    assert c.settings.transport.received == [] or all(b"\r\n" in m for _, m in c.settings.transport.received)


def test_memory_budget_refuses_with_452_and_is_released() -> None:
    """When all connections together hold more message bytes than the budget, the message gets 452 4.3.1; bytes are given back."""
    from schoolsuite.protocols.smtp.session import MemoryBudget

    budget = MemoryBudget(5000)
    settings = make_settings("mx", budget=budget)
    c = Conn(settings)
    c.send("EHLO x\r\nMAIL FROM:<p@parents.example>\r\nRCPT TO:<bob@school.example>\r\nDATA\r\n")
    assert c.codes("Subject: big\r\n\r\n" + ("y" * 98 + "\r\n") * 80 + ".\r\n") == ["452 4.3.1"]
    assert budget.held == 0 and settings.transport.received == []
    c.send("MAIL FROM:<p@parents.example>\r\nRCPT TO:<bob@school.example>\r\n")
    assert c.codes(b"BDAT 3000\r\n" + b"a" * 3000) == ["250 2.0.0"]
    assert budget.held == 3000
    assert c.codes(b"BDAT 3000 LAST\r\n" + b"a" * 3000) == ["452 4.3.1"]
    assert budget.held == 0
    c.send("MAIL FROM:<p@parents.example>\r\nRCPT TO:<bob@school.example>\r\nDATA\r\n")
    assert c.codes("Subject: small\r\n\r\nok\r\n.\r\n") == ["250 2.0.0"] and budget.held == 0


def test_dmarc_quarantine_files_into_junk() -> None:
    """A DMARC p=quarantine failure is accepted and filed into Junk; a pass goes to INBOX."""
    settings = make_settings("mx")
    c = Conn(settings)
    settings.transport.verdicts.dmarc, settings.transport.verdicts.dmarc_policy = "fail", "quarantine"
    c.send("EHLO x\r\nMAIL FROM:<p@news.example>\r\nRCPT TO:<bob@school.example>\r\nDATA\r\n")
    assert c.codes("From: p@news.example\r\n\r\nhi\r\n.\r\n") == ["250 2.0.0"]
    settings.transport.verdicts.dmarc = "pass"
    c.send("MAIL FROM:<p@news.example>\r\nRCPT TO:<bob@school.example>\r\nDATA\r\n")
    assert c.codes("From: p@news.example\r\n\r\nhi\r\n.\r\n") == ["250 2.0.0"]
    assert settings.transport.mailboxes == ["Junk", "INBOX"]
