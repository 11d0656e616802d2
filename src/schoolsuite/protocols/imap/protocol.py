"""The IMAP server protocol: buffering, literals, the state machine, IDLE, STARTTLS, COMPRESS.

One command runs at a time: while its store operation is pending, input
that arrives waits in the buffer and the protocol stops reading
(``pauseProducing``) until the command is done. Lines are capped (``max_line``: BAD, the connection stays usable);
literals are checked against the size policy before the ``+`` continuation
(RFC 7888 §4: ``NO [TOOBIG]``); before login only LITERAL- is in effect
(RFC 7888 §5: a non-synchronizing literal over 4096 octets gets ``BAD [TOOBIG]``).
On STARTTLS everything buffered after the command is discarded (RFC 3501
§6.2.1, no plaintext injection into TLS).
"""

from __future__ import annotations

import base64
import time
import zlib
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from ...metrics import REGISTRY
from ...services.budget import MemoryBudget
from . import ops_auth, ops_fetch, ops_mailbox, ops_message, ops_search, ops_select
from .commands import parse_command
from .errors import Bad, Bye, Cut, ImapError, No, reply_for
from .grammar import LITERAL_RE, Authenticate, Command, Login, ParseError
from .session import Session

log = Logger(namespace="schoolsuite.imap")

COMMANDS = Counter("schoolsuite_imap_commands_total", "IMAP commands by name and result (ok, no, bad).",
                   ["command", "result"], registry=REGISTRY)
COMMAND_SECONDS = Histogram("schoolsuite_imap_command_seconds", "IMAP command latency by command.", ["command"],
                            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30), registry=REGISTRY)
IDLE_SESSIONS = Gauge("schoolsuite_imap_idle_sessions", "IMAP sessions in IDLE.", registry=REGISTRY)
SESSIONS = Gauge("schoolsuite_imap_sessions", "Open IMAP sessions.", registry=REGISTRY)


@dataclass
class ImapLimits:
    max_line: int = 64 * 1024
    max_literal: int = 64 * 1024  # literals of commands other than APPEND
    max_message_size: int = 50 << 20  # APPENDLIMIT (RFC 7889)
    max_connections_per_client: int = 50
    max_connections_per_account: int = 30
    autologout_seconds: int = 30 * 60  # RFC 3501 §5.4: at least 30 minutes
    preauth_seconds: int = 60
    max_buffered: int = 1 << 30  # literal bytes all connections together may hold while receiving


LITERAL_MINUS_MAX = 4096  # RFC 7888 §5: the largest non-synchronizing literal under LITERAL-
CLOSE_GRACE_SECONDS = 2.0  # after BYE, a TLS connection still open this long is aborted
# On server shutdown the wait is shorter: enough for the BYE to leave, not for every client to answer
# close_notify (most never do), which held every stop (systemctl restart) 2 s.
SHUTDOWN_CLOSE_GRACE_SECONDS = 0.5
SHUTDOWN_WAIT_SECONDS = 5.0  # on shutdown, a running command gets this long to answer before the BYE
IDLE_POLL_SECONDS = 30  # an IDLE session also checks the store this often (changes from other processes)

