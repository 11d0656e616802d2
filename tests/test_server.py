"""`schoolsuite serve` end to end over real sockets: HTTPS, metrics, signals, startup failures."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import Instance, Running, active_listeners, require_program, schoolsuite_cmd, start_server


def https(inst: Instance, method: str, path: str) -> http.client.HTTPResponse:
    ctx = ssl.create_default_context(cafile=str(inst.cert))
    conn = http.client.HTTPSConnection("localhost", inst.ports["https"], context=ctx, timeout=10)
    conn.request(method, path)
    resp = conn.getresponse()
    resp.body = resp.read()  # type: ignore[attr-defined]
    conn.close()
    return resp


def scrape(inst: Instance) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", inst.ports["metrics"], timeout=10)
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    assert resp.status == 200
    return resp.read().decode()


def test_listening_lines(running: tuple[Instance, Running]) -> None:
    """serve prints one 'listening:' line per active listener with address and TLS mode."""
    inst, run = running
    assert f"listening: https on 127.0.0.1:{inst.ports['https']} (implicit TLS)" in run.lines
    assert f"listening: metrics on 127.0.0.1:{inst.ports['metrics']} (no TLS)" in run.lines
    assert run.stop() == 0
    from schoolsuite.server import PROTOCOL_FACTORIES, SERVER_NAMES

    for name in ("imap", "imaps", "submission", "submissions", "mx"):  # each one not registered yet is named
        if name not in PROTOCOL_FACTORIES:
            assert f"{name} listener configured but the {SERVER_NAMES[name]} server is not implemented yet" in run.out


def test_https_root_and_headers(running: tuple[Instance, Running]) -> None:
    """GET / answers 200 over TLS with security headers and no server version."""
    inst, _ = running
    resp = https(inst, "GET", "/")
    assert resp.status == 200 and b"schoolsuite" in resp.body  # type: ignore[attr-defined]
    assert resp.getheader("Server") == "schoolsuite"
    assert resp.getheader("Strict-Transport-Security", "").startswith("max-age=")
    assert resp.getheader("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize("path", ["/.well-known/caldav", "/.well-known/carddav"])
def test_well_known_redirects(running: tuple[Instance, Running], path: str) -> None:
    """RFC 6764 §5: /.well-known/caldav and /carddav answer 301 to /dav/."""
    resp = https(running[0], "GET", path)
    assert resp.status == 301 and resp.getheader("Location") == "/dav/"


def test_unknown_path_404_without_leaks(running: tuple[Instance, Running]) -> None:
    """Unknown paths are 404 and name no software version."""
    resp = https(running[0], "GET", "/nope/deeper")
    assert resp.status == 404
    assert b"Twisted" not in resp.body and "Twisted" not in str(resp.headers)  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", ["/", "/anything/at/all", "/.well-known/caldav"])
def test_options_anywhere(running: tuple[Instance, Running], path: str) -> None:
    """OPTIONS on any path answers 200 with an Allow header (RFC 9110 §9.3.7)."""
    resp = https(running[0], "OPTIONS", path)
    assert resp.status == 200 and "GET" in resp.getheader("Allow", "")


def test_old_tls_refused(running: tuple[Instance, Running]) -> None:
    """TLS 1.1 is refused; TLS 1.2 is accepted."""
    inst, _ = running
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    with pytest.warns(DeprecationWarning):
        old.minimum_version = ssl.TLSVersion.TLSv1
    with pytest.warns(DeprecationWarning):
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", inst.ports["https"]), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname="localhost").close()
    tls12 = ssl.create_default_context(cafile=str(inst.cert))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", inst.ports["https"]), timeout=10) as raw:
        with tls12.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.2"
            assert "GCM" in tls.cipher()[0] or "CHACHA20" in tls.cipher()[0]


def test_metrics_exposition(running: tuple[Instance, Running]) -> None:
    """/metrics parses as Prometheus text and counts HTTPS connections and the store map."""
    inst, _ = running
    https(inst, "GET", "/")
    families = {f.name: f for f in text_string_to_metric_families(scrape(inst))}
    total = {s.labels.get("protocol"): s.value for s in families["schoolsuite_connections"].samples
             if s.name == "schoolsuite_connections_total"}
    assert total["https"] >= 1
    assert families["schoolsuite_store_map_size_bytes"].samples[0].value > 0
    assert "schoolsuite_connections_open" in families


@pytest.mark.realclient
def test_metrics_pass_promtool(running: tuple[Instance, Running]) -> None:
    """promtool check metrics accepts our exposition (names, types, help)."""
    promtool = require_program("promtool")
    body = scrape(running[0])
    proc = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.realclient
def test_curl_https(running: tuple[Instance, Running]) -> None:
    """curl (OpenSSL, real client) fetches / and the well-known redirect, and cannot force TLS 1.1."""
    curl = require_program("curl")
    inst, _ = running
    base = f"https://localhost:{inst.ports['https']}"
    code = subprocess.run([curl, "-sS", "--cacert", str(inst.cert), "-o", "/dev/null", "-w", "%{http_code}",
                           base + "/"], capture_output=True, text=True, timeout=30)
    assert code.stdout == "200", code.stderr
    redirect = subprocess.run([curl, "-sS", "--cacert", str(inst.cert), "-o", "/dev/null",
                               "-w", "%{http_code} %{redirect_url}", base + "/.well-known/carddav"],
                              capture_output=True, text=True, timeout=30)
    assert redirect.stdout == f"301 {base}/dav/"
    old = subprocess.run([curl, "-sS", "-k", "--tlsv1.0", "--tls-max", "1.1", base + "/"],
                         capture_output=True, text=True, timeout=30)
    assert old.returncode != 0


def test_sigterm_exits_zero(running: tuple[Instance, Running]) -> None:
    """SIGTERM stops serve cleanly: exit 0 within a few seconds, store closed."""
    _, run = running
    assert run.stop(timeout=10) == 0
    assert "store closed" in run.out
    assert "Traceback" not in run.out + run.err


def test_systemd_socket_activation(instance: Instance) -> None:
    """https on systemd:domain=INET:index=0 serves on a socket inherited as fd 3 (LISTEN_FDS=1, LISTEN_PID)."""
    instance.set_listener("https", endpoint="systemd:domain=INET:index=0")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    instance.ports["https"] = sock.getsockname()[1]
    wrapper = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_PID'] = str(os.getpid()); "
               "os.execvp(sys.argv[2], sys.argv[2:])")
    cmd = [sys.executable, "-c", wrapper, str(sock.fileno()), *schoolsuite_cmd("serve", "-c", str(instance.config))]
    # systemd >= 227 always sets LISTEN_FDNAMES, and Twisted requires it to match LISTEN_FDS.
    run = start_server(cmd, expect=active_listeners(), env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "https"}, pass_fds=[sock.fileno()])
    sock.close()
    try:
        assert f"listening: https on 127.0.0.1:{instance.ports['https']} (implicit TLS)" in run.lines
        assert https(instance, "GET", "/").status == 200
        assert run.stop() == 0
    finally:
        if run.proc.poll() is None:
            run.proc.kill()


def serve_fails(inst: Instance, contains: str) -> None:
    proc = subprocess.run(schoolsuite_cmd("serve", "-c", str(inst.config)), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("schoolsuite: ") and contains in lines[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_missing_master_key(instance: Instance) -> None:
    """Without its master key serve exits non-zero with one line naming the key file."""
    (instance.dir / "secrets" / "master.key").unlink()
    serve_fails(instance, "master.key")


def test_wrong_master_key(instance: Instance, tmp_path: Path) -> None:
    """A master key from another instance is refused at startup with one line."""
    from schoolsuite.instance import init_instance

    init_instance(tmp_path / "other", "school.example", "localhost")
    key = instance.dir / "secrets" / "master.key"
    key.write_bytes((tmp_path / "other" / "secrets" / "master.key").read_bytes())
    serve_fails(instance, "")


def test_unusable_data_dir(instance: Instance, tmp_path: Path) -> None:
    """A data directory that cannot be created or written stops serve with one line naming it."""
    blocker = tmp_path / "afile"
    blocker.write_text("")
    text = instance.config.read_text().replace('data_dir = "data"', f'data_dir = "{blocker}/data"')
    instance.config.write_text(text)
    serve_fails(instance, str(blocker))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to any directory")
def test_read_only_data_dir(instance: Instance) -> None:
    """A read-only data directory stops serve with one line."""
    (instance.dir / "data").chmod(0o500)
    try:
        serve_fails(instance, "data")
    finally:
        (instance.dir / "data").chmod(0o700)


def test_port_taken(instance: Instance) -> None:
    """A port in use stops serve with exit 2 and one line naming the listener."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", instance.ports["https"]))
        busy.listen(1)
        serve_fails(instance, "cannot listen for https on")


def test_missing_tls_key(instance: Instance) -> None:
    """A missing TLS key file stops serve with one line naming it."""
    (instance.dir / "tls" / "key.pem").unlink()
    serve_fails(instance, "key.pem")
