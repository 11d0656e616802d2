"""Command parsers: one function per command family (RFC 3501 §6, extensions as cited).

:func:`parse_command` is the entry point; ``utf8`` tells whether UTF8=ACCEPT
is enabled (mailbox names then arrive as UTF-8).
"""

from __future__ import annotations

import base64
from typing import Any

from .grammar import (
    Append, AppendMessage, Authenticate, Command, Compress, Copy, Enable, Fetch, FetchItem, Id, ListCommand,
    Login, MailboxCommand, ParseError, Quota, Reader, Rename, SAVED, Section, Select, SeqSet, Simple, Status,
    Store, UidExpunge)

_SIMPLE = frozenset(("CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT", "EXPUNGE",
                     "IDLE", "NAMESPACE"))
_MAILBOX_COMMANDS = frozenset(("DELETE", "SUBSCRIBE", "UNSUBSCRIBE", "GETQUOTAROOT", "EXAMINE", "SELECT"))
STATUS_ITEMS = frozenset(("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE",
                          "DELETED", "APPENDLIMIT"))
_FETCH_ATOMS = frozenset(("ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
                          "RFC822.TEXT", "BODYSTRUCTURE", "UID", "MODSEQ", "BODY"))
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
SORT_KEYS = frozenset(("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"))


def parse_command(data: bytes, *, utf8: bool = False) -> Command:
    """One complete command (lines and literals) → typed command; ParseError → BAD."""
    r = Reader(data)
    try:
        tag = r.tag()
    except ParseError:
        raise ParseError("missing tag") from None
    try:
        r.sp()
        name = r.atom().upper()
        uid = False
        if name == "UID":
            r.sp()
            uid = True
            name = r.atom().upper()
            if name not in ("FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE", "SORT", "THREAD"):
                raise ParseError("unknown UID command")
        command = _dispatch(r, tag, name, uid, utf8)
        r.end()
        return command
    except ParseError as exc:
        exc.tag = tag.encode("latin-1")
        raise


