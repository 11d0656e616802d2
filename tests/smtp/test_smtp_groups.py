"""Mail to SCIM group addresses: expanded to the members at delivery, over the MX and submission."""

from __future__ import annotations

import imaplib
import smtplib
import subprocess
import time
from collections.abc import Iterator

import pytest

from schoolsuite.services.groups import GroupService
from schoolsuite.storage import accounts as directory
from smtp_e2e import MailSystem, inbox, open_store, tls_context, wait_for
from smtp_helpers import Conn, make_settings
from support import schoolsuite_cmd

DOMAIN = "school.example"
TEACHERS = {f"{n}@{DOMAIN}": f"{n.title()}-pw-4h7k2m9x" for n in ("tina", "tom", "tess", "otto", "gail", "gus",
                                                                 "fred", "flo", "rita", "rob")}


def _cli(m: MailSystem, *args: str, password: str | None = None) -> None:
    subprocess.run(schoolsuite_cmd("-c", str(m.inst.config), *args), input=None if password is None else
                   password + "\n", text=True, check=True, capture_output=True, timeout=60)


def _make_group(m: MailSystem, address: str, members: list[str]) -> bytes:
    """A group created through the groups service on the store (as SCIM provisioning does)."""
    store = open_store(m.inst.dir)
    try:
        with store.write() as txn:
            ids = [directory.find_account_id(txn, a) for a in members]
            info = GroupService(store).put_in(txn, None, address, address.partition("@")[0], "", ids)
        return info.id
    finally:
        store.close()


@pytest.fixture(scope="module")
def teachers(mailsys: MailSystem) -> Iterator[MailSystem]:
    """Eight teacher accounts; 'flo' has a 1 KiB quota; the groups used below."""
    for address, password in TEACHERS.items():
        quota = ("--quota", "1K") if address.startswith("flo@") else ()
        _cli(mailsys, "user", "add", address, *quota, "--password-stdin", password=password)
    _make_group(mailsys, f"maths-teachers@{DOMAIN}", [f"tina@{DOMAIN}", f"tom@{DOMAIN}"])
    _make_group(mailsys, f"empty-list@{DOMAIN}", [])
    _make_group(mailsys, f"leavers@{DOMAIN}", [f"gail@{DOMAIN}", f"gus@{DOMAIN}"])
    _make_group(mailsys, f"fullbox@{DOMAIN}", [f"fred@{DOMAIN}", f"flo@{DOMAIN}"])
    _make_group(mailsys, f"race-one@{DOMAIN}", [f"rita@{DOMAIN}"])
    _make_group(mailsys, f"race-two@{DOMAIN}", [f"rob@{DOMAIN}"])
    yield mailsys


def _imap_copies(m: MailSystem, address: str, subject: str) -> list[bytes]:
    """Every message in the account's INBOX whose Subject contains ``subject``, read over IMAPS."""
    with imaplib.IMAP4_SSL("localhost", m.port("imaps"), ssl_context=tls_context(m), timeout=20) as im:
        im.login(address, TEACHERS[address])
        im.select("INBOX", readonly=True)
        typ, data = im.search(None, "SUBJECT", f'"{subject}"')
        assert typ == "OK"
        out = []
        for num in data[0].split():
            typ, fetched = im.fetch(num, "(BODY.PEEK[])")
            assert typ == "OK"
            out.append(fetched[0][1])
        return out


def _mx(m: MailSystem, raw: bytes, rcpts: list[str], sender: str = "dad@remote.example") -> list[tuple[int, bytes]]:
    """RCPT replies then the DATA reply (skipped when no RCPT was accepted), over the MX port."""
    replies = []
    with smtplib.SMTP("127.0.0.1", m.port("mx"), timeout=20) as client:
        client.ehlo("mx.remote.example")
        assert client.mail(sender)[0] == 250
        replies = [client.rcpt(r) for r in rcpts]
        if any(code == 250 for code, _ in replies):
            replies.append(client.data(raw))
    return replies


def _submission(m: MailSystem, user: str, raw: bytes, rcpts: list[str]) -> list[tuple[int, bytes]]:
    """The same over submission with STARTTLS and AUTH as ``user``."""
    with smtplib.SMTP("localhost", m.port("submission"), timeout=20) as client:
        client.starttls(context=tls_context(m))
        client.login(user, TEACHERS[user])
        assert client.mail(user)[0] == 250
        replies = [client.rcpt(r) for r in rcpts]
        if any(code == 250 for code, _ in replies):
            replies.append(client.data(raw))
    return replies