# command → (allowed states, handler). States: n = not authenticated, a = authenticated, s = selected.
_ANY, _AUTH, _SEL = "nas", "as", "s"
HANDLERS: dict[str, tuple[str, Any]] = {
    "CAPABILITY": (_ANY, None), "NOOP": (_ANY, ops_auth.do_noop), "LOGOUT": (_ANY, None),
    "ID": (_ANY, ops_auth.do_id), "STARTTLS": ("n", None), "LOGIN": ("n", None), "AUTHENTICATE": ("n", None),
    "ENABLE": (_AUTH, ops_auth.do_enable), "COMPRESS": (_AUTH, None), "IDLE": (_AUTH, None),
    "SELECT": (_AUTH, ops_select.do_select), "EXAMINE": (_AUTH, ops_select.do_select),
    "CREATE": (_AUTH, ops_mailbox.do_create), "DELETE": (_AUTH, ops_mailbox.do_delete),
    "RENAME": (_AUTH, ops_mailbox.do_rename), "SUBSCRIBE": (_AUTH, ops_mailbox.do_subscribe),
    "UNSUBSCRIBE": (_AUTH, ops_mailbox.do_subscribe), "LIST": (_AUTH, ops_mailbox.do_list),
    "LSUB": (_AUTH, ops_mailbox.do_list), "STATUS": (_AUTH, ops_mailbox.do_status),
    "APPEND": (_AUTH, ops_mailbox.do_append), "NAMESPACE": (_AUTH, ops_mailbox.do_namespace),
    "GETQUOTA": (_AUTH, ops_mailbox.do_getquota), "GETQUOTAROOT": (_AUTH, ops_mailbox.do_getquotaroot),
    "SETQUOTA": (_AUTH, ops_mailbox.do_setquota),
    "CHECK": (_SEL, ops_select.do_check), "CLOSE": (_SEL, ops_select.do_close),
    "UNSELECT": (_SEL, ops_select.do_unselect), "EXPUNGE": (_SEL, ops_select.do_expunge),
    "UID EXPUNGE": (_SEL, ops_select.do_expunge), "FETCH": (_SEL, ops_fetch.do_fetch),
    "STORE": (_SEL, ops_message.do_store), "COPY": (_SEL, ops_message.do_copy),
    "MOVE": (_SEL, ops_message.do_copy), "SEARCH": (_SEL, ops_search.do_search),
    "SORT": (_SEL, ops_search.do_search), "THREAD": (_SEL, ops_search.do_search),
}
# RFC 3501 §7.4.1: no EXPUNGE responses after these (by sequence number).
_NO_EXPUNGE = frozenset(("FETCH", "STORE", "SEARCH", "SORT", "THREAD"))


