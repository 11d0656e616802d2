"""One storage quota per account, shared by mail and files.

``Account.quota`` is the account's whole allowance: mail (IMAP APPEND/COPY,
SMTP delivery: RFC 9208 STORAGE) and the file space (WebDAV PUT/COPY:
RFC 4331) draw on it together, and both report the same usage, so a teacher
sees one figure in the mail client and in the file manager.
Calendar and contact items are small and bounded per collection ([dav]
limits); they are not counted.
"""

from __future__ import annotations

from . import files, mail
from .store import UserView


def used_bytes(user: UserView) -> int:
    """Bytes the account uses against its quota (mail plus files)."""
    return mail.usage(user)[0] + files.usage(user)