def _raw(sender: str, subject: str, body: str = "Dear maths teachers,\r\nsee you on Monday.\r\n") -> bytes:
    return (f"From: {sender}\r\nTo: maths-teachers@{DOMAIN}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@remote.example>\r\n\r\n{body}").encode()


def test_mx_group_reaches_each_member_once_unchanged(teachers: MailSystem) -> None:
    """A parent's mail to a group gives each member one copy (IMAP), body and header unchanged, no Delivered-To."""
    m = teachers
    raw = _raw("dad@remote.example", "mx to the group")
    replies = _mx(m, raw, [f"maths-teachers@{DOMAIN}"])
    assert [code for code, _ in replies] == [250, 250]
    for member in (f"tina@{DOMAIN}", f"tom@{DOMAIN}"):
        copies = wait_for(lambda: _imap_copies(m, member, "mx to the group"))
        assert len(copies) == 1, member
        assert copies[0].endswith(raw), "the message reaches members unchanged below our trace fields"
        assert b"delivered-to:" not in copies[0].lower()
    assert _imap_copies(m, f"tess@{DOMAIN}", "mx to the group") == []  # not a member


def test_mx_member_named_directly_gets_one_copy(teachers: MailSystem) -> None:
    """RCPT to the group and to a member (either order) gives that member one copy; a non-member named directly gets it too."""
    m = teachers
    raw = _raw("dad@remote.example", "direct and group")
    replies = _mx(m, raw, [f"tina@{DOMAIN}", f"maths-teachers@{DOMAIN}", f"tom@{DOMAIN}", f"tess@{DOMAIN}"])
    assert [code for code, _ in replies] == [250, 250, 250, 250, 250]
    for member in (f"tina@{DOMAIN}", f"tom@{DOMAIN}", f"tess@{DOMAIN}"):
        # All copies are committed in one transaction: once one is visible, all are.
        assert len(wait_for(lambda: _imap_copies(m, member, "direct and group"))) == 1, member


def test_submission_to_group_and_member(teachers: MailSystem) -> None:
    """A teacher (not a member) submits to the group plus a member: each member one copy, the sender none."""
    m = teachers
    raw = (f"From: otto@{DOMAIN}\r\nTo: maths-teachers@{DOMAIN}\r\nCc: tom@{DOMAIN}\r\n"
           f"Subject: staff meeting moved\r\n\r\nRoom 12 instead.\r\n").encode()
    replies = _submission(m, f"otto@{DOMAIN}", raw, [f"maths-teachers@{DOMAIN}", f"tom@{DOMAIN}"])
    assert [code for code, _ in replies] == [250, 250, 250]
    for member in (f"tina@{DOMAIN}", f"tom@{DOMAIN}"):
        copies = wait_for(lambda: _imap_copies(m, member, "staff meeting moved"))
        assert len(copies) == 1 and b"Room 12 instead." in copies[0], member
        assert b"DKIM-Signature:" in copies[0]  # the signed message, as for any local recipient
    assert _imap_copies(m, f"otto@{DOMAIN}", "staff meeting moved") == []
    assert _imap_copies(m, f"tess@{DOMAIN}", "staff meeting moved") == []


def test_empty_group_refused_at_rcpt(teachers: MailSystem) -> None:
    """RCPT to a group without members is refused with 550 5.2.4 on the MX and on submission."""
    m = teachers
    ((code, text),) = _mx(m, b"", [f"empty-list@{DOMAIN}"])
    assert code == 550 and text.startswith(b"5.2.4")
    ((code, text),) = _submission(m, f"otto@{DOMAIN}", b"", [f"empty-list@{DOMAIN}"])
    assert code == 550 and text.startswith(b"5.2.4")
    ((code, text),) = _mx(m, b"", [f"no-such-list@{DOMAIN}"])
    assert code == 550 and text.startswith(b"5.1.1")


def test_deleted_member_no_longer_receives(teachers: MailSystem) -> None:
    """After a member's account is deleted the group reaches the others, with no bounce for the deleted one."""
    m = teachers
    _cli(m, "user", "del", f"gus@{DOMAIN}")
    before = len(m.sink.messages)
    raw = _raw("dad@remote.example", "after gus left")
    assert [code for code, _ in _mx(m, raw, [f"leavers@{DOMAIN}"])] == [250, 250]
    assert len(wait_for(lambda: _imap_copies(m, f"gail@{DOMAIN}", "after gus left"))) == 1
    time.sleep(1.0)
    assert not [r for r in m.sink.messages[before:] if b"after gus left" in r.data]
    # Once the last member is gone, the group is refused like an empty one.
    _cli(m, "user", "del", f"gail@{DOMAIN}")
    ((code, text),) = _mx(m, b"", [f"leavers@{DOMAIN}"])
    assert code == 550 and text.startswith(b"5.2.4")


