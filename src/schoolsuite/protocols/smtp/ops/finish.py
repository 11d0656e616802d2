"""The end of DATA or the last BDAT chunk: checks, header additions, then commit.

Nothing is acknowledged before it is durable: ``250`` is sent after
``MailTransport.submit``/``receive`` fired, i.e. after the commit.
"""

from __future__ import annotations

import email.utils
import os

from twisted.internet import defer
from twisted.logger import Logger

from ....services import smtp_metrics as metrics
from ....services.mailauth import authserv_id_of
from ....services.outbound import limit_line_length
from .. import message as msg
from ..errors import BadSequence, Refused, SMTPReply, TempFailure
from ..session import Reply, Session, Transaction

log = Logger(namespace="schoolsuite.smtp")


class MessageRefused(SMTPReply):
    """The message as a whole is refused."""

    code, enhanced = 550, "5.6.0"


def finish(session: Session, data: bytes) -> "Reply | defer.Deferred[Reply]":
    """Check and commit the message of the current transaction; the transaction ends either way."""
    transaction = session.transaction
    session.reset()
    if transaction is None or not transaction.recipients:
        raise BadSequence("No valid recipients")
    listener = session.settings.listener
    try:
        _check(session, transaction, data)
    except SMTPReply as exc:
        metrics.SMTP_MESSAGES.labels(listener, type(exc).__name__.lower()).inc()
        raise
    if session.submission:
        d = defer.maybeDeferred(_submit, session, transaction, data)
    else:
        d = defer.maybeDeferred(_receive, session, transaction, data)

    def counted(reply: Reply) -> Reply:
        metrics.SMTP_MESSAGES.labels(listener, "accepted").inc()
        session.messages += 1
        # One line per accepted message for the operator: where, how big, how many recipients, which id.
        log.info("{listener}: accepted {size} bytes for {count} recipient(s) from {client}: {reply}",
                 listener=listener, size=len(data), count=len(transaction.recipients), client=session.client_ip,
                 reply=reply.text)
        return reply

    return d.addCallback(counted)


class BareLineEnding(MessageRefused):
    """RFC 5321 §2.3.8 and the 2023 SMTP smuggling disclosures: only CRLF ends a line."""

    code, enhanced, text = 550, "5.5.2", "Bare <CR> or <LF> in message; lines must end with <CR><LF>"


class TooBig(MessageRefused):
    code, enhanced, text = 552, "5.3.4", "Message size exceeds fixed maximum message size"


class EightBit(MessageRefused):
    """RFC 6152 §3: 8-bit octets need BODY=8BITMIME (or SMTPUTF8, RFC 6531 §3.1)."""

    code, enhanced, text = 554, "5.6.1", "8-bit data requires BODY=8BITMIME"


def _check(session: Session, transaction: Transaction, data: bytes) -> None:
    if transaction.too_big or len(data) > session.settings.max_size:
        raise TooBig()
    found = msg.check_bytes(data)
    if found.bare_line_ending:
        raise BareLineEnding()
    if found.nul:
        raise MessageRefused("NUL octets are not allowed in a message", enhanced="5.6.0")
    mail = transaction.mail
    if found.eight_bit and mail.body != "8BITMIME" and not mail.smtputf8:
        raise EightBit()


def _with_protocol(session: Session, utf8: bool) -> str:
    """RFC 3848 / RFC 6531 §3.7.3 protocol names for the Received field."""
    base = "UTF8SMTP" if utf8 else ("ESMTP" if session.extended else "SMTP")
    return base + ("S" if session.tls else "") + ("A" if session.principal is not None else "")


def _received(session: Session, transaction: Transaction, ident: str, reveal: bool) -> str:
    # RFC 5321 §4.4: From-domain, By-domain, With, ID, For, date-time.
    # Hidden: neither the address nor the client's own name (often a laptop's) leaves the school;
    # "submission.invalid" keeps the field's From-domain syntax (RFC 2606 §2: .invalid is reserved).
    helo = session.helo if reveal else "submission.invalid"
    client = f"[{session.client_ip}]" if reveal else "authenticated sender"
    recipients = transaction.recipients
    for_clause = f" for <{recipients[0].address}>" if len(recipients) == 1 else ""
    return (f"Received: from {helo} ({client}) by {session.settings.hostname} (schoolsuite) "
            f"with {_with_protocol(session, transaction.mail.smtputf8)} id {ident}{for_clause}; "
            f"{email.utils.formatdate(localtime=False)}")


