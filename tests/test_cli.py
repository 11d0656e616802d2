"""The command line as operators meet it: exit codes and one-line errors, never a traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from support import schoolsuite_cmd


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "SCHOOLSUITE_CONFIG"}
    return subprocess.run(schoolsuite_cmd(*args), capture_output=True, text=True, timeout=60, cwd=cwd,
                          env={**clean, **(env or {})})


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *, contains: str, code: int = 2) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("schoolsuite: ") and contains in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_init_then_refuse(tmp_path: Path) -> None:
    """`init DIR` makes an instance (exit 0); a second `init DIR` exits 2 with one line."""
    ok = run("init", str(tmp_path / "i"), "--domain", "school.example")
    assert ok.returncode == 0, ok.stderr
    assert "hostname = \"mail.school.example\"" in (tmp_path / "i" / "schoolsuite.toml").read_text()
    assert_one_line_error(run("init", str(tmp_path / "i")), contains="refusing to overwrite")


@pytest.mark.parametrize("args, contains", [
    ((), "required"),
    (("frobnicate",), "invalid choice"),
    (("init",), "required: DIR"),
    (("serve", "--bogus"), "unrecognized arguments"),
    (("init", "x", "--domain", "a b"), "invalid DNS name"),
])
def test_misuse(tmp_path: Path, args: tuple[str, ...], contains: str) -> None:
    """Usage mistakes exit 2 with one line on stderr."""
    assert_one_line_error(run(*args, cwd=tmp_path), contains=contains)


def test_serve_without_instance(tmp_path: Path) -> None:
    """`serve` with no -c, no $SCHOOLSUITE_CONFIG and no ./schoolsuite.toml says there is no instance."""
    assert_one_line_error(run("serve", cwd=tmp_path), contains="no instance:")


def test_serve_missing_config_file(tmp_path: Path) -> None:
    """`serve -c` naming a missing file fails with one line naming it (global -c too)."""
    assert_one_line_error(run("serve", "-c", str(tmp_path / "x.toml")), contains="x.toml")
    assert_one_line_error(run("-c", str(tmp_path / "x.toml"), "serve"), contains="x.toml")


def test_serve_bad_config(tmp_path: Path) -> None:
    """A config with an unknown key stops `serve` with one line naming the key."""
    (tmp_path / "schoolsuite.toml").write_text("[listeners.imap]\nprot = 1\n")
    assert_one_line_error(run("serve", cwd=tmp_path), contains="[listeners.imap] unknown key 'prot'")


def test_env_config_is_used(tmp_path: Path) -> None:
    """$SCHOOLSUITE_CONFIG names the config when -c is absent."""
    (tmp_path / "c.toml").write_text("[auth]\nbogus = 1\n")
    assert_one_line_error(run("serve", env={"SCHOOLSUITE_CONFIG": str(tmp_path / "c.toml")}),
                          contains="c.toml: [auth] unknown key 'bogus'")


def test_version_and_help() -> None:
    """--version and --help exit 0."""
    assert run("--version").stdout.startswith("schoolsuite ")
    assert run("--help").returncode == 0
