"""The outbound queue across kill -9 and restart, and delivery through a smarthost with STARTTLS and AUTH."""

from __future__ import annotations

import signal
import ssl
from pathlib import Path

from aiosmtpd.smtp import AuthResult

from smtp_e2e import ALICE, BOB, inbox, message, start_mail_system, start_sink, submit, wait_for
from support import active_listeners, schoolsuite_cmd, start_server


def test_queue_survives_kill_and_restart(tmp_path: Path) -> None:
    """A queued message survives kill -9 of the server and is delivered after the restart."""
    system = start_mail_system(tmp_path)
    m = next(system)
    try:
        submit(m, message(ALICE, "parent@later.example", "survives a crash"))
        listed = wait_for(lambda: (out := m.cli("queue", "list").stdout).count("cannot connect") and out, timeout=60)
        assert listed and "<parent@later.example>" in listed
        m.run.proc.send_signal(signal.SIGKILL)
        m.run.proc.wait(10)
        assert "<parent@later.example>" in m.cli("queue", "list").stdout  # still there with nothing running
        controller, sink = start_sink("127.0.0.3", m.sink_port)
        try:
            m.run = start_server(schoolsuite_cmd("serve", "-c", str(m.inst.config)), expect=active_listeners(),
                                 timeout=60)
            got = sink.wait(1, timeout=60)
            assert got and b"survives a crash" in got[0].data and got[0].rcpt_tos == ["parent@later.example"]
            assert wait_for(lambda: "queue is empty" in m.cli("queue", "list").stdout, timeout=60)
            assert m.run.stop(timeout=60) == 0
        finally:
            controller.stop()
    finally:
        system.close()


def test_queue_delete_from_cli(tmp_path: Path) -> None:
    """queue delete drops a message (no bounce); unknown ids exit 2 with one line."""
    system = start_mail_system(tmp_path)
    m = next(system)
    try:
        submit(m, message(ALICE, "teacher@later.example", "to be deleted"))
        listed = wait_for(lambda: (out := m.cli("queue", "list").stdout) != "queue is empty\n" and out)
        queue_id = listed.split()[0]
        assert m.cli("queue", "delete", queue_id).returncode == 0
        assert m.cli("queue", "list").stdout == "queue is empty\n"
        bad = m.cli("queue", "retry", queue_id)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1
        assert not [x for x in inbox(m.inst.dir, ALICE) if b"multipart/report" in x]
    finally:
        system.close()


def test_smarthost_starttls_and_auth(tmp_path: Path) -> None:
    """Remote mail goes to the smarthost over verified STARTTLS with AUTH PLAIN; while it is down, it waits queued."""
    from support import free_port

    port = free_port()
    logins: list[tuple[str, str]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.login == b"relayuser" and auth_data.password == b"relay-secret")

    password = tmp_path / "relay.pw"
    password.write_text("relay-secret\n")
    system = start_mail_system(tmp_path, smarthost=f"localhost:{port}", smarthost_tls="starttls",
                               smarthost_username="relayuser", smarthost_password_file=str(password),
                               smarthost_ca_file=str(tmp_path / "inst" / "tls" / "cert.pem"))
    m = next(system)
    controller = None
    try:
        submit(m, message(ALICE, f"{BOB}, someone@anywhere.example", "via the smarthost"))
        assert wait_for(lambda: [x for x in inbox(m.inst.dir, BOB) if b"via the smarthost" in x])
        # The smarthost is down: the message waits in the queue.
        assert wait_for(lambda: "cannot connect" in m.cli("queue", "list").stdout)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(m.inst.cert), str(m.inst.dir / "tls" / "key.pem"))
        controller, sink = start_sink("127.0.0.1", port, tls_context=context, require_starttls=True,
                                      authenticator=authenticator, auth_required=True)
        got = wait_for(lambda: [r for r in sink.messages if b"via the smarthost" in r.data])
        assert got and got[0].rcpt_tos == ["someone@anywhere.example"]
        assert logins == [("relayuser", "relay-secret")]
        assert wait_for(lambda: "queue is empty" in m.cli("queue", "list").stdout)
    finally:
        if controller is not None:
            controller.stop()
        system.close()
