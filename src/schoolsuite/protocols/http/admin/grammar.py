"""SCIM filter and PATCH path grammar (RFC 7644 §3.4.2.2, §3.5.2): text → frozen dataclasses.

Pure: no I/O. ``parse_filter('userName eq "a@b.c" and active eq true')``
gives an expression tree that :func:`evaluate` runs against a resource's JSON;
``parse_path('emails[type eq "work"].value')`` gives a :class:`Path`.
Attribute names are case-insensitive (RFC 7643 §2.1); the caller folds them
to the schema's spelling with ``canonical``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from .errors import ScimError

# RFC 7644 §3.4.2.2 compareOp
COMPARE_OPS = ("eq", "ne", "co", "sw", "ew", "gt", "lt", "ge", "le")
_TOKEN = re.compile(r"""
    \s*(?:
      (?P<lpar>\() | (?P<rpar>\)) | (?P<lbr>\[) | (?P<rbr>\])
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<word>[A-Za-z0-9_$:.\-]+)
    )""", re.VERBOSE)


@dataclass(frozen=True)
class AttrPath:
    """``[urn:]attr[.sub]`` (RFC 7644 §3.10): names as given, ``urn`` for extension attributes."""

    urn: str
    attr: str
    sub: str = ""


@dataclass(frozen=True)
class Compare:
    path: AttrPath
    op: str  # one of COMPARE_OPS, or "pr"
    value: Any = None


@dataclass(frozen=True)
class Logical:
    op: str  # "and" | "or"
    left: "Filter"
    right: "Filter"


@dataclass(frozen=True)
class Not:
    inner: "Filter"


@dataclass(frozen=True)
class ValueFilter:
    """``attr[filter]`` inside a filter: some element of multi-valued ``attr`` matches."""

    path: AttrPath
    inner: "Filter"


Filter = Union[Compare, Logical, Not, ValueFilter]


@dataclass(frozen=True)
class Path:
    """A PATCH path: ``attr``, ``attr.sub``, ``attr[filter]`` or ``attr[filter].sub`` (RFC 7644 §3.5.2)."""

    attr: AttrPath
    value_filter: Filter | None = None
    sub: str = ""


def _bad_filter(detail: str) -> ScimError:
    return ScimError(400, detail, "invalidFilter")


def _tokens(text: str, error: Callable[[str], ScimError]) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise error(f"unexpected text at position {pos}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def attr_path(word: str) -> AttrPath:
    """``urn:ietf:...:User:userName`` / ``name.givenName`` → AttrPath (RFC 7644 §3.10)."""
    urn = ""
    if word.lower().startswith("urn:"):
        urn, _, word = word.rpartition(":")
        if not urn or not word:
            raise ScimError(400, f"bad attribute path {word!r}", "invalidPath")
    attr, _, sub = word.partition(".")
    if not re.fullmatch(r"[A-Za-z$][\w$-]*", attr) or (sub and not re.fullmatch(r"[A-Za-z$][\w$-]*", sub)):
        raise ScimError(400, f"bad attribute path {word!r}", "invalidPath")
    return AttrPath(urn, attr, sub)


class _Parser:
    """Recursive descent over: filter = term *("or" term); term = factor *("and" factor)."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "")

    def take(self) -> tuple[str, str]:
        token = self.peek()
        self.i += 1
        return token

    def filter(self) -> Filter:
        left = self.term()
        while self.peek()[0] == "word" and self.peek()[1].lower() == "or":
            self.take()
            left = Logical("or", left, self.term())
        return left

    def term(self) -> Filter:
        left = self.factor()
        while self.peek()[0] == "word" and self.peek()[1].lower() == "and":
            self.take()
            left = Logical("and", left, self.factor())
        return left

    def factor(self) -> Filter:
        kind, text = self.take()
        if kind == "lpar":
            inner = self.filter()
            if self.take()[0] != "rpar":
                raise _bad_filter("missing )")
            return inner
        if kind == "word" and text.lower() == "not":
            if self.take()[0] != "lpar":
                raise _bad_filter("not must be followed by (")
            inner = self.filter()
            if self.take()[0] != "rpar":
                raise _bad_filter("missing )")
            return Not(inner)
        if kind != "word":
            raise _bad_filter(f"expected an attribute, got {text!r}")
        path = attr_path(text)
        if self.peek()[0] == "lbr":
            self.take()
            inner = self.filter()
            if self.take()[0] != "rbr":
                raise _bad_filter("missing ]")
            return ValueFilter(path, inner)
        kind, op = self.take()
        op = op.lower()
        if kind != "word" or (op not in COMPARE_OPS and op != "pr"):
            raise _bad_filter(f"unknown operator {op!r}")
        if op == "pr":
            return Compare(path, "pr")
        kind, raw = self.take()
        return Compare(path, op, _comp_value(kind, raw))