def _dispatch(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    if name in _SIMPLE and not uid:
        if name == "EXPUNGE" or r.at_end():
            return Simple(tag, name)
        raise ParseError(f"{name} takes no arguments")
    if uid and name == "EXPUNGE":
        r.sp()
        return UidExpunge(tag, "UID EXPUNGE", r.sequence_set())
    parser = _PARSERS.get(name)
    if parser is None:
        raise ParseError("unknown command")
    return parser(r, tag, name, uid, utf8)


def _login(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    r.sp()
    user = r.astr()
    r.sp()
    return Login(tag, name, user, r.astr())


def _authenticate(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    r.sp()
    mechanism = r.atom().upper()
    initial = None
    if r.maybe_sp():  # RFC 4959 SASL-IR
        if r.take(b"="):
            initial = b""
        else:
            raw = r.atom().encode("latin-1")
            try:
                initial = base64.b64decode(raw, validate=True)
            except ValueError:
                raise ParseError("invalid base64 initial response") from None
    return Authenticate(tag, name, mechanism, initial)


def _compress(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    r.sp()
    return Compress(tag, name, r.atom().upper())


def _enable(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    caps = []
    while r.maybe_sp():
        caps.append(r.atom().upper())
    if not caps:
        raise ParseError("ENABLE needs a capability")
    return Enable(tag, name, tuple(caps))


def _id(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    """RFC 2971: ``ID ("name" "value" ...)`` or ``ID NIL``."""
    r.sp()
    if r.take(b"NIL"):
        return Id(tag, name, None)
    r.expect(b"(")
    params = []
    while not r.take(b")"):
        if params:
            r.sp()
        key = r.string().decode("utf-8", "replace")
        r.sp()
        value = r.nstring_or_nil()
        params.append((key, None if value is None else value.decode("utf-8", "replace")))
        if len(params) > 30:
            raise ParseError("too many ID parameters")
    return Id(tag, name, tuple(params))


def _select(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    r.sp()
    mailbox = r.mailbox(utf8)
    if name not in ("SELECT", "EXAMINE"):
        special = None
        if name == "CREATE" and r.maybe_sp():  # RFC 6154 §3 CREATE-SPECIAL-USE
            r.expect(b"(")
            r.expect(b"USE")
            r.sp()
            uses = r.paren_list(r.flag)
            r.expect(b")")
            if len(uses) != 1:
                raise ParseError("one special use at a time")
            special = uses[0]
        return MailboxCommand(tag, name, mailbox, special)
    condstore = False
    qresync = None
    if r.maybe_sp():
        r.expect(b"(")
        while not r.take(b")"):
            r.maybe_sp()
            param = r.atom().upper()
            if param == "CONDSTORE":
                condstore = True
            elif param == "QRESYNC":  # RFC 7162 §3.2.5
                r.sp()
                r.expect(b"(")
                uidvalidity = r.nz_number()
                r.sp()
                modseq = r.number()
                known = None
                seqmatch = None
                if r.maybe_sp():
                    if r.peek() != b"(":
                        known = r.sequence_set()
                        r.maybe_sp()
                    if r.take(b"("):
                        a = r.sequence_set()
                        r.sp()
                        b = r.sequence_set()
                        r.expect(b")")
                        seqmatch = _seq_match(a, b)
                r.expect(b")")
                qresync = (uidvalidity, modseq, known, seqmatch)
            else:
                raise ParseError("unknown SELECT parameter")
    return Select(tag, name, mailbox, condstore, qresync)


def _seq_match(seqs: SeqSet, uids: SeqSet) -> tuple[SeqSet, SeqSet]:
    """RFC 7162 §3.2.5.2 ``seq-match-data``: message numbers and their UIDs, pairwise (no ``*`` or ``$``)."""

    def count(sequence: SeqSet) -> int:
        if sequence == SAVED or any(a is None or b is None for a, b in sequence):
            raise ParseError("sequence match data takes numbers only")
        return sum(abs(b - a) + 1 for a, b in sequence)  # type: ignore[operator]

    if count(seqs) != count(uids):
        raise ParseError("sequence match data: as many UIDs as message numbers are needed")
    return seqs, uids


def _rename(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    r.sp()
    old = r.mailbox(utf8)
    r.sp()
    return Rename(tag, name, old, r.mailbox(utf8))


def _list(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    """RFC 3501 §6.3.8 and RFC 5258 §3 (selection and return options), RFC 5819 STATUS return."""
    r.sp()
    select_opts: list[str] = []
    if name == "LIST" and r.peek() == b"(":
        select_opts = [x.upper() for x in r.paren_list(r.atom)]
        r.sp()
    reference = r.mailbox(utf8)
    r.sp()
    if r.peek() == b"(" and name == "LIST":
        patterns = tuple(r.paren_list(lambda: r.list_mailbox(utf8)))
    else:
        patterns = (r.list_mailbox(utf8),)
    return_opts: list[str] = []
    status_items: list[str] = []
    if name == "LIST" and r.maybe_sp():
        r.expect(b"RETURN")
        r.sp()
        r.expect(b"(")
        while not r.take(b")"):
            r.maybe_sp()
            opt = r.atom().upper()
            return_opts.append(opt)
            if opt == "STATUS":
                r.sp()
                status_items = [x.upper() for x in r.paren_list(r.atom)]
                if not set(status_items) <= STATUS_ITEMS:
                    raise ParseError("unknown STATUS item")
    return ListCommand(tag, name, reference, patterns, tuple(select_opts), tuple(return_opts), tuple(status_items))


def _status(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    r.sp()
    mailbox = r.mailbox(utf8)
    r.sp()
    items = tuple(x.upper() for x in r.paren_list(r.atom))
    if not items or not set(items) <= STATUS_ITEMS:
        raise ParseError("unknown STATUS item")
    return Status(tag, name, mailbox, items)


def _append(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    """RFC 3501 §6.3.11, RFC 3502 MULTIAPPEND-style repetition, RFC 3516 ``~{n}``."""
    r.sp()
    mailbox = r.mailbox(utf8)
    messages = []
    while r.maybe_sp():
        flags: tuple[str, ...] = ()
        date = None
        if r.peek() == b"(":
            flags = tuple(r.paren_list(r.flag))
            r.sp()
        if r.peek() == b'"':
            date = r.quoted().decode("latin-1")
            r.sp()
        if r.take(b"UTF8 ("):  # RFC 6855 §4
            data = r.literal()
            r.expect(b")")
        else:
            data = r.literal()
        messages.append(AppendMessage(flags, date, data))
    if not messages:
        raise ParseError("APPEND needs a message")
    return Append(tag, name, mailbox, tuple(messages))


def section(r: Reader) -> Section:
    """RFC 3501 ``section`` after ``[``, through ``]`` and an optional ``<partial>``."""
    part: list[int] = []
    specifier = ""
    fields: tuple[str, ...] = ()
    while r.peek().isdigit():
        part.append(r.nz_number())
        if not r.take(b"."):
            break
    if r.peek() != b"]":
        specifier = _section_text(r)
        if specifier in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            r.sp()
            fields = tuple(x.decode("latin-1").upper() for x in r.paren_list(r.astring))
            if not fields:
                raise ParseError("empty header list")
        elif specifier not in ("HEADER", "TEXT", "MIME"):
            raise ParseError("unknown section")
        if specifier == "MIME" and not part:
            raise ParseError("MIME needs a part number")
    r.expect(b"]")
    partial = None
    if r.take(b"<"):
        start = r.number()
        r.expect(b".")
        length = r.nz_number()
        r.expect(b">")
        partial = (start, length)
    return Section(tuple(part), specifier, fields, partial)


def _section_text(r: Reader) -> str:
    start = r.pos
    while r.pos < len(r.data) and r.data[r.pos] not in b" ]":
        r.pos += 1
    return r.data[start:r.pos].decode("latin-1").upper()


def fetch_att(r: Reader) -> list[FetchItem]:
    start = r.pos
    while r.pos < len(r.data) and r.data[r.pos] not in b" ()[\r\n":
        r.pos += 1
    name = r.data[start:r.pos].decode("latin-1").upper()
    if name in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE") and r.take(b"["):
        sec = section(r)
        if name.startswith("BINARY") and sec.specifier not in ("",):
            raise ParseError("BINARY takes a part number only")
        if name == "BINARY.SIZE" and sec.partial:
            raise ParseError("BINARY.SIZE takes no partial")
        return [FetchItem(name, sec)]
    if name in _FETCH_ATOMS:
        return [FetchItem(name)]
    raise ParseError("unknown FETCH item")


def _fetch(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    r.sp()
    seq = r.sequence_set()
    r.sp()
    items: list[FetchItem] = []
    if r.peek() == b"(":
        for group in r.paren_list(lambda: fetch_att(r)):
            items.extend(group)
    else:
        word = _peek_word(r)
        if word in _MACROS:
            r.pos += len(word)
            items = [FetchItem(x) for x in _MACROS[word]]
        else:
            items = fetch_att(r)
    changed_since = None
    vanished = False
    if r.maybe_sp():  # RFC 7162 §3.1.4, §3.2.6
        r.expect(b"(")
        while not r.take(b")"):
            r.maybe_sp()
            mod = r.atom().upper()
            if mod == "CHANGEDSINCE":
                r.sp()
                changed_since = r.number()
            elif mod == "VANISHED":
                vanished = True
            else:
                raise ParseError("unknown FETCH modifier")
        if vanished and (not uid or changed_since is None):
            raise ParseError("VANISHED needs UID FETCH and CHANGEDSINCE")
    return Fetch(tag, name, uid, seq, tuple(items), changed_since, vanished)


def _peek_word(r: Reader) -> str:
    end = r.pos
    while end < len(r.data) and r.data[end] not in b" ()[\r\n":
        end += 1
    return r.data[r.pos:end].decode("latin-1").upper()


def _store(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    r.sp()
    seq = r.sequence_set()
    r.sp()
    unchanged_since = None
    if r.take(b"("):  # RFC 7162 §3.1.3
        r.expect(b"UNCHANGEDSINCE")
        r.sp()
        unchanged_since = r.number()
        r.expect(b")")
        r.sp()
    word = _peek_word(r)
    r.pos += len(word)
    mode = {"FLAGS": "set", "+FLAGS": "add", "-FLAGS": "remove", "FLAGS.SILENT": "set",
            "+FLAGS.SILENT": "add", "-FLAGS.SILENT": "remove"}.get(word)
    if mode is None:
        raise ParseError("expected FLAGS, +FLAGS or -FLAGS")
    r.sp()
    if r.peek() == b"(":
        flags = r.paren_list(r.flag)
    else:
        flags = [r.flag()]
        while r.maybe_sp():
            flags.append(r.flag())
    return Store(tag, name, uid, seq, mode, word.endswith(".SILENT"), tuple(flags), unchanged_since)


def _copy(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    r.sp()
    seq = r.sequence_set()
    r.sp()
    return Copy(tag, name, uid, seq, r.mailbox(utf8))


def _quota(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    r.sp()
    root = r.astr()
    if name == "SETQUOTA":
        r.sp()
        r.paren_list(lambda: r.astr())
    return Quota(tag, name, root)


def _search(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    from .search_grammar import parse_search

    return parse_search(r, tag, name, uid)


def _create(r: Reader, tag: str, name: str, uid: bool, utf8: bool) -> Command:
    return _select(r, tag, name, uid, utf8)


_PARSERS: dict[str, Any] = {
    "LOGIN": _login, "AUTHENTICATE": _authenticate, "COMPRESS": _compress, "ENABLE": _enable, "ID": _id,
    "SELECT": _select, "EXAMINE": _select, "CREATE": _create, "DELETE": _select, "SUBSCRIBE": _select,
    "UNSUBSCRIBE": _select, "GETQUOTAROOT": _select, "RENAME": _rename, "LIST": _list, "LSUB": _list,
    "STATUS": _status, "APPEND": _append, "FETCH": _fetch, "STORE": _store, "COPY": _copy, "MOVE": _copy,
    "SEARCH": _search, "SORT": _search, "THREAD": _search, "GETQUOTA": _quota, "SETQUOTA": _quota,
}
