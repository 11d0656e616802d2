"""The SMTP command grammar: one command line (bytes, without CRLF) → a frozen dataclass.

Pure: no I/O, no Twisted, no store. Follows RFC 5321 §4.1 (commands) and
§4.1.2 (paths), RFC 1869/5321 §4.1.1.11 (ESMTP parameters), RFC 6531 (UTF-8
addresses), RFC 3461 §4 (xtext, DSN parameters), RFC 3030 (BDAT), RFC 4954 (AUTH).
Raises :class:`~.errors.BadCommand`, :class:`~.errors.UnknownCommand` or
:class:`~.errors.UnknownParameter`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import BadCommand, UnknownCommand, UnknownParameter


@dataclass(frozen=True)
class Command:
    verb: str


@dataclass(frozen=True)
class Hello(Command):
    domain: str
    extended: bool


@dataclass(frozen=True)
class MailFrom(Command):
    sender: str  # "" is the null reverse-path
    size: int | None = None
    body: str | None = None  # 7BIT, 8BITMIME
    smtputf8: bool = False
    ret: str | None = None  # FULL, HDRS (RFC 3461 §4.3)
    envid: str | None = None  # decoded xtext (RFC 3461 §4.4)


@dataclass(frozen=True)
class RcptTo(Command):
    recipient: str
    notify: tuple[str, ...] = ()  # NEVER or SUCCESS/FAILURE/DELAY (RFC 3461 §4.1)
    orcpt: str | None = None  # "rfc822;addr" decoded (RFC 3461 §4.2)


@dataclass(frozen=True)
class Bdat(Command):
    size: int
    last: bool


@dataclass(frozen=True)
class Auth(Command):
    mechanism: str
    initial: str | None = None  # base64 initial response, "=" for empty (RFC 4954 §4)


@dataclass(frozen=True)
class Argument(Command):
    """VRFY, EXPN, HELP, NOOP with their (ignored) argument."""

    argument: str = ""


@dataclass(frozen=True)
class Simple(Command):
    """DATA, RSET, QUIT, STARTTLS: no argument allowed."""


_SIMPLE = frozenset({"DATA", "RSET", "QUIT", "STARTTLS"})
_ARGUMENT = frozenset({"VRFY", "EXPN", "HELP", "NOOP"})
_KEYWORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
# RFC 5321 §4.1.2 atext (plus UTF-8 per RFC 6531 §3.3: any non-ASCII character).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]"
_DOT_STRING = re.compile(rf"^{_ATEXT}+(?:\.{_ATEXT}+)*$")
_QUOTED = re.compile(r'^"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"$')
_LABEL = r"(?:[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]*[A-Za-z0-9\u0080-\U0010ffff])?)"
_DOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_ADDRESS_LITERAL = re.compile(r"^\[(?:IPv6:[0-9A-Fa-f:.]+|[0-9.]+)\]$")
_XTEXT = re.compile(r"^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$")
_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})
MAX_PATH = 256  # RFC 5321 §4.5.3.1.3


def parse_command(line: bytes) -> Command:
    """Parse one command line (without the line ending)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise BadCommand("Command line is not valid UTF-8", code=500, enhanced="5.5.2") from None
    if any(ch in text for ch in "\r\n\x00"):
        raise BadCommand("Bare CR, LF or NUL in command line", code=500, enhanced="5.5.2")
    verb, _, rest = text.partition(" ")
    verb = verb.upper()
    if verb in ("EHLO", "HELO"):
        return _hello(verb, rest)
    if verb == "MAIL":
        return _mail(rest)
    if verb == "RCPT":
        return _rcpt(rest)
    if verb == "BDAT":
        return _bdat(rest)
    if verb == "AUTH":
        return _auth(rest)
    if verb in _SIMPLE:
        if rest.strip():
            raise BadCommand(f"{verb} takes no argument", enhanced="5.5.4")
        return Simple(verb)
    if verb in _ARGUMENT:
        return Argument(verb, rest.strip())
    raise UnknownCommand()