class IMAPServer(protocol.Protocol, TimeoutMixin):
    """One IMAP connection."""

    def __init__(self, factory: "IMAPFactory") -> None:
        self.factory = factory
        self.limits = factory.limits
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._held = 0  # literal bytes of the command being received, taken from the factory's budget
        self._literal = 0  # bytes of literal still to read
        self._discard_literal = False
        self._discard_line = False
        self._discard_command: tuple[bytes, bytes] | None = None  # (tag, reply) after a refused literal
        self._busy = False
        self._closed = False
        self._mode = "command"  # command, idle, authenticate
        self._pending: Any = None
        self._inflate: Any = None
        self._deflate: Any = None
        self._client = ""
        self._admitted = False
        self._idle_poll: Any = None
        self._abort_call: Any = None
        self._gone = False
        self._shutting = False  # the server is stopping: BYE once the running command has answered
        self._bye_call: Any = None
        self._lost: list[defer.Deferred[None]] = []  # fired by connectionLost (shutdown waits for it)
        self._turns: _Turns | None = None  # a long response being written one batch per reactor turn
        self.session: Session | None = None

    # -- connection ------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802
        peer = self.transport.getPeer()
        self._client = getattr(peer, "host", "")
        tls = self.factory.implicit_tls
        self.session = Session(self.factory.services, self.send, client_address=self._client, tls=tls,
                               limits=self.limits)
        self.session.on_change = self._changed
        self.session.pacer = self._in_turns
        self.factory.connections.add(self)
        SESSIONS.inc()
        if not self.factory.admit(self._client):
            self.transport.write(b"* BYE [UNAVAILABLE] Too many connections from your address\r\n")
            self._closed = True
            self._drop()
            return
        self._admitted = True
        self.setTimeout(self.limits.preauth_seconds)
        caps = " ".join(self._capabilities())
        self.send(b"* OK [CAPABILITY %s] schoolsuite IMAP ready\r\n" % caps.encode())

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        SESSIONS.dec()
        self._gone = True
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        if self._bye_call is not None and self._bye_call.active():
            self._bye_call.cancel()
        self._bye_call = None
        self._stop_poll()
        if self._mode == "idle":
            IDLE_SESSIONS.dec()
        self._closed = True
        self.setTimeout(None)
        if self._admitted:
            self.factory.release(self._client)
        if self._held:
            self.factory.budget.give(self._held)
            self._held = 0
        if self.session is not None:
            self.session.close()
        self.factory.connections.discard(self)
        if self._turns is not None:
            self._turns.stop(Failure(defer.CancelledError("connection lost")))
        lost, self._lost = self._lost, []
        for d in lost:
            d.callback(None)

    def _drop(self, grace: float = CLOSE_GRACE_SECONDS) -> None:
        """Close after what was sent; nothing more is read, written or resumed.

        Over TLS, loseConnection waits for the client's close_notify; a client that
        waits for the server to hang up after BYE (as RFC 3501 §6.1.3 lets it) would
        wait forever, so the connection is aborted shortly after if still open.
        """
        self._closed = True
        if self._turns is not None:  # the transport closes only once its producer is gone
            self._turns.stop(Failure(defer.CancelledError("connection closed")))
        self.transport.loseConnection()
        if self._abort_call is None:
            self._abort_call = self.callLater(grace, self._abort)

    def _abort(self) -> None:
        self._abort_call = None
        if not self._gone:
            self.transport.abortConnection()

    def _mid_response(self) -> bool:
        """A response is partly written (a streamed literal): nothing else may be sent before its end."""
        return self.session is not None and self.session.open_response

    def _cut(self, why: str) -> None:
        """Close without another byte, in the middle of a response: the client sees a short literal and a
        closed connection, never bytes other than the ones it was announced."""
        log.info("IMAP connection closed in the middle of a response: {why}", why=why)
        assert self.session is not None
        self.session.open_response = False
        self._closed = True
        self._drop()

    def _say_bye(self, bye: bytes, grace: float = CLOSE_GRACE_SECONDS) -> None:
        """``bye`` then close; only close when a response is partly written."""
        if self._mid_response():
            self._cut(bye.decode("latin-1").strip())
            return
        self.send(bye)
        self._drop(grace)

    def timeoutConnection(self) -> None:  # noqa: N802
        self._say_bye(b"* BYE Autologout; idle for too long\r\n")

    def _capabilities(self) -> list[str]:
        assert self.session is not None
        return ops_auth.capabilities(self.session, starttls_offered=self.factory.tls is not None,
                                     compressed=self._deflate is not None)

    def send(self, data: bytes) -> None:
        if self._closed:
            return
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.transport.write(data)

    def close_session(self) -> None:
        """Called when the account is deleted or disabled."""
        self._say_bye(b"* BYE Account closed\r\n")

    def shutdown(self) -> defer.Deferred[None]:
        """Server shutdown: ``* BYE`` (RFC 3501 §7.1.5) once the running command has answered (a store
        write is still committed and answered; a FETCH in batches stops with NO [UNAVAILABLE]), then the
        connection is closed after what was written; fires when it is gone."""
        if self._gone:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._lost.append(d)
        if not self._shutting:
            self._shutting = True
            if self._turns is not None:  # a response partly written is finished first (within the wait below)
                self._turns.stop_between_responses(Failure(No("Server shutting down", "UNAVAILABLE")))
            if not self._busy:
                self._bye()
            else:
                self._bye_call = self.callLater(SHUTDOWN_WAIT_SECONDS, self._bye)
        return d

    def _bye(self) -> None:
        if not self._closed:
            # RFC 5530 §3 UNAVAILABLE: a temporary failure; the client may reconnect later.
            self._say_bye(b"* BYE [UNAVAILABLE] Server shutting down\r\n", SHUTDOWN_CLOSE_GRACE_SECONDS)

    def _in_turns(self, step: Any) -> defer.Deferred[None]:
        """Session.in_turns: one step per reactor turn, paced by the transport's write buffer."""
        assert self._turns is None, "one long response at a time"
        stopping = Failure(No("Server shutting down", "UNAVAILABLE")) if self._shutting else None
        if stopping is not None and not self._mid_response():
            return defer.fail(stopping)  # e.g. a FETCH whose \Seen write was answered after the shutdown began
        turns = self._turns = _Turns(self, step)
        turns.stopping = stopping  # a response already begun is finished first

        def done(result: Any) -> Any:
            if self._turns is turns:
                self._turns = None
            return result

        return turns.done.addBoth(done)

    # -- input ------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._closed:
            return
        self.resetTimeout()
        if self._inflate is not None:
            try:
                data = self._inflate.decompress(data)
            except zlib.error:
                self._say_bye(b"* BYE Bad compressed data\r\n")
                return
        self._buf += data
        self._process()

    def _process(self) -> None:
        if self._shutting and not self._busy:
            self._bye()  # the command that was running when the server began to stop has answered
            return
        while not self._busy and not self._closed and self._buf:
            if self._literal:
                take = min(self._literal, len(self._buf))
                chunk = bytes(self._buf[:take])
                del self._buf[:take]
                self._literal -= take
                if not self._discard_literal:
                    self._parts.append(chunk)
                continue
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > self.limits.max_line:
                    self._discard_line = True
                    self._buf.clear()
                return
            line = bytes(self._buf[: nl + 1])
            del self._buf[: nl + 1]
            if self._discard_line or len(line) > self.limits.max_line:
                self._discard_line = False
                self._reset_command()
                tag = line.split(b" ", 1)[0] if b" " in line[:64] else b"*"
                self.send((tag if tag.isalnum() else b"*") + b" BAD Line too long\r\n")
                continue
            if self._mode == "idle":
                self._idle_line(line)
                continue
            if self._mode == "authenticate":
                self._auth_line(line)
                continue
            self._line(line)
        if self._closed:
            return
        # Stop reading while a command waits for the store, but only once more
        # input is actually waiting: a client that waits for each reply costs
        # no epoll_ctl pair per command (measured: ~30 us of a 450 us STORE).
        if self._buf and (self._busy or len(self._buf) > self.limits.max_line * 4):
            self.transport.pauseProducing()
        else:
            self.transport.resumeProducing()

    def _reset_command(self) -> None:
        self._parts = []
        self._parts_size = 0
        if self._held:
            self.factory.budget.give(self._held)
            self._held = 0
        self._discard_literal = False
        self._discard_command = None

    def _line(self, line: bytes) -> None:
        m = LITERAL_RE.search(line)
        first = b"".join(self._parts[:1]) or line
        if m is not None:
            size = int(m.group(1))
            nonsync = m.group(2) == b"+"  # RFC 7888 §3
            tag = first.split(b" ", 1)[0]
            is_append = b" APPEND " in first[:200].upper()
            limit = self.limits.max_message_size if is_append else self.limits.max_literal
            refusal = None
            if nonsync and size > LITERAL_MINUS_MAX and not self._literal_plus():
                # RFC 7888 §5: under LITERAL- a larger {n+} is refused with BAD [TOOBIG], then §4:
                # read and drop what is cheap to read, hang up on the rest.
                refusal = tag + b" BAD [TOOBIG] Non-synchronizing literal over 4096 octets (LITERAL-)\r\n"
                if size > self.limits.max_literal:
                    self.send(self._discard_command[1] if self._discard_command is not None else refusal)
                    self.send(b"* BYE Literal too large\r\n")
                    self._drop()
                    return
            elif size > limit or self._parts_size + size > self.limits.max_message_size + self.limits.max_literal:
                code = b"[TOOBIG] " if is_append else b"[LIMIT] "
                refusal = tag + b" NO " + code + b"Literal too large\r\n"
            elif self._discard_command is None:
                if self.factory.budget.take(size):
                    self._held += size
                else:
                    # RFC 5530 §3 UNAVAILABLE: temporary, the client tries again later (the literal is not
                    # sent, or, if non-synchronizing, read and dropped below).
                    refusal = tag + b" NO [UNAVAILABLE] Too much mail is being received now, try again later\r\n"
            if self._discard_command is not None or refusal is not None:
                if self._discard_command is None:
                    assert refusal is not None
                    self._discard_command = (tag, refusal)
                if nonsync:  # RFC 7888 §4: the client sends it anyway; read and drop it
                    self._literal = size
                    self._discard_literal = True
                    return
                self.send(self._discard_command[1])
                self._reset_command()
                return
            self._parts.append(line)
            self._parts_size += len(line) + size
            self._literal = size
            self._discard_literal = False
            if not nonsync:
                self.send(b"+ Ready for literal data\r\n")
            return
        if self._discard_command is not None:
            reply = self._discard_command[1]
            self._reset_command()
            self.send(reply)
            return
        self._parts.append(line)
        raw = b"".join(self._parts)
        self._reset_command()
        self._command(raw)

    def _literal_plus(self) -> bool:
        """LITERAL+ is in effect (after login); before it only LITERAL- (see ops_auth.capabilities)."""
        return self.session is not None and self.session.authenticated

    # -- commands ---------------------------------------------------------------

    def _command(self, raw: bytes) -> None:
        s = self.session
        assert s is not None
        if self._shutting:
            self._bye()  # no new command once the server is stopping
            return
        unsettled = s.unsettled()
        if unsettled is not None:
            # A flag change of this account was answered before its commit: read it first.
            self._busy = True
            unsettled.addBoth(lambda _: self._after_settled(raw))
            return
        try:
            cmd = parse_command(raw, utf8=s.utf8)
        except ParseError as exc:
            tag = exc.tag or b"*"
            COMMANDS.labels("unknown", "bad").inc()
            self.send(tag + b" BAD " + str(exc).encode("utf-8", "replace") + b"\r\n")
            return
        tag = cmd.tag.encode("latin-1")
        entry = HANDLERS.get(cmd.name)
        if entry is None:
            self.send(tag + b" BAD Unknown command\r\n")
            return
        states, handler = entry
        state = "n" if not s.authenticated else ("s" if s.selected is not None else "a")
        if state not in states:
            text = b"Not authenticated" if state == "n" else (
                b"No mailbox selected" if "s" == states else b"Already authenticated")
            COMMANDS.labels(cmd.name, "bad").inc()
            self.send(tag + b" BAD " + text + b"\r\n")
            return
        started = time.perf_counter()
        try:
            special = getattr(self, "_do_" + cmd.name.replace(" ", "_"), None)
            result = special(cmd) if special is not None else handler(s, cmd)
        except Exception as exc:  # noqa: BLE001 - mapped in one place
            self._finish(cmd, started, Failure(exc))
            return
        if isinstance(result, defer.Deferred):
            self._busy = True  # _process stops reading if more input arrives meanwhile
            result.addBoth(lambda r: self._finish(cmd, started, r))
        else:
            self._finish(cmd, started, result)

    def _finish(self, cmd: Command, started: float, result: Any) -> None:
        self._busy = False
        if self._closed:
            return
        s = self.session
        assert s is not None
        tag = cmd.tag.encode("latin-1")
        COMMAND_SECONDS.labels(cmd.name).observe(time.perf_counter() - started)
        if isinstance(result, Failure) and (s.open_response or isinstance(result.value, Cut)):
            # The response is partly written (a streamed literal): a tagged NO now would be read as its bytes.
            if not isinstance(result.value, ImapError):
                log.failure("IMAP {command} failed mid-response", failure=result, command=cmd.name)
            COMMANDS.labels(cmd.name, "no").inc()
            self._cut(str(result.value) or type(result.value).__name__)
            return
        if isinstance(result, Failure):
            exc = result.value
            if not isinstance(exc, ImapError):
                log.failure("IMAP {command} failed", failure=result, command=cmd.name)
            status = "bad" if isinstance(exc, Bad) else "no"
            COMMANDS.labels(cmd.name, status).inc()
            if isinstance(exc, Bye):
                self.send(reply_for(tag, exc))
                self._drop()
                return
            self._refresh(cmd)
            self.send(reply_for(tag, exc))
        elif result is not _ASYNC:
            COMMANDS.labels(cmd.name, "ok").inc()
            if not self._refresh(cmd):
                return
            text = result if isinstance(result, str) else f"{cmd.name} completed"
            reply = tag + b" OK " + text.encode("utf-8") + b"\r\n"
            claim = s.claim_recent()
            if claim is not None:  # the tagged OK waits until the store knows the \Recent claim
                self._busy = True
                claim.addBoth(lambda _: self._sent_after_claim(reply))
                return
            self.send(reply)
        self._process()

    def _sent_after_claim(self, reply: bytes) -> None:
        self._busy = False
        self.send(reply)
        self._process()

    def _after_settled(self, raw: bytes) -> None:
        self._busy = False
        if self._closed:
            return
        self._command(raw)
        self._process()

    def _refresh(self, cmd: Command) -> bool:
        s = self.session
        if s is None or s.selected is None:
            return True
        if s.unsettled() is not None:
            # Answered before its commit (a flag change): the store does not show it yet, so
            # updates wait for the next command (RFC 3501 §7: untagged updates may come later).
            return True
        uid = getattr(cmd, "uid", False)
        try:
            s.refresh(expunge=not (cmd.name in _NO_EXPUNGE and not uid))
        except Bye as exc:
            self.send(reply_for(b"*", exc))
            self._drop()
            return False
        return True

    def _changed(self) -> None:
        """Another session changed the selected mailbox: report now if idling (RFC 2177)."""
        if self._mode == "idle" and self.session is not None:
            try:
                self.session.refresh(expunge=True)
                self.session.claim_recent()
            except Bye as exc:
                self.send(reply_for(b"*", exc))
                self._drop()

    # Commands that touch the connection itself.

    def _do_CAPABILITY(self, cmd: Command) -> str:  # noqa: N802
        self.send(b"* CAPABILITY " + " ".join(self._capabilities()).encode() + b"\r\n")
        return "CAPABILITY completed"

    def _do_LOGOUT(self, cmd: Command) -> Any:  # noqa: N802
        self.send(b"* BYE Logging out\r\n")
        self.send(cmd.tag.encode("latin-1") + b" OK LOGOUT completed\r\n")
        COMMANDS.labels("LOGOUT", "ok").inc()
        self._closed = True
        self._drop()
        return _ASYNC

    def _do_STARTTLS(self, cmd: Command) -> Any:  # noqa: N802
        s = self.session
        assert s is not None
        if self.factory.tls is None or s.tls:
            raise Bad("STARTTLS not available")
        self.send(cmd.tag.encode("latin-1") + b" OK Begin TLS negotiation now\r\n")
        self._buf.clear()  # RFC 3501 §6.2.1: nothing sent before the handshake is a command
        self._reset_command()
        self.transport.startTLS(self.factory.tls)
        s.tls = True
        COMMANDS.labels("STARTTLS", "ok").inc()
        return _ASYNC

    def _require_tls(self) -> None:
        s = self.session
        assert s is not None
        if self.factory.tls is not None and not s.tls:
            raise No("Use STARTTLS first", "PRIVACYREQUIRED")

    def _do_LOGIN(self, cmd: Login) -> Any:  # noqa: N802
        self._require_tls()
        return self._login(cmd.user, cmd.password)

    def _login(self, user: str, password: str) -> Any:
        s = self.session
        assert s is not None

        def done(_: str) -> str:
            self.setTimeout(self.limits.autologout_seconds)
            return "[CAPABILITY " + " ".join(self._capabilities()) + "] Logged in"

        return ops_auth.login(s, user, password, self.close_session).addCallback(done)

    def _do_AUTHENTICATE(self, cmd: Authenticate) -> Any:  # noqa: N802
        self._require_tls()
        if cmd.mechanism != "PLAIN":
            raise No("Unsupported mechanism", "CANNOT")
        if cmd.initial is not None:
            return self._plain(cmd.initial)
        self._mode = "authenticate"
        self._pending = cmd
        self.send(b"+ \r\n")
        return _ASYNC

    def _plain(self, data: bytes) -> Any:
        user, password = ops_auth.plain_credentials(data)
        return self._login(user, password)

    def _auth_line(self, line: bytes) -> None:
        cmd = self._pending
        self._mode = "command"
        self._pending = None
        started = time.perf_counter()
        text = line.rstrip(b"\r\n")
        if text == b"*":
            self._finish(cmd, started, Failure(Bad("Authentication cancelled")))
            return
        try:
            data = base64.b64decode(text, validate=True)
            result = self._plain(data)
        except ValueError:
            self._finish(cmd, started, Failure(Bad("Invalid base64")))
            return
        except ImapError as exc:
            self._finish(cmd, started, Failure(exc))
            return
        self._busy = True
        result.addBoth(lambda r: self._finish(cmd, started, r))

    def _do_IDLE(self, cmd: Command) -> Any:  # noqa: N802
        """RFC 2177: report changes as they happen until DONE."""
        self._mode = "idle"
        self._pending = cmd
        IDLE_SESSIONS.inc()
        self._idle_poll = self.callLater(IDLE_POLL_SECONDS, self._poll)
        self.send(b"+ idling\r\n")
        s = self.session
        assert s is not None
        try:
            s.refresh(expunge=True)
        except Bye as exc:
            self.send(reply_for(b"*", exc))
            self._drop()
        return _ASYNC

    def _poll(self) -> None:
        """While idling, look at the store now and then: changes made by another process (which the
        in-process notifier does not see) still arrive within IDLE_POLL_SECONDS."""
        self._idle_poll = None
        if self._mode == "idle" and not self._closed:
            self._changed()
            self._idle_poll = self.callLater(IDLE_POLL_SECONDS, self._poll)

    def _stop_poll(self) -> None:
        poll, self._idle_poll = self._idle_poll, None
        if poll is not None and poll.active():
            poll.cancel()

    def _idle_line(self, line: bytes) -> None:
        cmd = self._pending
        self._mode = "command"
        self._pending = None
        self._stop_poll()
        IDLE_SESSIONS.dec()
        tag = cmd.tag.encode("latin-1")
        if line.rstrip(b"\r\n").upper() != b"DONE":
            self.send(tag + b" BAD Expected DONE\r\n")
            return
        self._finish(cmd, time.perf_counter(), "IDLE terminated")

    def _do_COMPRESS(self, cmd: Any) -> Any:  # noqa: N802
        """RFC 4978: raw DEFLATE both ways after the tagged OK."""
        if cmd.mechanism != "DEFLATE":
            raise Bad("Unknown compression mechanism")
        if self._deflate is not None:
            raise No("Compression is already active", "COMPRESSIONACTIVE")
        self.send(cmd.tag.encode("latin-1") + b" OK DEFLATE active\r\n")
        COMMANDS.labels("COMPRESS", "ok").inc()
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._inflate = zlib.decompressobj(-15)
        if self._buf:
            pending = bytes(self._buf)
            self._buf.clear()
            self._buf += self._inflate.decompress(pending)
        return _ASYNC