@defer.inlineCallbacks
def _submit(session: Session, transaction: Transaction, data: bytes):  # type: ignore[no-untyped-def]
    settings = session.settings
    header, _ = msg.split_header(data)
    senders = msg.from_addresses(header)
    # The From: header must name only the account's own addresses (spoofing defence).
    if not senders or any(a not in session.own_addresses for a in senders):
        metrics.SMTP_REJECTIONS.labels(settings.listener, "from_header").inc()
        raise Refused("From: header must be your own address or one of your aliases")
    additions = []
    if not msg.has_field(header, "date"):  # RFC 6409 §8.2-8.3: the MSA may add Date and Message-ID
        additions.append(f"Date: {email.utils.formatdate(localtime=False)}")
    if not msg.has_field(header, "message-id"):
        additions.append(f"Message-ID: <{os.urandom(12).hex()}@{settings.hostname}>")
    if additions:
        data = msg.append_fields(data, *additions)
    domain = senders[0].rpartition("@")[2]
    transport = settings.transport
    # Lines over 998 octets are broken now, before signing, so that relaying keeps the DKIM signature valid.
    data = yield transport.sign(limit_line_length(data), domain)
    ident = os.urandom(6).hex()
    data = msg.prepend(data, _received(session, transaction, ident, settings.reveal_client))
    mail = transaction.mail
    try:
        result = yield transport.submit(session.principal.account_id, mail.sender, transaction.recipients, data,
                                        envid=mail.envid, ret=mail.ret, smtputf8=mail.smtputf8, body=mail.body)
    except SMTPReply:
        raise
    except Exception:
        raise _fault("submission commit failed") from None
    queued = f" as {result.queue_id}" if result.queue_id else ""
    return Reply(250, "2.0.0", f"Ok: queued{queued}")


@defer.inlineCallbacks
def _receive(session: Session, transaction: Transaction, data: bytes):  # type: ignore[no-untyped-def]
    settings = session.settings
    transport = settings.transport
    # RFC 8601 §5: remove Authentication-Results that claim to be ours before adding our own.
    own = settings.hostname.lower()
    data = msg.remove_fields(data, "authentication-results", lambda value: authserv_id_of(value) != own)
    header, _ = msg.split_header(data)
    try:
        verdicts = yield transport.verify(data, session.client_ip, session.helo or "", transaction.mail.sender,
                                          msg.from_domain(header))
    except Exception:
        raise _fault("inbound verification failed") from None
    metrics.SMTP_AUTH_VERDICTS.labels("spf", verdicts.spf).inc()
    for result in verdicts.dkim or ():
        metrics.SMTP_AUTH_VERDICTS.labels("dkim", result.result).inc()
    metrics.SMTP_AUTH_VERDICTS.labels("arc", verdicts.arc).inc()
    metrics.SMTP_AUTH_VERDICTS.labels("dmarc", verdicts.dmarc).inc()
    if verdicts.dmarc_reject and settings.dmarc_enforce:  # RFC 7489 §6.6.4 / §10.3
        metrics.SMTP_REJECTIONS.labels(settings.listener, "dmarc").inc()
        raise Refused(f"Rejected by the DMARC policy of {verdicts.from_domain}")
    ident = os.urandom(6).hex()
    data = msg.prepend(data, _received(session, transaction, ident, True), verdicts.header(settings.hostname))
    mail = transaction.mail
    # RFC 7489 §6.3 p=quarantine: accepted, but filed as suspicious (the Junk mailbox).
    quarantine = verdicts.dmarc == "fail" and verdicts.dmarc_policy == "quarantine"
    try:
        results = yield transport.receive(transaction.recipients, data, sender=mail.sender, envid=mail.envid,
                                          ret=mail.ret, mailbox="Junk" if quarantine else "INBOX")
    except Exception:
        raise _fault("local delivery failed") from None
    if not results:  # every recipient was a group that lost its last member after RCPT (RFC 3463 X.2.4)
        raise SMTPReply("Group has no members", code=550, enhanced="5.2.4")
    failures = [r for r in results.values() if isinstance(r, Exception)]
    if failures and len(failures) == len(results):
        if all(type(f).__name__ == "QuotaExceeded" for f in failures):
            raise SMTPReply("Mailbox full", code=452, enhanced="4.2.2")  # RFC 3463: temporary, retry later
        raise SMTPReply("Mailbox unavailable", code=550, enhanced="5.2.1")
    if failures:
        log.info("MX message {ident}: {n} of {total} local recipients refused it (bounce queued)",
                 ident=ident, n=len(failures), total=len(results))
    return Reply(250, "2.0.0", f"Ok: delivered as {ident}")


def _fault(what: str) -> TempFailure:
    from ..errors import ServerFault

    fault = ServerFault()
    log.failure("{what}: incident={incident}", None, what=what, incident=fault.incident)
    return fault
