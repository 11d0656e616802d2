"""Any-state and not-authenticated commands: CAPABILITY NOOP LOGOUT LOGIN AUTHENTICATE ID ENABLE
(RFC 3501 §6.1-6.2, RFC 4959 SASL-IR, RFC 4616 PLAIN, RFC 2971 ID, RFC 5161 ENABLE)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from .errors import Bad, No
from .grammar import Enable, Id
from .session import Session

BASE = ("IMAP4rev1", "IMAP4rev2", "SASL-IR", "ID", "ENABLE", "IDLE")
AFTER_LOGIN = ("NAMESPACE", "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "SPECIAL-USE", "CREATE-SPECIAL-USE",
               "LIST-EXTENDED", "LIST-STATUS", "CONDSTORE", "QRESYNC", "ESEARCH", "SORT", "SORT=DISPLAY",
               "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT", "QUOTA", "QUOTA=RES-STORAGE", "BINARY",
               "STATUS=SIZE", "WITHIN", "MULTIAPPEND", "COMPRESS=DEFLATE", "UTF8=ACCEPT", "SEARCHRES")
ENABLEABLE = frozenset(("CONDSTORE", "QRESYNC", "UTF8=ACCEPT", "IMAP4REV2"))


def capabilities(s: Session, *, starttls_offered: bool, compressed: bool = False) -> list[str]:
    """What this session may use now. RFC 7888: LITERAL- before login (only small LOGIN/ID literals are
    sent then; a larger non-synchronizing literal is refused), LITERAL+ after it; never both at once (§5)."""
    caps = list(BASE)
    caps.insert(3, "LITERAL+" if s.authenticated else "LITERAL-")
    if not s.authenticated:
        if starttls_offered and not s.tls:
            caps += ["STARTTLS", "LOGINDISABLED"]  # RFC 3501 §6.2.3, §11.1
        else:
            caps.append("AUTH=PLAIN")
        return caps
    caps += AFTER_LOGIN
    caps.append(f"APPENDLIMIT={s.limits.max_message_size}")
    if compressed:
        caps.remove("COMPRESS=DEFLATE")
    return caps


def do_noop(s: Session, cmd: Any) -> Any:
    return f"{cmd.name} completed"


def do_id(s: Session, cmd: Id) -> Any:
    """RFC 2971: remember what the client says (for quirks and logs), tell our name."""
    if cmd.params:
        s.client_id = {k.lower(): v for k, v in cmd.params}
    s.send(b'* ID ("name" "schoolsuite" "vendor" "schoolsuite")\r\n')
    return "ID completed"


def do_enable(s: Session, cmd: Enable) -> Any:
    """RFC 5161: enable CONDSTORE, QRESYNC (implies CONDSTORE, RFC 7162 §3.2.3) and UTF8=ACCEPT (RFC 6855)."""
    enabled = []
    for cap in cmd.capabilities:
        if cap in ENABLEABLE and cap not in s.enabled:
            s.enabled.add(cap)
            enabled.append("IMAP4rev2" if cap == "IMAP4REV2" else cap)
            if cap == "QRESYNC" and "CONDSTORE" not in s.enabled:
                s.enabled.add("CONDSTORE")
    if s.enabled & {"CONDSTORE", "QRESYNC"}:
        s.condstore = True
    s.send(b"* ENABLED" + b"".join(b" " + c.encode() for c in enabled) + b"\r\n")
    return "ENABLE completed"


def plain_credentials(data: bytes) -> tuple[str, str]:
    """RFC 4616: ``authzid NUL authcid NUL passwd``; an authzid must equal authcid."""
    parts = data.split(b"\x00")
    if len(parts) != 3:
        raise Bad("Malformed PLAIN response")
    authz, authc, password = (p.decode("utf-8", "replace") for p in parts)
    if authz and authz.lower() != authc.lower():
        raise No("Proxy authorization is not allowed", "AUTHORIZATIONFAILED")
    return authc, password


def login(s: Session, user: str, password: str, close: Any) -> defer.Deferred[str]:
    """Log in through the twisted.cred portal (the auth service checks) and enter the authenticated state."""
    from ...services.cred import ClientCredentials, IAccount, LoginRefused

    limits = s.limits

    def ok(result: Any) -> str:
        _interface, principal, _logout = result
        if s.services.sessions.count(principal.account_id) >= limits.max_connections_per_account:
            raise No("Too many connections for this account", "LIMIT")
        s.logged_in(principal.account_id, principal.address, close)
        return "LOGIN"

    def failed(failure: Any) -> Any:
        failure.trap(LoginRefused)
        if failure.value.reason in ("throttled", "blocked"):
            raise No("Too many failed attempts; try again later", "UNAVAILABLE")
        raise No("Authentication failed", "AUTHENTICATIONFAILED")

    credentials = ClientCredentials(user, password, s.client_address, "imap")
    return s.services.portal.login(credentials, None, IAccount).addCallbacks(ok, failed)