_ASYNC = object()  # the command wrote its own tagged reply


@implementer(IPushProducer)
class _Turns:
    """A long response (Session.in_turns) written one step per reactor turn.

    Registered as the transport's streaming producer: while the transport's write
    buffer is over its limit (a client reading slowly) no step runs, so at most one
    step's output waits beyond that buffer.
    """

    def __init__(self, proto: IMAPServer, step: Any) -> None:
        self.proto = proto
        self.step = step
        self.done: defer.Deferred[None] = defer.Deferred()
        self.stopping: Failure | None = None  # end with this once no response is partly written
        self.paused = False
        self.call: Any = None
        self.registered = True
        proto.transport.registerProducer(self, True)
        self._schedule()

    def _schedule(self) -> None:
        if self.call is None and not self.paused and not self.done.called:
            self.call = self.proto.callLater(0, self._turn)

    def _turn(self) -> None:
        self.call = None
        self.proto.resetTimeout()  # a client taking a long response is not idle (RFC 3501 §5.4)
        try:
            finished = self.step()
        except Exception:  # noqa: BLE001 - the command's failure, mapped by IMAPServer._finish
            self._end(Failure())
            return
        if finished:
            self._end(None)
        elif self.stopping is not None and not self.proto._mid_response():
            self._end(self.stopping)
        else:
            self._schedule()

    def _end(self, result: Any) -> None:
        if self.done.called:
            return
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        if self.registered:
            self.registered = False
            self.proto.transport.unregisterProducer()
        if isinstance(result, Failure):
            self.done.errback(result)
        else:
            self.done.callback(result)

    def stop(self, failure: Failure) -> None:
        """End before the last step (connection closing) with ``failure``."""
        self._end(failure)

    def stop_between_responses(self, failure: Failure) -> None:
        """End with ``failure`` (server stopping) now, or once the response partly written is finished."""
        if self.proto._mid_response():
            self.stopping = failure
        else:
            self._end(failure)

    # IPushProducer, called by the transport
    def pauseProducing(self) -> None:  # noqa: N802
        self.paused = True
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False
        self._schedule()

    def stopProducing(self) -> None:  # noqa: N802
        self.registered = False  # the transport is dropping us (connection lost)
        self._end(Failure(defer.CancelledError("connection lost")))


