"""One command at a time: input that arrives while a store write is pending waits, and reading stops."""

from __future__ import annotations

from imap_helpers import Conn, HeldWriter, message
from schoolsuite.storage import mail


def _with_messages(services, alice, n):
    with services.store.write() as txn:
        user = txn.user(alice)
        box = mail.find_mailbox(user, "INBOX")
        for i in range(n):
            mail.append(user, box, message(f"m{i}"), flags=mail.SEEN)
        mail.save_mailbox(user, box)


def _selected(services, alice, sessions=1):
    """Two messages in INBOX, ``sessions`` connections with it selected, and a HeldWriter in place."""
    _with_messages(services, alice, 2)
    conns = []
    for _ in range(sessions):
        c = Conn(services)
        c.login()
        c.cmd("S SELECT INBOX")
        conns.append(c)
    services.writer = HeldWriter()
    return services.writer, conns


def test_waiting_client_costs_no_pause(services, alice):
    """A client that waits for each reply never gets its connection paused and resumed."""
    writer, (c,) = _selected(services, alice)
    reply = c.send(b"A STORE 1 +FLAGS (\\Flagged)\r\n")
    assert reply == b"" and writer.held
    assert c.transport.producerState == "producing"
    writer.release()
    assert b"A OK" in c.read()
    writer.commit()
    assert c.transport.producerState == "producing"


def test_pipelined_input_waits_and_pauses_reading(services, alice):
    """Commands pipelined behind a pending STORE run after it, in order, and reading pauses meanwhile."""
    writer, (c,) = _selected(services, alice)
    assert c.send(b"A STORE 1 +FLAGS.SILENT (\\Flagged)\r\n") == b""
    assert c.send(b"B FETCH 1 (FLAGS)\r\nC NOOP\r\n") == b""  # nothing runs before A is done
    assert c.transport.producerState == "paused"
    writer.release()
    writer.commit()
    out = c.read().decode()
    assert out.index("A OK") < out.index("\\Flagged") < out.index("B OK") < out.index("C OK"), out
    assert c.transport.producerState == "producing"


def test_flag_change_answered_before_commit_next_command_waits(services, alice):
    """A STORE is answered once computed, but the connection's next command runs only after its commit."""
    writer, (c,) = _selected(services, alice)
    assert c.send(b"A STORE 1 +FLAGS.SILENT (\\Flagged)\r\n") == b""
    writer.release()
    assert c.read() == b"A OK STORE completed\r\n"  # answered; the commit is still pending
    assert c.send(b"B FETCH 1 (FLAGS)\r\n") == b""  # waits for the commit
    writer.commit()
    out = c.read().decode()
    assert "\\Flagged" in out and "B OK FETCH completed" in out, out


def test_durable_writes_answer_only_after_commit(services, alice):
    """APPEND is not answered before its write has run to the end (durable writes keep the old order)."""
    c = Conn(services)
    c.login()
    writer = services.writer = HeldWriter()
    body = message("durable")
    assert c.send(b"A APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n") == b""
    assert not writer.committing
    writer.release()
    assert b"A OK" in c.read()


def test_other_sessions_wait_for_an_answered_flag_change(services, alice):
    """Once a STORE is answered, another session of the account sees it: its command waits for the commit
    (imaptest 'expunge' and 'store' groups check exactly this order)."""
    writer, (a, b) = _selected(services, alice, sessions=2)
    assert a.send(b"A STORE 1 +FLAGS.SILENT (\\Answered)\r\n") == b""
    writer.release()
    assert a.read() == b"A OK STORE completed\r\n"
    assert b.send(b"B NOOP\r\n") == b""  # waits for A's commit
    writer.commit()
    out = b.read().decode()
    assert "* 1 FETCH (FLAGS (\\Seen \\Answered" in out and out.endswith("B OK NOOP completed\r\n"), out


def test_early_answer_never_reports_an_older_modseq(services, alice):
    """A STORE answered before its commit sends no updates read from the older snapshot: MODSEQ of a
    message never goes backwards (imaptest's stress mode checks this across sessions)."""
    import re

    writer, (a, b) = _selected(services, alice, sessions=2)
    a.send(b"E ENABLE CONDSTORE\r\n")
    b.send(b"B STORE 1 +FLAGS.SILENT (\\Answered)\r\n")
    writer.release()
    writer.commit()
    b.read()
    a.send(b"A STORE 1 +FLAGS (\\Flagged)\r\n")
    writer.release()
    answered = a.read().decode()
    writer.commit()
    later = a.send(b"N NOOP\r\n").decode()
    modseqs = [int(m) for m in re.findall(r"\* 1 FETCH \(.*?MODSEQ \((\d+)\)", answered + later)]
    assert modseqs and modseqs == sorted(modseqs), answered + later


def test_fetch_that_sets_seen_reports_it_before_the_commit(services, alice):
    """FETCH BODY[] answered before its \\Seen commit still reports \\Seen and the new MODSEQ (RFC 3501 §6.4.5)."""
    import re

    with services.store.write() as txn:
        user = txn.user(alice)
        box = mail.find_mailbox(user, "INBOX")
        mail.append(user, box, message("unread"))
        mail.save_mailbox(user, box)
    writer, (c,) = _selected(services, alice)
    c.send(b"E ENABLE CONDSTORE\r\n")
    before = int(re.search(r"MODSEQ \((\d+)\)", c.send(b"M FETCH 1 (MODSEQ)\r\n").decode()).group(1))
    c.send(b"F FETCH 1 (FLAGS MODSEQ BODY[TEXT])\r\n")
    writer.release()
    out = c.read().decode()
    assert not writer.held and writer.committing, "answered before the commit"
    assert "\\Seen" in out and int(re.search(r"MODSEQ \((\d+)\)", out).group(1)) > before, out
    writer.commit()
