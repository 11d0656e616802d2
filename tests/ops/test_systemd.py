"""The systemd units in systemd/: verified by systemd-analyze, and socket activation by name (LISTEN_FDS)."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from ops_helpers import listening_count, new_instance
from ops_helpers import Client
from schoolsuite.config import load_config
from support import Instance, free_port, require_program, schoolsuite_cmd, start_server

UNITS = Path(__file__).resolve().parents[2] / "systemd"
SOCKETS = {"imap": 143, "imaps": 993, "submission": 587, "submissions": 465, "mx": 25, "https": 443}


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def _copy_units(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at this checkout's console script (verify checks it exists)."""
    exe = shutil.which("schoolsuite") or str(Path(sys.executable).with_name("schoolsuite"))
    out = tmp_path / "units"
    out.mkdir()
    for unit in UNITS.glob("schoolsuite*.s*"):
        (out / unit.name).write_text(unit.read_text().replace("/usr/local/bin/schoolsuite", exe))
    return out


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the service and every socket unit without a warning."""
    analyze = require_program("systemd-analyze")
    units = _copy_units(tmp_path)
    names = sorted(str(p) for p in units.iterdir())
    proc = subprocess.run([analyze, "verify", "--man=no", *names], capture_output=True, text=True, timeout=120,
                          cwd=units)
    complaints = [line for line in (proc.stdout + proc.stderr).splitlines() if str(units) in line]
    assert proc.returncode == 0 and not complaints, proc.stdout + proc.stderr


def test_service_hardening_and_exposure(tmp_path: Path) -> None:
    """The service has the issue's hardening list, no root, the master key as a credential; exposure ≤ 2.0."""
    service = _unit("schoolsuite.service")["Service"]
    assert service["User"] == "schoolsuite" and service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict" and service["PrivateTmp"] == "yes"
    assert service["CapabilityBoundingSet"] == "" and service["AmbientCapabilities"] == ""
    filters = re.findall(r"^SystemCallFilter=(.*)$", (UNITS / "schoolsuite.service").read_text(), re.M)
    assert filters[0] == "@system-service"  # repeated keys add up; configparser keeps only the last
    assert service["ReadWritePaths"] == "/var/lib/schoolsuite/data"
    assert service["LoadCredential"].startswith("master.key:")
    analyze = require_program("systemd-analyze")
    units = _copy_units(tmp_path)
    proc = subprocess.run([analyze, "security", "--offline=yes", "--threshold=20",
                           str(units / "schoolsuite.service")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Overall exposure level for schoolsuite.service: 1." in proc.stdout, proc.stdout[-400:]


def test_sockets_match_the_sample_config() -> None:
    """Each socket unit listens on the standard port under a name the systemd sample config uses."""
    config = load_config(UNITS / "schoolsuite.toml")
    service = _unit("schoolsuite.service")
    assert set(service["Service"]["Sockets"].split()) == {f"schoolsuite-{n}.socket" for n in SOCKETS}
    for name, port in SOCKETS.items():
        sock = _unit(f"schoolsuite-{name}.socket")["Socket"]
        assert sock["ListenStream"] == str(port) and sock["FileDescriptorName"] == name
        assert sock["Service"] == "schoolsuite.service"
        assert getattr(config.listeners, name).endpoint == f"systemd:domain=INET6:name={name}"
    assert config.paths.data_dir == Path("/var/lib/schoolsuite/data")
    assert config.listeners.metrics.endpoint.endswith("interface=127.0.0.1")


def _activated_instance(tmp_path: Path) -> Instance:
    """An instance whose listeners are the sample config's systemd endpoints."""
    inst = new_instance(tmp_path)
    sample = load_config(UNITS / "schoolsuite.toml")
    for name in SOCKETS:
        inst.set_listener(name, endpoint=getattr(sample.listeners, name).endpoint)
    inst.ports["metrics"] = free_port()
    inst.set_listener("metrics", endpoint=f"tcp:{inst.ports['metrics']}:interface=127.0.0.1")
    return inst


def test_named_socket_activation(tmp_path: Path) -> None:
    """Given six inherited sockets named like the units (LISTEN_FDNAMES), the server serves HTTPS on its own."""
    inst = _activated_instance(tmp_path)
    socks = []
    for name in SOCKETS:  # dual-stack like BindIPv6Only=both, but on loopback only
        s = socket.socket(socket.AF_INET6)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::ffff:127.0.0.1", 0))
        s.listen(16)
        inst.ports[name] = s.getsockname()[1]
        socks.append(s)
    fds = [s.fileno() for s in socks]
    # The way systemd passes them: fds 3, 4, ... with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES.
    wrapper = ("import os, sys; n = int(sys.argv[1]); fds = [int(x) for x in sys.argv[2:2 + n]]; "
               "tmp = [os.dup(f) for f in fds]; [os.dup2(t, 3 + i) for i, t in enumerate(tmp)]; "
               "[os.set_inheritable(3 + i, True) for i in range(n)]; "
               "os.environ['LISTEN_PID'] = str(os.getpid()); os.execvp(sys.argv[2 + n], sys.argv[2 + n:])")
    cmd = [sys.executable, "-c", wrapper, str(len(fds)), *map(str, fds),
           *schoolsuite_cmd("serve", "-c", str(inst.config))]
    env = {"LISTEN_FDS": str(len(fds)), "LISTEN_FDNAMES": ":".join(SOCKETS)}
    run = start_server(cmd, expect=listening_count(), env=env, pass_fds=fds)
    for s in socks:
        s.close()
    try:
        assert any(line.startswith(f"listening: https on [::ffff:127.0.0.1]:{inst.ports['https']}")
                   for line in run.lines), run.lines
        assert Client(inst).request("GET", "/mail/config-v1.1.xml").status == 200
        assert run.stop() == 0
    finally:
        if run.proc.poll() is None:
            run.proc.kill()


def test_missing_named_socket_is_one_line(tmp_path: Path) -> None:
    """Without the inherited sockets, serve exits 2 with one line naming the listener."""
    inst = _activated_instance(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    proc = subprocess.run(schoolsuite_cmd("serve", "-c", str(inst.config)), capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "endpoint 'systemd:domain=INET6:name=" in lines[0], proc.stderr