def _hello(verb: str, rest: str) -> Hello:
    # RFC 5321 §4.1.1.1: EHLO SP ( Domain / address-literal ); we take any one word.
    domain = rest.strip()
    if not domain or " " in domain:
        raise BadCommand(f"Syntax: {verb} hostname", enhanced="5.5.4")
    return Hello(verb, domain, verb == "EHLO")


def _split_path(rest: str, keyword: str) -> tuple[str, str]:
    """``FROM:<path> params`` → (path without brackets, params)."""
    head, colon, tail = rest.partition(":")
    if not colon or head.strip().upper() != keyword:
        raise BadCommand(f"Syntax: {'MAIL FROM' if keyword == 'FROM' else 'RCPT TO'}:<address>",
                         enhanced="5.5.4")
    tail = tail.lstrip(" ")  # tolerate "MAIL FROM: <a@b>" as most servers do
    if not tail.startswith("<"):
        raise BadCommand("Address must be in angle brackets", enhanced="5.1.7" if keyword == "FROM" else "5.1.3")
    end = _closing_bracket(tail)
    return tail[1:end], tail[end + 1 :]


def _closing_bracket(text: str) -> int:
    """Index of the ``>`` that closes the path (a quoted local part may hold ``>``)."""
    quoted = escaped = False
    for index, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return index
    raise BadCommand("Unterminated address", enhanced="5.5.4")


def mailbox(path: str, *, null_ok: bool, sender: bool) -> str:
    """Check a path (RFC 5321 §4.1.2) and return the mailbox, source route dropped (§C)."""
    status = "5.1.7" if sender else "5.1.3"
    if path == "":
        if null_ok:
            return ""
        raise BadCommand("Null address not allowed here", enhanced=status)
    if len(path) > MAX_PATH:
        raise BadCommand("Path too long", enhanced=status)
    if path.startswith("@"):  # A-d-l, RFC 5321 §4.1.2 and Appendix C: ignored
        _, colon, path = path.partition(":")
        if not colon:
            raise BadCommand("Bad source route", enhanced=status)
    local, at, domain = path.rpartition("@")
    if not at or not local or not domain:
        raise BadCommand("Address must be local-part@domain", enhanced=status)
    if not (_DOT_STRING.match(local) or _QUOTED.match(local)):
        raise BadCommand("Bad local part", enhanced=status)
    if not (_DOMAIN.match(domain) or _ADDRESS_LITERAL.match(domain)):
        raise BadCommand("Bad domain", enhanced=status)
    if len(local.encode()) > 64 or len(domain.encode()) > 255:  # RFC 5321 §4.5.3.1.1-2
        raise BadCommand("Address too long", enhanced=status)
    return f"{local}@{domain}"


def _params(text: str) -> dict[str, str | None]:
    """RFC 5321 §4.1.2 Mail-parameters: ``keyword[=value]`` separated by spaces."""
    params: dict[str, str | None] = {}
    for word in text.split(" "):
        if not word:
            continue
        key, eq, value = word.partition("=")
        if not _KEYWORD.match(key) or (eq and not value) or any(c in value for c in "= \t"):
            raise BadCommand(f"Bad parameter {key[:32]!r}", enhanced="5.5.4")
        key = key.upper()
        if key in params:
            raise BadCommand(f"Duplicate parameter {key}", enhanced="5.5.4")
        params[key] = value if eq else None
    return params


def xtext_decode(value: str) -> str:
    """RFC 3461 §4: ``+HH`` escapes; only printable ASCII otherwise."""
    if not _XTEXT.match(value):
        raise BadCommand("Bad xtext value", enhanced="5.5.4")
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def xtext_encode(value: str) -> str:
    return "".join(ch if 33 <= ord(ch) <= 126 and ch not in "+=" else f"+{ord(ch):02X}" for ch in value)