def test_member_over_quota_is_bounced_others_delivered(teachers: MailSystem) -> None:
    """MX to a group with one full member: 250, the other member gets it, a DSN 5.2.2 for that member goes back."""
    m = teachers
    before = len(m.sink.messages)
    raw = _raw("dad@remote.example", "too big for flo", "x" * 70 + "\r\n") + (b"y" * 70 + b"\r\n") * 40
    assert [code for code, _ in _mx(m, raw, [f"fullbox@{DOMAIN}"])] == [250, 250]
    assert len(wait_for(lambda: _imap_copies(m, f"fred@{DOMAIN}", "too big for flo"))) == 1
    assert not inbox(m.inst.dir, f"flo@{DOMAIN}")
    dsn = wait_for(lambda: [r for r in m.sink.messages[before:] if b"flo@school.example" in r.data])
    assert dsn and dsn[0].rcpt_tos == ["dad@remote.example"]
    assert b"Status: 5.2.2" in dsn[0].data and b"Final-Recipient: rfc822; flo@school.example" in dsn[0].data
    assert b"Original-Recipient: rfc822; fullbox@school.example" in dsn[0].data
    assert b"fred@school.example" not in dsn[0].data  # only the refusing member is reported


def test_group_counts_once_against_the_recipient_limit() -> None:
    """A group with more members than max_recipients is one RCPT: accepted, and the envelope keeps the list address."""
    settings = make_settings("mx", max_recipients=2)
    members = [bytes([i]) * 16 for i in range(10)]
    settings.transport.groups["all-staff@school.example"] = members
    settings.transport.groups["nobody@school.example"] = []
    conn = Conn(settings)
    conn.send("EHLO mx.remote.example\r\n")
    assert conn.codes("MAIL FROM:<dad@remote.example>\r\n") == ["250 2.1.0"]
    assert conn.codes("RCPT TO:<All-Staff@school.example>\r\n") == ["250 2.1.5"]
    assert conn.codes("RCPT TO:<nobody@school.example>\r\n") == ["550 5.2.4"]
    assert conn.codes("RCPT TO:<bob@school.example>\r\n") == ["250 2.1.5"]
    assert conn.codes("RCPT TO:<alice@school.example>\r\n") == ["452 4.5.3"]
    recipients = conn.proto.session.transaction.recipients
    assert [(r.address, r.group) for r in recipients] == [("All-Staff@school.example", True),
                                                          ("bob@school.example", False)]


def test_group_emptied_between_rcpt_and_data(teachers: MailSystem) -> None:
    """A group that loses its last member after RCPT: the MX refuses at DATA (550 5.2.4), submission bounces (5.2.4)."""
    m = teachers
    with smtplib.SMTP("127.0.0.1", m.port("mx"), timeout=20) as client:
        client.ehlo("mx.remote.example")
        assert client.mail("dad@remote.example")[0] == 250
        assert client.rcpt(f"race-one@{DOMAIN}")[0] == 250
        _cli(m, "user", "del", f"rita@{DOMAIN}")
        code, text = client.data(_raw("dad@remote.example", "race one"))
        assert code == 550 and text.startswith(b"5.2.4")
    with smtplib.SMTP("localhost", m.port("submission"), timeout=20) as client:
        client.starttls(context=tls_context(m))
        client.login(f"otto@{DOMAIN}", TEACHERS[f"otto@{DOMAIN}"])
        assert client.mail(f"otto@{DOMAIN}")[0] == 250
        assert client.rcpt(f"race-two@{DOMAIN}")[0] == 250
        _cli(m, "user", "del", f"rob@{DOMAIN}")
        raw = f"From: otto@{DOMAIN}\r\nTo: race-two@{DOMAIN}\r\nSubject: race two\r\n\r\nHello\r\n".encode()
        assert client.data(raw)[0] == 250
    dsn = wait_for(lambda: [x for x in _imap_copies(m, f"otto@{DOMAIN}", "Undelivered Mail") if b"race two" in x])
    assert dsn and b"Status: 5.2.4" in dsn[0] and b"Final-Recipient: rfc822; race-two@school.example" in dsn[0]
