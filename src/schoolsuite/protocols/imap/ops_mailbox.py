"""Mailbox commands: CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE LIST LSUB STATUS NAMESPACE, QUOTA, APPEND.

RFC 3501 §6.3, RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154
SPECIAL-USE, RFC 3348 CHILDREN, RFC 2342 NAMESPACE, RFC 9208 QUOTA,
RFC 4315 UIDPLUS (APPENDUID), RFC 7889 APPENDLIMIT, RFC 8438 STATUS=SIZE.
"""

from __future__ import annotations

import re
import time
from email.utils import parsedate_tz
from typing import Any

from ...storage import accounts as directory
from ...storage import mail, mime
from ...storage import quota as account_quota
from . import render
from .errors import Bad, No
from .grammar import Append, ListCommand, MailboxCommand, Quota, Rename, Status
from .session import Session

NAMESPACE = b'* NAMESPACE (("" "/")) NIL NIL\r\n'


def _refusal(exc: Exception, name: str = "") -> No:
    """Storage refusals → NO with the RFC 5530 response code."""
    if isinstance(exc, mail.MailboxNotFound):
        return No("Mailbox does not exist", "NONEXISTENT")
    if isinstance(exc, mail.MailboxExists):
        return No("Mailbox already exists", "ALREADYEXISTS")
    if isinstance(exc, mail.QuotaExceeded):
        return No("Quota exceeded", "OVERQUOTA")
    if isinstance(exc, mail.TooManyKeywords):
        return No("Too many keywords", "LIMIT")
    if isinstance(exc, mail.MailboxRefused):
        return No(str(exc), "CANNOT")
    raise exc


def _refused(failure: Any) -> Any:
    failure.trap(mail.MailError)
    raise _refusal(failure.value)


def do_create(s: Session, cmd: MailboxCommand) -> Any:
    name = cmd.mailbox.rstrip("/")  # RFC 3501 §6.3.3: a trailing delimiter only declares intent
    if mail.canonical_name(name) == "INBOX":
        raise No("INBOX exists already", "ALREADYEXISTS")
    if not mail.valid_name(name):
        raise No("Invalid mailbox name", "CANNOT")
    if cmd.special_use is not None and cmd.special_use not in mail.SPECIAL_USES:
        raise No("Unknown special use", "USEATTR")  # RFC 6154 §6

    def run(user: Any, txn: Any) -> None:
        mail.create_mailbox(user, name, cmd.special_use)

    return s.write(run).addCallbacks(lambda _: "CREATE completed", _refused)


def do_delete(s: Session, cmd: MailboxCommand) -> Any:
    def run(user: Any, txn: Any) -> None:
        box = mail.find_mailbox(user, cmd.mailbox)
        if box is not None and box.noselect and mail.children(user, box.name):
            # RFC 3501 §6.3.4 and RFC 9051 §6.3.5: an error; RFC 9051 §7.1 gives it a response code.
            raise No("Mailbox has children; delete them first", "HASCHILDREN")
        mail.delete_mailbox(user, cmd.mailbox)
        if box is not None:
            s.notify(txn, (box.id,))

    def done(_: Any) -> str:
        selected = s.selected
        if selected is not None and mail.canonical_name(cmd.mailbox) == selected.name:
            s.selected = None  # the client deleted its own selected mailbox: it is deselected
        return "DELETE completed"

    return s.write(run).addCallbacks(done, _refused)


def do_rename(s: Session, cmd: Rename) -> Any:
    def run(user: Any, txn: Any) -> None:
        mail.rename_mailbox(user, cmd.old, cmd.new)

    def done(_: Any) -> str:
        if s.selected is not None and s.selected.name == mail.canonical_name(cmd.old):
            s.selected.name = mail.canonical_name(cmd.new)
        return "RENAME completed"

    return s.write(run).addCallbacks(done, _refused)


def do_subscribe(s: Session, cmd: MailboxCommand) -> Any:
    subscribe = cmd.name == "SUBSCRIBE"

    def run(user: Any, txn: Any) -> None:
        if subscribe:
            if mail.find_mailbox(user, cmd.mailbox) is None:
                raise mail.MailboxNotFound("no such mailbox")
            mail.subscribe(user, cmd.mailbox)
        else:
            mail.unsubscribe(user, cmd.mailbox)

    return s.write(run).addCallbacks(lambda _: f"{cmd.name} completed", _refused)


# -- LIST ------------------------------------------------------------------------