def _comp_value(kind: str, raw: str) -> Any:
    """RFC 7644 §3.4.2.2 compValue: false / null / true / number / string."""
    if kind == "string":
        try:
            return json.loads(raw)
        except ValueError:  # a bad escape such as "\q"
            raise _bad_filter(f"bad string {raw!r}") from None
    if kind == "word":
        lowered = raw.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered == "null":
            return None
        try:
            return json.loads(raw)
        except ValueError:
            pass
    raise _bad_filter(f"bad comparison value {raw!r}")


def parse_filter(text: str) -> Filter:
    """Parse a ``filter=`` query parameter; ScimError(400, invalidFilter) when malformed."""
    if len(text) > 4096:
        raise _bad_filter("the filter is too long")
    parser = _Parser(_tokens(text, _bad_filter))
    result = parser.filter()
    if parser.peek()[0] != "end":
        raise _bad_filter(f"unexpected {parser.peek()[1]!r}")
    return result


def parse_path(text: str) -> Path:
    """Parse a PATCH ``path`` (RFC 7644 §3.5.2 PATH); ScimError(400, invalidPath) when malformed."""
    def bad(detail: str) -> ScimError:
        return ScimError(400, detail, "invalidPath")
    head, bracket, rest = text.partition("[")
    if not bracket:
        return Path(attr_path(text.strip()))
    inner, close, tail = rest.rpartition("]")
    if not close:
        raise bad("missing ]")
    if tail and not tail.startswith("."):
        raise bad(f"unexpected {tail!r} after ]")
    try:
        value_filter = parse_filter(inner)
    except ScimError as exc:
        raise bad(exc.detail) from None
    path = attr_path(head.strip())
    if path.sub:
        raise bad("a value filter follows a multi-valued attribute")
    return Path(path, value_filter, tail[1:])


# -- evaluation ---------------------------------------------------------------


def lookup(obj: dict[str, Any], key: str) -> Any:
    """``obj[key]`` with the key matched case-insensitively (RFC 7643 §2.1)."""
    if key in obj:
        return obj[key]
    folded = key.lower()
    for name, value in obj.items():
        if name.lower() == folded:
            return value
    return None


def path_keys(path: AttrPath) -> tuple[str, ...]:
    """The keys leading to an attribute in a resource's JSON (an extension's urn first)."""
    return tuple(k for k in (path.urn, path.attr, path.sub) if k)


def _get(doc: dict[str, Any], path: AttrPath, core_urns: tuple[str, ...]) -> Any:
    if path.urn.lower() in core_urns:
        path = AttrPath("", path.attr, path.sub)
    value: Any = doc
    for key in path_keys(path):
        if isinstance(value, list):
            value = [lookup(v, key) for v in value if isinstance(v, dict)]
        elif isinstance(value, dict):
            value = lookup(value, key)
        else:
            return None
    return value


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "pr":
        return actual not in (None, "", [], {})
    if isinstance(actual, list):
        return any(_compare(a, op, expected) for a in actual)
    if isinstance(actual, dict):  # RFC 7643 §2.4: a complex value compares by its "value"
        actual = lookup(actual, "value")
    if isinstance(actual, str) and isinstance(expected, str):
        # RFC 7643 §2.3.1: caseExact false for the attributes we filter on (addresses, names).
        actual, expected = actual.lower(), expected.lower()
    if op == "eq":
        return actual == expected
    if op == "ne":
        return actual != expected
    if actual is None or expected is None:
        return False
    try:
        if op == "co":
            return str(expected) in str(actual)
        if op == "sw":
            return str(actual).startswith(str(expected))
        if op == "ew":
            return str(actual).endswith(str(expected))
        return {"gt": actual > expected, "lt": actual < expected,
                "ge": actual >= expected, "le": actual <= expected}[op]
    except TypeError:
        return False


def evaluate(flt: Filter, doc: dict[str, Any], core_urns: tuple[str, ...] = ()) -> bool:
    """Whether the resource JSON ``doc`` matches ``flt`` (``core_urns``: lower-case urns that
    name the resource's own schema, whose attributes sit at the top level)."""
    if isinstance(flt, Logical):
        left = evaluate(flt.left, doc, core_urns)
        if flt.op == "and":
            return left and evaluate(flt.right, doc, core_urns)
        return left or evaluate(flt.right, doc, core_urns)
    if isinstance(flt, Not):
        return not evaluate(flt.inner, doc, core_urns)
    if isinstance(flt, ValueFilter):
        values = _get(doc, flt.path, core_urns)
        return isinstance(values, list) and any(
            isinstance(v, dict) and evaluate(flt.inner, v) for v in values)
    return _compare(_get(doc, flt.path, core_urns), flt.op, flt.value)
