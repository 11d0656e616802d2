"""Peer suite: caldav-server-tester against schoolsuite and stock Radicale in the same run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from support import free_port, stop_process

from dav_helpers import PASSWORD
from dav_server import DavServer

pytestmark = pytest.mark.slow
USER = "anna@school.example"


def peer_program() -> str:
    path = shutil.which("caldav-server-tester") or str(Path(sys.executable).with_name("caldav-server-tester"))
    if not Path(path).exists():
        pytest.fail("caldav-server-tester is missing: pip install the test extra")
    return path


def profile(config: Path) -> dict[str, str]:
    """Feature → support level, as caldav-server-tester reports them."""
    out = subprocess.run([peer_program(), "--format", "text", "--verbose"], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "CALDAV_CONFIG_FILE": str(config)})
    found = dict(re.findall(r"^## (\S+)\nFeature support level found: (\S+)", out.stdout, re.M))
    assert found, out.stderr[-2000:]
    return found


def write_config(path: Path, url: str, cert: Path | None) -> Path:
    section = {"caldav_url": url, "caldav_username": USER, "caldav_password": PASSWORD}
    if cert is not None:
        section["caldav_ssl_verify_cert"] = str(cert)
    path.write_text(json.dumps({"default": section}))
    return path


def start_radicale(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Stock Radicale (its own server, file storage, htpasswd) on a loopback port."""
    (tmp / "users").write_text(f"{USER}:{PASSWORD}\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "radicale", "--server-hosts", f"127.0.0.1:{port}",
                             "--storage-filesystem-folder", str(tmp / "collections"), "--auth-type", "htpasswd",
                             "--auth-htpasswd-filename", str(tmp / "users"), "--auth-htpasswd-encryption", "plain",
                             "--rights-type", "owner_only", "--logging-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            time.sleep(0.2)
    return proc, url


def test_schoolsuite_passes_every_check_stock_radicale_passes(dav: DavServer, tmp_path: Path) -> None:
    """Every feature stock Radicale supports fully, schoolsuite supports fully too (both profiles printed)."""
    ours = profile(write_config(tmp_path / "ours.json", dav.url("/dav/"), dav.instance.cert))
    proc, url = start_radicale(tmp_path)
    try:
        theirs = profile(write_config(tmp_path / "theirs.json", url, None))
    finally:
        stop_process(proc)
    print("schoolsuite:", dict(Counter(ours.values())), "stock Radicale:", dict(Counter(theirs.values())))
    for name in sorted(set(ours) | set(theirs)):
        if ours.get(name) != theirs.get(name):
            print(f"  {name}: schoolsuite={ours.get(name)} radicale={theirs.get(name)}")
    missing = [name for name, level in theirs.items() if level == "full" and ours.get(name) != "full"]
    assert not missing, missing
    assert sum(1 for level in ours.values() if level == "full") >= 80
