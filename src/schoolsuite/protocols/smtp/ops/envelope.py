"""MAIL FROM, RCPT TO, RSET: the envelope (RFC 5321 §4.1.1.2-5) and its policy.

Submission: the sender must be the logged-in account's address or one of its
aliases; any recipient (local ones must exist). MX: any sender, recipients
only at local domains and existing accounts or groups — never an open relay.

A group's list address (SCIM groups) is one recipient here — it counts once
against ``max_recipients``, as Postfix counts envelope recipients before
virtual alias expansion — and is expanded to its members at delivery
(services/transport.py). Groups cannot contain groups.
"""

from __future__ import annotations

from ....services.transport import Recipient
from ..errors import BadSequence, Refused, SMTPReply, UnknownParameter
from ..grammar import MailFrom, RcptTo
from ..session import Reply, Session, Transaction
from .auth import AuthRequired


class EmptyGroup(SMTPReply):
    """RFC 3463 §3.3 X.2.4 "Mailing list expansion problem": the list has no one to deliver to."""

    code, enhanced, text = 550, "5.2.4", "Group has no members"


class NonAsciiAddress(SMTPReply):
    """RFC 6531 §3.5: a UTF-8 address needs SMTPUTF8 in MAIL."""

    code, enhanced, text = 553, "5.6.7", "Non-ASCII address requires SMTPUTF8"


def mail(session: Session, command: MailFrom) -> Reply:
    settings = session.settings
    if session.helo is None:
        raise BadSequence("Send EHLO first")
    if session.submission and session.principal is None:
        raise AuthRequired()
    if session.transaction is not None:
        raise BadSequence("Nested MAIL command")
    if not session.extended and (command.size is not None or command.body or command.smtputf8 or command.ret
                                 or command.envid):
        raise UnknownParameter("Parameters need EHLO")  # RFC 5321 §4.1.1.11
    if command.size is not None and command.size > settings.max_size:
        raise SMTPReply("Message size exceeds fixed maximum message size", code=552, enhanced="5.3.4")  # RFC 1870 §6.1
    if not command.sender.isascii() and not command.smtputf8:
        raise NonAsciiAddress()
    if session.submission:
        if command.sender.lower() not in session.own_addresses:
            raise Refused("Sender address is not yours (use your address or an alias)")
    session.transaction = Transaction(command)
    return Reply(250, "2.1.0", "Ok")


def rcpt(session: Session, command: RcptTo) -> Reply:
    settings = session.settings
    transaction = session.transaction
    if transaction is None:
        raise BadSequence("Need MAIL before RCPT")
    if transaction.bdat:
        raise BadSequence("RCPT after BDAT")  # RFC 3030 §2: the envelope is closed once data began
    if len(transaction.recipients) >= settings.max_recipients:
        raise SMTPReply("Too many recipients", code=452, enhanced="4.5.3")  # RFC 5321 §4.5.3.1.10
    address = command.recipient
    if not address.isascii() and not transaction.mail.smtputf8:
        raise NonAsciiAddress()
    transport = settings.transport
    if address == "postmaster":  # RFC 5321 §4.5.1
        address = f"postmaster@{sorted(transport.local_domains)[0]}"
    domain = address.rpartition("@")[2]
    group = False
    if transport.is_local_domain(domain):
        account_id = transport.find_account(address)
        if account_id is None:
            members = transport.find_group(address)
            if members is None:
                raise SMTPReply("No such user here", code=550, enhanced="5.1.1")
            if not members:  # RFC 5321 §4.2.3 550 "mailbox unavailable", RFC 3463 X.2.4
                raise EmptyGroup()
            group = True
    elif session.submission:
        account_id = None
    else:
        raise Refused("Relay access denied")
    transaction.recipients.append(Recipient(address, account_id, command.notify, command.orcpt, group))
    return Reply(250, "2.1.5", "Ok")


def rset(session: Session) -> Reply:
    session.reset()
    return Reply(250, "2.0.0", "Ok")