def _mail(rest: str) -> MailFrom:
    path, tail = _split_path(rest, "FROM")
    sender = mailbox(path, null_ok=True, sender=True)
    params = _params(tail)
    values: dict[str, object] = {}
    for key, value in params.items():
        if key == "SIZE":  # RFC 1870 §3
            if value is None or not value.isdigit() or len(value) > 20:
                raise BadCommand("SIZE needs a number", enhanced="5.5.4")
            values["size"] = int(value)
        elif key == "BODY":  # RFC 6152 §3
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                raise UnknownParameter("BODY must be 7BIT or 8BITMIME")
            values["body"] = value.upper()
        elif key == "SMTPUTF8":  # RFC 6531 §3.4
            if value is not None:
                raise BadCommand("SMTPUTF8 takes no value", enhanced="5.5.4")
            values["smtputf8"] = True
        elif key == "RET":  # RFC 3461 §4.3
            if value is None or value.upper() not in ("FULL", "HDRS"):
                raise BadCommand("RET must be FULL or HDRS", enhanced="5.5.4")
            values["ret"] = value.upper()
        elif key == "ENVID":  # RFC 3461 §4.4
            if value is None:
                raise BadCommand("ENVID needs a value", enhanced="5.5.4")
            envid = xtext_decode(value)
            if len(envid) > 100:
                raise BadCommand("ENVID too long", enhanced="5.5.4")
            values["envid"] = envid
        elif key == "AUTH":  # RFC 4954 §5: accepted, the submitter is the login
            if value is None:
                raise BadCommand("AUTH needs a value", enhanced="5.5.4")
            xtext_decode(value)
        else:
            raise UnknownParameter()
    return MailFrom("MAIL", sender, **values)  # type: ignore[arg-type]


def _rcpt(rest: str) -> RcptTo:
    path, tail = _split_path(rest, "TO")
    if path.lower() == "postmaster":  # RFC 5321 §4.5.1: <Postmaster> without a domain
        recipient = "postmaster"
    else:
        recipient = mailbox(path, null_ok=False, sender=False)
    notify: tuple[str, ...] = ()
    orcpt: str | None = None
    for key, value in _params(tail).items():
        if key == "NOTIFY":  # RFC 3461 §4.1
            if value is None:
                raise BadCommand("NOTIFY needs a value", enhanced="5.5.4")
            words = tuple(w.upper() for w in value.split(","))
            if words != ("NEVER",) and not (set(words) <= _NOTIFY and len(set(words)) == len(words)):
                raise BadCommand("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY", enhanced="5.5.4")
            notify = words
        elif key == "ORCPT":  # RFC 3461 §4.2: addr-type ";" xtext
            if value is None or ";" not in value:
                raise BadCommand("ORCPT must be addr-type;address", enhanced="5.5.4")
            kind, _, address = value.partition(";")
            orcpt = f"{kind.lower()};{xtext_decode(address)}"
        else:
            raise UnknownParameter()
    return RcptTo("RCPT", recipient, notify, orcpt)


def _bdat(rest: str) -> Bdat:
    # RFC 3030 §2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ]
    words = rest.split(" ")
    if not words or not words[0].isdigit() or len(words[0]) > 15 or len(words) > 2:
        raise BadCommand("Syntax: BDAT size [LAST]", enhanced="5.5.4")
    if len(words) == 2 and words[1].upper() != "LAST":
        raise BadCommand("Syntax: BDAT size [LAST]", enhanced="5.5.4")
    return Bdat("BDAT", int(words[0]), len(words) == 2)


def _auth(rest: str) -> Auth:
    # RFC 4954 §4: AUTH mechanism [initial-response]
    words = rest.split(" ")
    if not words[0] or len(words) > 2 or not _KEYWORD.match(words[0].replace("_", "-")):
        raise BadCommand("Syntax: AUTH mechanism [initial-response]", enhanced="5.5.4")
    return Auth("AUTH", words[0].upper(), words[1] if len(words) == 2 else None)


@dataclass(frozen=True)
class Extensions:
    """What EHLO advertises (RFC 5321 §4.1.1.1)."""

    max_size: int
    starttls: bool
    auth: tuple[str, ...]
    extra: tuple[str, ...] = field(default=())

    def lines(self, hostname: str, greeting: str) -> list[str]:
        out = [f"{hostname} {greeting}", "PIPELINING", f"SIZE {self.max_size}", "8BITMIME", "SMTPUTF8",
               "ENHANCEDSTATUSCODES", "CHUNKING", "DSN"]
        if self.starttls:
            out.append("STARTTLS")
        if self.auth:
            out.append("AUTH " + " ".join(self.auth))
        out.extend(self.extra)
        return out