def _pattern(reference: str, pattern: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8: ``*`` matches everything, ``%`` everything but the delimiter."""
    if pattern.startswith("/") or not reference:
        full = pattern
    else:
        full = reference + pattern if reference.endswith("/") else reference + "/" + pattern
    out = []
    for ch in full:
        out.append(".*" if ch == "*" else "[^/]*" if ch == "%" else re.escape(ch))
    regex = "".join(out)
    if full[:6].upper() == "INBOX/" or full.upper() == "INBOX":
        regex = "(?i:INBOX)" + "".join(out[5:])
    return re.compile(regex + r"\Z", re.DOTALL)


_SELECT_OPTIONS = frozenset(("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"))
_RETURN_OPTIONS = frozenset(("SUBSCRIBED", "CHILDREN", "STATUS", "SPECIAL-USE"))


def do_list(s: Session, cmd: ListCommand) -> Any:
    lsub = cmd.name == "LSUB"
    unknown = set(cmd.select_options) - _SELECT_OPTIONS
    if unknown or set(cmd.return_options) - _RETURN_OPTIONS:
        raise Bad("Unknown LIST option")  # RFC 5258 §3
    if cmd.patterns == ("",) and not cmd.select_options and not lsub:
        # RFC 3501 §6.3.8: the hierarchy delimiter and root.
        s.send(b'* LIST (\\Noselect) "/" ""\r\n')
        return "LIST completed"
    subscribed_only = lsub or "SUBSCRIBED" in cmd.select_options
    special_only = "SPECIAL-USE" in cmd.select_options
    return_subscribed = "SUBSCRIBED" in cmd.return_options or subscribed_only
    recursive = "RECURSIVEMATCH" in cmd.select_options
    if recursive and not (subscribed_only or special_only):
        raise Bad("RECURSIVEMATCH needs another selection option")
    if s.rev2 and "RECENT" in cmd.status_items:
        raise Bad("RECENT is not a STATUS item in IMAP4rev2")  # RFC 9051 §6.3.11 (as for STATUS)
    with s.read() as txn:
        user = s.user(txn)
        boxes = mail.list_mailboxes(user)
        subs = mail.subscriptions(user)
    by_name = {m.name: m for m in boxes}
    names = set(by_name)
    patterns = [_pattern(cmd.reference, p) for p in cmd.patterns]
    candidates = set(names)
    if subscribed_only:
        candidates |= subs
        if recursive:
            for name in subs:
                candidates.update(mail.parent_names(name))
    lines = []
    status_boxes = []
    seen: set[str] = set()
    for name in sorted(candidates, key=lambda n: (n != "INBOX", n)):
        if not any(p.match(name) for p in patterns):
            continue
        box = by_name.get(name)
        attrs: list[str] = []
        if box is None:
            attrs.append("\\NonExistent")
        elif box.noselect:
            attrs.append("\\Noselect")
        has_children = any(n.startswith(name + "/") for n in names)
        attrs.append("\\HasChildren" if has_children else "\\HasNoChildren")
        if name in subs and return_subscribed:
            attrs.append("\\Subscribed")
        # RFC 6154 §2: special-use attributes are returned by every LIST.
        if box is not None and box.special_use:
            attrs.append(box.special_use)
        extra = b""
        if recursive and subscribed_only:
            # RFC 5258 §4: a subscribed descendant the patterns do not match shows as CHILDINFO.
            if any(n.startswith(name + "/") and not any(p.match(n) for p in patterns) for n in subs):
                extra = b' (CHILDINFO ("SUBSCRIBED"))'
        if subscribed_only and name not in subs and not extra:
            continue
        if special_only and (box is None or not box.special_use):
            continue
        if lsub and box is not None and box.noselect:
            attrs = ["\\Noselect"]
        seen.add(name)
        lines.append(b"* %s (%s) \"/\" %s%s\r\n" % (cmd.name.encode(), " ".join(attrs).encode(),
                                                    render.mailbox_name(name, s.utf8), extra))
        if cmd.status_items and box is not None and not box.noselect:
            status_boxes.append(box)
    # LSUB %: a parent of a subscribed mailbox is listed \Noselect (RFC 3501 §6.3.9).
    if lsub:
        for name in sorted(subs):
            for parent in mail.parent_names(name):
                if parent not in seen and parent not in subs and any(p.match(parent) for p in patterns) \
                        and any(c in "".join(cmd.patterns) for c in "%"):
                    seen.add(parent)
                    lines.append(b'* LSUB (\\Noselect) "/" %s\r\n' % render.mailbox_name(parent, s.utf8))
    for line in lines:
        s.send(line)
    for box in status_boxes:  # RFC 5819
        s.send(status_line(s, box, cmd.status_items))
    return f"{cmd.name} completed"


# -- STATUS -------------------------------------------------------------------------


def status_line(s: Session, box: mail.Mailbox, items: tuple[str, ...]) -> bytes:
    values = []
    for item in items:
        if item == "MESSAGES":
            value = box.messages
        elif item == "RECENT":
            with s.read() as txn:
                value = len(mail.load_index(s.user(txn), box.id, box.recent_uid).uids)
        elif item == "UIDNEXT":
            value = box.uidnext
        elif item == "UIDVALIDITY":
            value = box.uidvalidity
        elif item == "UNSEEN":
            value = box.unseen
        elif item == "HIGHESTMODSEQ":
            value = box.highestmodseq
            s.condstore = True
        elif item == "SIZE":
            value = box.size
        elif item == "DELETED":
            value = box.deleted
        elif item == "APPENDLIMIT":
            value = s.limits.max_message_size
        else:
            continue
        values.append(b"%s %d" % (item.encode(), value))
    return b"* STATUS %s (%s)\r\n" % (render.mailbox_name(box.name, s.utf8), b" ".join(values))


def do_status(s: Session, cmd: Status) -> Any:
    if s.rev2 and "RECENT" in cmd.items:
        raise Bad("RECENT is not a STATUS item in IMAP4rev2")
    with s.read() as txn:
        box = mail.find_mailbox(s.user(txn), cmd.mailbox)
    if box is None or box.noselect:
        raise No("Mailbox does not exist", "NONEXISTENT")
    s.send(status_line(s, box, cmd.items))
    return "STATUS completed"


def do_namespace(s: Session, cmd: Any) -> Any:
    s.send(NAMESPACE)
    return "NAMESPACE completed"


# -- QUOTA (RFC 9208) --------------------------------------------------------------


def _quota_line(s: Session) -> bytes:
    with s.read() as txn:
        account = directory.get_account(txn, s.account_id)
        # One quota for mail and files (storage/quota.py): report what counts against it.
        used = account_quota.used_bytes(s.user(txn))
    resources = []
    if account is not None and account.quota is not None:
        # RFC 9208 §5.1: STORAGE in units of 1024 octets.
        resources.append(b"STORAGE %d %d" % ((used + 1023) // 1024, account.quota // 1024))
    return b'* QUOTA "" (%s)\r\n' % b" ".join(resources)


def do_getquota(s: Session, cmd: Quota) -> Any:
    if cmd.root != "":
        raise No("No such quota root", "NONEXISTENT")
    s.send(_quota_line(s))
    return "GETQUOTA completed"


def do_getquotaroot(s: Session, cmd: MailboxCommand) -> Any:
    with s.read() as txn:
        box = mail.find_mailbox(s.user(txn), cmd.mailbox)
    if box is None:
        raise No("Mailbox does not exist", "NONEXISTENT")
    s.send(b'* QUOTAROOT %s ""\r\n' % render.mailbox_name(box.name, s.utf8))
    s.send(_quota_line(s))
    return "GETQUOTAROOT completed"


def do_setquota(s: Session, cmd: Quota) -> Any:
    raise No("Quotas are set by the school's administrator", "NOPERM")


# -- APPEND ----------------------------------------------------------------------------


def parse_date_time(text: str) -> float:
    """RFC 3501 ``date-time`` ``dd-Mon-yyyy hh:mm:ss +zzzz`` → POSIX seconds."""
    m = re.fullmatch(r" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-]\d{4})", text)
    if not m:
        raise Bad("Invalid date-time")
    parsed = parsedate_tz(f"{m.group(1)} {m.group(2)} {m.group(3)} {m.group(4)}:{m.group(5)}:{m.group(6)} "
                          f"{m.group(7)}")
    if parsed is None:
        raise Bad("Invalid date-time")
    import calendar

    seconds = calendar.timegm(parsed[:6] + (0, 0, 0)) - (parsed[9] or 0)  # type: ignore[operator]
    return float(seconds)


def do_append(s: Session, cmd: Append) -> Any:
    limit = s.limits.max_message_size
    for message in cmd.messages:
        if len(message.data) > limit:
            raise No("Message too large", "TOOBIG")
        if not message.data:
            raise No("Empty message", "CANNOT")
        for flag in message.flags:
            if flag.startswith("\\") and flag.lower() not in {f.lower() for f in mail.SYSTEM_FLAGS} \
                    and flag != "\\Recent":
                raise Bad("Invalid system flag")
    dates = [parse_date_time(m.date) if m.date else time.time() for m in cmd.messages]
    structures = [mime.parse(m.data) for m in cmd.messages]
    account_id = s.account_id

    def run(user: Any, txn: Any) -> tuple[int, list[int]]:
        box = mail.find_mailbox(user, cmd.mailbox)
        if box is None or box.noselect:
            raise mail.MailboxNotFound("no such mailbox")
        account = directory.get_account(txn, account_id)
        quota = None if account is None else account.quota
        uids = []
        for message, date, structure in zip(cmd.messages, dates, structures):
            mask = mail.flags_to_mask(user, message.flags, create=True)
            uids.append(mail.append(user, box, message.data, flags=mask, internal_date=date, quota=quota,
                                    structure=structure))
        mail.save_mailbox(user, box)
        s.notify(txn, (box.id,))
        return box.uidvalidity, uids

    def refused(failure: Any) -> Any:
        failure.trap(mail.MailError)
        if failure.check(mail.MailboxNotFound):
            raise No("Mailbox does not exist", "TRYCREATE")  # RFC 3501 §6.3.11
        raise _refusal(failure.value)

    def done(result: tuple[int, list[int]]) -> str:
        uidvalidity, uids = result
        # RFC 4315 §3 APPENDUID
        return f"[APPENDUID {uidvalidity} {render.sequence_set(uids).decode()}] APPEND completed"

    return s.write(run).addCallbacks(done, refused)

