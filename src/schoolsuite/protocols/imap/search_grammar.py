"""SEARCH, SORT and THREAD criteria (RFC 3501 §6.4.4, RFC 4731 ESEARCH, RFC 5256, RFC 7162 MODSEQ).

Criteria become nested tuples: ``("AND", [c...])``, ``("OR", a, b)``,
``("NOT", c)``, ``(KEY,)`` or ``(KEY, argument...)``.
"""

from __future__ import annotations

import datetime
from typing import Any

from .grammar import ParseError, Reader, Search

_NO_ARG = frozenset(("ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
                     "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN"))
_STRING_ARG = frozenset(("BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"))
_DATE_ARG = frozenset(("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"))
_NUMBER_ARG = frozenset(("LARGER", "SMALLER", "OLDER", "YOUNGER"))
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_RETURN = frozenset(("MIN", "MAX", "ALL", "COUNT", "SAVE"))  # RFC 4731, RFC 5182


def parse_date(r: Reader) -> datetime.date:
    """RFC 3501 ``date``: ``d-Mon-yyyy``, optionally quoted."""
    quoted = r.take(b'"')
    start = r.pos
    while r.pos < len(r.data) and r.data[r.pos] not in b' )"\r\n':
        r.pos += 1
    text = r.data[start:r.pos].decode("latin-1")
    if quoted:
        r.expect(b'"')
    parts = text.split("-")
    try:
        day, month, year = int(parts[0]), _MONTHS.index(parts[1].upper()) + 1, int(parts[2])
        if len(parts) != 3 or len(parts[2]) != 4:
            raise ValueError
        return datetime.date(year, month, day)
    except (ValueError, IndexError):
        raise ParseError("bad date") from None


def parse_search(r: Reader, tag: str, name: str, uid: bool) -> Search:
    r.sp()
    returns = None
    sort: list[tuple[str, bool]] = []
    algorithm = None
    charset = None
    if name == "SEARCH" and r.take(b"RETURN"):  # RFC 4731 §3
        r.sp()
        returns = tuple(x.upper() for x in r.paren_list(r.atom)) or ("ALL",)
        if not set(returns) <= _RETURN:
            raise ParseError("unknown RETURN option")
        r.sp()
    if name == "SORT":  # RFC 5256 §3
        r.expect(b"(")
        while not r.take(b")"):
            r.maybe_sp()
            reverse = False
            key = r.atom().upper()
            if key == "REVERSE":
                reverse = True
                r.sp()
                key = r.atom().upper()
            from .commands import SORT_KEYS

            if key not in SORT_KEYS:
                raise ParseError("unknown sort key")
            sort.append((key, reverse))
        if not sort:
            raise ParseError("empty sort criteria")
        r.sp()
        charset = r.astr().upper()
        r.sp()
    elif name == "THREAD":
        algorithm = r.atom().upper()
        if algorithm not in ("REFERENCES", "ORDEREDSUBJECT"):
            raise ParseError("unknown thread algorithm")
        r.sp()
        charset = r.astr().upper()
        r.sp()
    elif r.take(b"CHARSET "):
        charset = r.astr().upper()
        r.sp()
    criteria = [search_key(r)]
    while r.maybe_sp():
        criteria.append(search_key(r))
    return Search(tag, name, uid, charset, ("AND", criteria), returns, tuple(sort), algorithm)


def search_key(r: Reader, depth: int = 0) -> Any:
    if depth > 50:
        raise ParseError("search criteria nested too deeply")
    if r.take(b"("):
        items = [search_key(r, depth + 1)]
        while not r.take(b")"):
            r.sp()
            items.append(search_key(r, depth + 1))
        return ("AND", items)
    c = r.peek()
    if c.isdigit() or c in (b"*", b"$"):
        if c == b"$":
            r.pos += 1
            return ("SAVED",)
        return ("SEQ", r.sequence_set())
    key = r.atom().upper()
    if key in _NO_ARG:
        return (key,)
    if key in _STRING_ARG:
        r.sp()
        return (key, r.astring())
    if key in _DATE_ARG:
        r.sp()
        return (key, parse_date(r))
    if key in _NUMBER_ARG:
        r.sp()
        return (key, r.number())
    if key in ("KEYWORD", "UNKEYWORD"):
        r.sp()
        return (key, r.flag())
    if key == "HEADER":
        r.sp()
        field = r.astring().decode("latin-1")
        r.sp()
        return (key, field, r.astring())
    if key == "UID":
        r.sp()
        if r.take(b"$"):
            return ("SAVED",)
        return ("UID", r.sequence_set())
    if key == "NOT":
        r.sp()
        return ("NOT", search_key(r, depth + 1))
    if key == "OR":
        r.sp()
        a = search_key(r, depth + 1)
        r.sp()
        return ("OR", a, search_key(r, depth + 1))
    if key == "MODSEQ":  # RFC 7162 §3.1.5
        r.sp()
        if r.peek() == b'"':
            r.quoted()
            r.sp()
            r.atom()
            r.sp()
        return ("MODSEQ", r.number())
    raise ParseError("unknown search key")
