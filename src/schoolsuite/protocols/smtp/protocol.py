"""The SMTP server protocol: buffering, the state machine, DATA/BDAT reading, STARTTLS.

Commands are handled strictly one at a time: while one waits for a service
(authentication, the commit of a message) every byte that follows stays in
the buffer, so a pipelining client (RFC 2920) is never misread. Replies are
written in order. All error replies go through :meth:`SMTPServerProtocol._refuse`.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ...services import smtp_metrics as metrics
from . import errors
from .errors import BadSequence, LineTooLong, ServerFault, SMTPReply
from .grammar import Argument, Auth, Bdat, Command, Hello, MailFrom, RcptTo, parse_command
from .message import dot_unstuff
from .ops import auth as auth_ops
from .ops import envelope, hello
from .ops.auth import Challenge
from .ops.finish import finish
from .session import Reply, Session, Settings

log = Logger(namespace="schoolsuite.smtp")

MAX_COMMAND_LINE = 4096  # RFC 5321 §4.5.3.1.4 is 512; AUTH PLAIN responses need more (RFC 4954 §4)
MAX_ERRORS = 20
PAUSE_ABOVE = 1 << 20  # stop reading while this much is buffered behind a busy command


class SMTPServerProtocol(Protocol):
    """One SMTP connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.session: Session | None = None
        self._buffer = bytearray()
        self._mode = "line"  # line, skip (rest of an over-long line), data, bdat
        self._busy = False
        self._closing = False
        self._challenge: Challenge | None = None
        self._data_parts: list[bytes] = []
        self._data_size = 0
        self._bdat: Bdat | None = None
        self._bdat_left = 0
        self._bdat_parts: list[bytes] = []
        self._held = 0  # bytes taken from the shared memory budget
        self._over_budget = False
        self._errors = 0
        self._timer: Any = None
        self._paused = False
        self._counted = False
        self._unregister: Any = None
        self._started = time.monotonic()

    # -- connection ---------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802
        settings = self.settings
        peer = self.transport.getPeer()
        client = getattr(peer, "host", "unknown")
        self.session = Session(settings, client, tls=settings.implicit_tls)
        if settings.open_total >= settings.max_connections or \
                settings.open_per_client.get(client, 0) >= settings.max_connections_per_client:
            metrics.SMTP_REJECTIONS.labels(settings.listener, "connections").inc()
            self._write(errors.render(421, "4.7.0", f"{settings.hostname} Too many connections; try later"))
            self._close()
            return
        self._counted = True
        settings.open_total += 1
        settings.open_per_client[client] = settings.open_per_client.get(client, 0) + 1
        self._arm_timer()
        self._write(errors.render(220, None, f"{settings.hostname} ESMTP schoolsuite"))

    def connectionLost(self, reason: Failure = None) -> None:  # noqa: N802
        self._closing = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._unregister is not None:
            self._unregister()
        if self._counted:
            settings = self.settings
            settings.open_total -= 1
            client = self.session.client_ip if self.session else ""
            left = settings.open_per_client.get(client, 1) - 1
            if left <= 0:
                settings.open_per_client.pop(client, None)
            else:
                settings.open_per_client[client] = left
            metrics.SMTP_SESSION_SECONDS.labels(settings.listener).observe(time.monotonic() - self._started)
        # A transaction in progress is simply dropped: nothing was committed.
        self._data_parts.clear()
        self._bdat_parts.clear()
        self._release()

    def _arm_timer(self) -> None:
        reactor = self.settings.reactor
        if reactor is None:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.settings.idle_timeout)
        else:
            self._timer = reactor.callLater(self.settings.idle_timeout, self._idle)

    def _idle(self) -> None:
        # RFC 5321 §4.5.3.2: the server may close an idle connection after its timeout.
        self._write(errors.render(421, "4.4.2", f"{self.settings.hostname} Idle timeout, closing connection"))
        self._close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _close(self) -> None:
        self._closing = True
        self.transport.loseConnection()

    # -- input --------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._closing:
            return
        self._arm_timer()
        self._buffer += data
        self._drive()

    def _drive(self) -> None:
        while not self._busy and not self._closing:
            if self._mode == "data":
                if not self._data_step():
                    break
            elif self._mode == "bdat":
                if not self._bdat_step():
                    break
            elif not self._line_step():
                break
        if self._busy and len(self._buffer) > PAUSE_ABOVE and not self._paused:
            self._paused = True
            self.transport.pauseProducing()
        elif self._paused and not self._busy:
            self._paused = False
            self.transport.resumeProducing()

    def _line_step(self) -> bool:
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > MAX_COMMAND_LINE:
                del self._buffer[:]
                if self._mode != "skip":
                    self._mode = "skip"
                    self._refuse(LineTooLong())
            return False
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if self._mode == "skip":
            self._mode = "line"
            return True
        if len(line) > MAX_COMMAND_LINE:
            self._refuse(LineTooLong())
            return True
        if self._challenge is not None:
            challenge, self._challenge = self._challenge, None
            self._run(lambda: challenge.answer(line))
        else:
            self._run(lambda: self._dispatch(parse_command(line)))
        return True

    def _data_step(self) -> bool:
        """Read up to the end of data: only CRLF.CRLF ends it (RFC 5321 §4.1.1.4)."""
        buf = self._buffer
        if self._data_size == 0 and not self._data_parts and buf[:3] == b".\r\n":
            del buf[:3]
            self._end_data(b"")
            return True
        end = buf.find(b"\r\n.\r\n")
        if end < 0:
            keep = 4  # a terminator may straddle two reads
            if len(buf) > keep:
                self._add_data(bytes(buf[:-keep]))
                del buf[:-keep]
            return False
        self._add_data(bytes(buf[: end + 2]))
        del buf[: end + 5]
        self._end_data(None)
        return True

    def _add_data(self, chunk: bytes) -> None:
        self._data_size += len(chunk)
        transaction = self.session.transaction if self.session else None
        if self._data_size > self.settings.max_size + 1024:  # keep reading, stop keeping
            if transaction is not None:
                transaction.too_big = True
            self._data_parts.clear()
            return
        if self._over_budget or not self._hold(len(chunk)):
            self._data_parts.clear()
            return
        self._data_parts.append(chunk)

    def _hold(self, n: int) -> bool:
        """Take ``n`` bytes from the process-wide budget; False (and the message is refused) when spent."""
        budget = self.settings.budget
        if budget is None:
            return True
        if not budget.take(n):
            self._over_budget = True
            return False
        self._held += n
        return True

    def _release(self) -> None:
        if self._held and self.settings.budget is not None:
            self.settings.budget.give(self._held)
        self._held = 0

    def _budget_refusal(self) -> SMTPReply | None:
        """The reply for a message dropped for want of memory (the flag is cleared)."""
        if not self._over_budget:
            return None
        self._over_budget = False
        return SMTPReply("Insufficient system storage; try again later", code=452, enhanced="4.3.1")

    def _end_data(self, empty: bytes | None) -> None:
        data = b"" if empty is not None else dot_unstuff(b"".join(self._data_parts))
        self._data_parts.clear()
        self._data_size = 0
        self._mode = "line"
        self._release()  # the message now lives in ``data`` until it is committed
        refusal = self._budget_refusal()
        if refusal is not None:
            self.session.reset()
            self._refuse(refusal)
            return
        self._run(lambda: finish(self.session, data))

    def _bdat_step(self) -> bool:
        """Read exactly the announced chunk (RFC 3030 §2), then answer for it."""
        if self._bdat_left:
            take = min(self._bdat_left, len(self._buffer))
            if take == 0:
                return False
            chunk = bytes(self._buffer[:take])
            del self._buffer[:take]
            self._bdat_left -= take
            transaction = self.session.transaction
            if transaction is not None and not transaction.too_big:
                transaction.size += take
                if transaction.size > self.settings.max_size:
                    transaction.too_big = True
                    self._bdat_parts.clear()
                elif self._over_budget or not self._hold(take):
                    self._bdat_parts.clear()
                    transaction.chunks.clear()
                else:
                    self._bdat_parts.append(chunk)
            if self._bdat_left:
                return False
        command, self._bdat = self._bdat, None
        self._mode = "line"
        self._run(lambda: self._bdat_done(command))
        return True

    def _bdat_done(self, command: Bdat | None) -> Any:
        session = self.session
        transaction = session.transaction
        refusal: SMTPReply | None = None
        if not session.extended:
            refusal = BadSequence("BDAT needs EHLO (CHUNKING)")
        elif transaction is None:
            refusal = BadSequence("Need MAIL before BDAT")
        elif not transaction.recipients:
            refusal = BadSequence("Need RCPT before BDAT")
        else:
            refusal = self._budget_refusal()
            if refusal is None and transaction.too_big:
                refusal = SMTPReply("Message size exceeds fixed maximum message size", code=552, enhanced="5.3.4")
        if refusal is not None:
            # RFC 3030 §2: the chunk was read all the same; a failed chunk ends the transaction.
            self._bdat_parts.clear()
            self._over_budget = False
            self._release()
            if transaction is not None and transaction.recipients:
                session.reset()
            raise refusal
        transaction.bdat = True
        transaction.chunks.extend(self._bdat_parts)
        self._bdat_parts.clear()
        if command is not None and command.last:
            self._release()  # the message now lives in ``data`` until it is committed
            data = b"".join(transaction.chunks)
            transaction.chunks.clear()
            return finish(session, data)
        return Reply(250, "2.0.0", f"{command.size if command else 0} octets received")

    # -- commands -------------------------------------------------------------------

    def _dispatch(self, command: Command) -> Any:
        session = self.session
        verb = command.verb
        if isinstance(command, Hello):
            self._release()
            return hello.handle(session, command)
        if isinstance(command, MailFrom):
            return envelope.mail(session, command)
        if isinstance(command, RcptTo):
            return envelope.rcpt(session, command)
        if isinstance(command, Bdat):
            # The chunk is read whatever the state, so the stream stays in sync (RFC 3030 §2).
            self._mode, self._bdat, self._bdat_left = "bdat", command, command.size
            return None
        if isinstance(command, Auth):
            return auth_ops.handle(session, command)
        if verb == "DATA":
            transaction = session.transaction
            if transaction is None:
                raise BadSequence("Need MAIL before DATA")
            if transaction.bdat:
                raise BadSequence("DATA after BDAT")  # RFC 3030 §3
            if not transaction.recipients:
                raise SMTPReply("No valid recipients", code=554, enhanced="5.5.1")
            self._mode = "data"
            self._data_parts, self._data_size = [], 0
            return Reply(354, None, "End data with <CR><LF>.<CR><LF>")
        if verb == "RSET":
            self._release()
            return envelope.rset(session)
        if verb == "QUIT":
            return Reply(221, "2.0.0", "Bye", close=True)
        if verb == "STARTTLS":
            return self._starttls()
        if isinstance(command, Argument):
            if verb == "NOOP":
                return Reply(250, "2.0.0", "Ok")
            if verb == "HELP":
                return Reply(214, "2.0.0", "See RFC 5321")
            if verb == "VRFY":  # RFC 5321 §3.5.3: do not reveal who exists
                return Reply(252, "2.5.0", "Cannot VRFY user; try RCPT to attempt delivery")
            return Reply(502, "5.5.1", "EXPN not available")  # RFC 5321 §7.3
        raise errors.UnknownCommand()

    def _starttls(self) -> Any:
        settings, session = self.settings, self.session
        if settings.tls is None or settings.implicit_tls:
            return Reply(502, "5.5.1", "STARTTLS not available")
        if session.tls:
            raise BadSequence("TLS already active")
        # RFC 3207 §4.2 (and CVE-2011-0411): anything pipelined after STARTTLS in
        # plaintext is discarded; the session starts over, knowing nothing.
        del self._buffer[:]
        self._write(errors.render(220, "2.0.0", "Ready to start TLS"))
        self.transport.startTLS(settings.tls)
        session.tls = True
        session.helo, session.extended, session.principal = None, False, None
        session.reset()
        return None

    # -- results and errors -----------------------------------------------------------

    def _run(self, action: Any) -> None:
        try:
            result = action()
        except SMTPReply as exc:
            self._refuse(exc)
            return
        except Exception:
            self._refuse(self._fault(Failure()))
            return
        self._answer(result)

    def _answer(self, result: Any) -> None:
        if result is None:
            return
        if isinstance(result, defer.Deferred):
            self._busy = True
            result.addCallbacks(self._answer_later, self._error_later)
            return
        if isinstance(result, Challenge):
            self._challenge = result
            self._write(errors.render(334, None, result.text))
            return
        if self.session.principal is not None and self._unregister is None:
            self._unregister = self.settings.sessions.add(self.session.principal.account_id, self._close) \
                if self.settings.sessions is not None else (lambda: None)
        self._write(errors.render(result.code, result.enhanced, result.text))
        if result.close:
            self._close()

    def _answer_later(self, result: Any) -> None:
        self._busy = False
        if self._closing:
            return
        self._answer(result)
        self._drive()

    def _error_later(self, failure: Failure) -> None:
        self._busy = False
        if self._closing:
            return
        if failure.check(SMTPReply):
            self._refuse(failure.value)
        else:
            self._refuse(self._fault(failure))
        self._drive()

    def _fault(self, failure: Failure) -> ServerFault:
        fault = ServerFault()
        log.failure("SMTP server fault: incident={incident}", failure, incident=fault.incident)
        return fault

    def _refuse(self, exc: SMTPReply) -> None:
        """The one place where refusals become wire replies."""
        self._errors += 1
        self._write(errors.render_error(exc))
        if exc.close:
            self._close()
        elif self._errors >= MAX_ERRORS:
            self._write(errors.render(421, "4.7.0", f"{self.settings.hostname} Too many errors, closing"))
            self._close()


class SMTPFactory(Factory):
    noisy = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def buildProtocol(self, addr: Any) -> SMTPServerProtocol:  # noqa: N802
        protocol = SMTPServerProtocol(self.settings)
        protocol.factory = self
        return protocol