class IMAPFactory(protocol.Factory):
    """Builds IMAPServer connections; counts connections per client address."""

    noisy = False

    def __init__(self, services: Any, limits: ImapLimits, tls: Any = None, implicit_tls: bool = False,
                 budget: MemoryBudget | None = None) -> None:
        self.services = services
        self.limits = limits
        # Literal bytes (mostly APPENDed messages) that every connection of the server holds while they arrive: a
        # literal beyond it is refused before it is sent (NO [UNAVAILABLE], try later), so thirty sessions of one
        # account appending 50 MB each cannot take the server's memory.
        self.budget = budget if budget is not None else MemoryBudget(limits.max_buffered)
        self.tls = None if implicit_tls else tls
        self.implicit_tls = implicit_tls
        self._per_client: dict[str, int] = {}
        self.connections: set[IMAPServer] = set()

    def drain(self) -> defer.Deferred[Any]:
        """Server shutdown: every open connection gets its BYE and is closed; fires when all are gone."""
        return defer.DeferredList([p.shutdown() for p in list(self.connections)])

    def buildProtocol(self, addr: Any) -> IMAPServer:  # noqa: N802
        return IMAPServer(self)

    def admit(self, client: str) -> bool:
        count = self._per_client.get(client, 0)
        if count >= self.limits.max_connections_per_client:
            return False
        self._per_client[client] = count + 1
        return True

    def release(self, client: str) -> None:
        count = self._per_client.get(client, 0) - 1
        if count <= 0:
            self._per_client.pop(client, None)
        else:
            self._per_client[client] = count
