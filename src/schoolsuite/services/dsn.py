"""Delivery status notifications (RFC 3464) for the sender of a queued message.

A DSN is ``multipart/report; report-type=delivery-status`` (RFC 6522) with a
human-readable part, a ``message/delivery-status`` part, and the original
message (``message/rfc822``) or only its header (``text/rfc822-headers``)
when the sender asked for ``RET=HDRS`` (RFC 3461 §4.3).
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Iterable

from ..storage.queue import QueueEntry, QueuedRecipient

_TITLES = {
    "failed": ("Undelivered Mail Returned to Sender", "could not be delivered to one or more recipients. "
               "It has been given up on permanently."),
    "delayed": ("Delayed Mail (still being retried)", "has not yet been delivered to one or more recipients. "
                "Delivery will be retried; you do not need to resend it."),
    "relayed": ("Successful Mail Relay Report", "was handed on to the recipients' mail servers."),
    "delivered": ("Successful Mail Delivery Report", "was delivered to the recipients."),
}


def wants(recipient: QueuedRecipient, action: str) -> bool:
    """RFC 3461 §4.1: whether this recipient's NOTIFY asks for ``action``.

    Without NOTIFY the default is to report failures and delays (§4.1: the
    MTA's choice; delay warnings are customary, e.g. sendmail).
    """
    notify = set(recipient.notify)
    if "NEVER" in notify:
        return False
    if not notify:
        return action in ("failed", "delayed")
    wanted = {"failed": "FAILURE", "delayed": "DELAY", "relayed": "SUCCESS", "delivered": "SUCCESS"}[action]
    return wanted in notify


def build(hostname: str, entry: QueueEntry, message: bytes, recipients: Iterable[QueuedRecipient], action: str,
          *, now: float | None = None, retry_until: float | None = None) -> bytes:
    """The DSN for ``recipients`` of ``entry`` with the given action, as message bytes (CRLF)."""
    now = time.time() if now is None else now
    subject, sentence = _TITLES[action]
    boundary = f"=_{os.urandom(12).hex()}"
    recipients = list(recipients)
    human = [
        f"This is the mail system at {hostname}.",
        "",
        f"Your message {sentence}",
        "",
    ]
    for r in recipients:
        human.append(f"<{r.address}>: {r.last_reply or r.enhanced}")
    per_message = [f"Reporting-MTA: dns; {hostname}"]
    if entry.envid:
        per_message.append(f"Original-Envelope-Id: {entry.envid}")  # RFC 3464 §2.2.1
    per_message.append(f"Arrival-Date: {email.utils.formatdate(entry.created)}")
    blocks = ["\r\n".join(per_message)]
    for r in recipients:
        lines = []
        if r.orcpt:  # RFC 3464 §2.3.1
            kind, _, addr = r.orcpt.partition(";")
            lines.append(f"Original-Recipient: {kind}; {addr}")
        lines += [f"Final-Recipient: rfc822; {r.address}", f"Action: {action}",
                  f"Status: {r.enhanced or _default_status(action)}"]
        if r.remote:
            lines.append(f"Remote-MTA: dns; {r.remote}")
        if r.last_reply and r.last_reply[:1].isdigit():
            lines.append(f"Diagnostic-Code: smtp; {_one_line(r.last_reply)}")
        elif r.last_reply:
            lines.append(f"X-Diagnostic: {_one_line(r.last_reply)}")
        lines.append(f"Last-Attempt-Date: {email.utils.formatdate(now)}")
        if action == "delayed" and retry_until:
            lines.append(f"Will-Retry-Until: {email.utils.formatdate(retry_until)}")
        blocks.append("\r\n".join(lines))
    status = "\r\n\r\n".join(blocks) + "\r\n"
    if entry.ret == "HDRS":
        original_type = "text/rfc822-headers"
        original = message.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    else:
        original_type = "message/rfc822"
        original = message
    header = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{entry.sender}>",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(now)}",
        f"Message-ID: <{os.urandom(10).hex()}.dsn@{hostname}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    parts = [
        "\r\n".join(header) + "\r\n\r\nThis is a MIME-encapsulated message.\r\n",
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + "\r\n".join(human) + "\r\n",
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n" + status,
        f"--{boundary}\r\nContent-Type: {original_type}\r\n\r\n",
    ]
    text = "\r\n".join(parts[:3]) + "\r\n" + parts[3]
    return text.encode("utf-8") + original + f"\r\n--{boundary}--\r\n".encode()


def _default_status(action: str) -> str:
    return {"failed": "5.0.0", "delayed": "4.0.0"}.get(action, "2.0.0")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:900]
