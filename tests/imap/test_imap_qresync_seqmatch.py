"""QRESYNC SELECT with sequence match data (RFC 7162 §3.2.5.2): it narrows VANISHED (EARLIER)."""

from __future__ import annotations

import re

from schoolsuite.storage import mail

from imap_helpers import Conn, message


def _mailbox_of_six(services, conn, delivery, alice) -> tuple[str, int]:
    """Six messages (uids 1-6), QRESYNC on; the client's UIDVALIDITY and HIGHESTMODSEQ before any expunge."""
    for n in range(6):
        delivery.deliver(alice, message(f"m{n}"))
    conn.cmd("e ENABLE QRESYNC")
    select = " ".join(conn.cmd("s SELECT INBOX"))
    conn.cmd("u UNSELECT")
    uidvalidity = re.search(r"UIDVALIDITY (\d+)", select).group(1)
    return uidvalidity, int(re.search(r"HIGHESTMODSEQ (\d+)", select).group(1))


def _expunge(services, *uids: int) -> None:
    other = Conn(services)
    other.login()
    other.cmd("s SELECT INBOX")
    other.cmd(f"a UID STORE {','.join(map(str, uids))} +FLAGS.SILENT (\\Deleted)")
    other.cmd("b EXPUNGE")


def _vanished(reply: list[str]) -> str | None:
    lines = [x for x in reply if x.startswith("* VANISHED (EARLIER) ")]
    assert len(lines) <= 1, reply
    return lines[0][len("* VANISHED (EARLIER) "):] if lines else None


def test_without_seq_match_every_expunge_since_modseq(services, conn, delivery, alice):
    """The baseline: with no sequence match data both expunges after the client's MODSEQ are reported."""
    uidvalidity, highest = _mailbox_of_six(services, conn, delivery, alice)
    _expunge(services, 2, 5)
    reply = conn.cmd(f"t SELECT INBOX (QRESYNC ({uidvalidity} {highest} 1:6))")
    assert _vanished(reply) == "2,5" and reply[-1].startswith("t OK")


def test_matching_pairs_hide_expunges_the_client_knows(services, conn, delivery, alice):
    """Pairs (1,1) (2,3) (3,4) match the mailbox [1,3,4,6]: the client knows every expunge up to UID 4."""
    uidvalidity, highest = _mailbox_of_six(services, conn, delivery, alice)
    _expunge(services, 2, 5)
    reply = conn.cmd(f"t SELECT INBOX (QRESYNC ({uidvalidity} {highest} 1:6 (1:3 1,3:4)))")
    assert _vanished(reply) == "5"


def test_first_mismatch_ends_the_known_range(services, conn, delivery, alice):
    """Pairs (1,1) (2,3) (4,5): the third does not match (message 4 is UID 6), so VANISHED starts above UID 3."""
    uidvalidity, highest = _mailbox_of_six(services, conn, delivery, alice)
    _expunge(services, 2, 5)
    reply = conn.cmd(f"t SELECT INBOX (QRESYNC ({uidvalidity} {highest} 1:6 (1:2,4 1,3,5)))")
    assert _vanished(reply) == "5"
    reply = conn.cmd(f"v SELECT INBOX (QRESYNC ({uidvalidity} {highest} 1:6 (1:2 1:2)))")
    assert _vanished(reply) == "2,5"  # message 2 is UID 3 now: only (1,1) matches


def test_pairs_beyond_the_mailbox_do_not_match(services, conn, delivery, alice):
    """A message number past the end of the mailbox is a mismatch, not an error."""
    uidvalidity, highest = _mailbox_of_six(services, conn, delivery, alice)
    _expunge(services, 2, 5)
    reply = conn.cmd(f"t SELECT INBOX (QRESYNC ({uidvalidity} {highest} 1:6 (9 9)))")
    assert _vanished(reply) == "2,5" and reply[-1].startswith("t OK")


def test_seq_match_narrows_the_superset_after_pruning(services, conn, delivery, alice, monkeypatch):
    """When the expunge records behind the client's MODSEQ were pruned, every missing UID is a candidate; the
    matching pairs still cut off what the client knows (the case §3.2.5.2 exists for)."""
    monkeypatch.setattr(mail, "MAX_TOMBSTONES", 1)
    uidvalidity, highest = _mailbox_of_six(services, conn, delivery, alice)
    _expunge(services, 2)
    _expunge(services, 5)
    _expunge(services, 6)
    reply = conn.cmd(f"t SELECT INBOX (QRESYNC ({uidvalidity} {highest} 1:6))")
    assert _vanished(reply) == "2,5:6"
    reply = conn.cmd(f"v SELECT INBOX (QRESYNC ({uidvalidity} {highest} 1:6 (2:3 3:4)))")
    assert _vanished(reply) == "5:6"


def test_malformed_seq_match_is_bad(services, conn, delivery, alice):
    """Sets of different sizes, "*" or "$" in sequence match data are BAD, and nothing is selected."""
    uidvalidity, highest = _mailbox_of_six(services, conn, delivery, alice)
    assert conn.cmd(f"a SELECT INBOX (QRESYNC ({uidvalidity} {highest} 1:6 (1:3 1:2)))")[-1].startswith("a BAD")
    assert conn.cmd(f"b SELECT INBOX (QRESYNC ({uidvalidity} {highest} 1:6 (1:* 1:6)))")[-1].startswith("b BAD")
    assert conn.cmd(f"c SELECT INBOX (QRESYNC ({uidvalidity} {highest} 1:6 ($ 1)))")[-1].startswith("c BAD")
    assert conn.cmd("d FETCH 1 FLAGS") == ["d BAD No mailbox selected"]
