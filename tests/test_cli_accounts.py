"""``schoolsuite user …`` and ``app-password …``: the contract of interfaces.md."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from schoolsuite.cli import main

PASSWORD = "a good long password"


@pytest.fixture
def run(instance, monkeypatch, capsys):
    """Run the CLI in-process against the instance: (exit code, stdout, stderr)."""
    monkeypatch.setenv("SCHOOLSUITE_CONFIG", str(instance.config))

    def _run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run


def test_user_lifecycle(run):
    """add, list, show, passwd and del work, and del makes the user unknown."""
    assert run("user", "add", "Ana@School.Example", "--name", "Ana B", "--quota", "5G", "--password-stdin",
               stdin=PASSWORD + "\n")[0] == 0
    code, out, _ = run("user", "list")
    assert code == 0 and out.split("\t")[0] == "ana@school.example"
    code, out, _ = run("user", "show", "ana@school.example")
    assert "quota:         5G" in out and "Ana B" in out and "argon2" not in out
    assert run("user", "passwd", "ana@school.example", "--password-stdin", stdin="another fine password\n")[0] == 0
    assert run("user", "del", "ana@school.example")[0] == 0
    code, _, err = run("user", "show", "ana@school.example")
    assert code == 2 and err == "schoolsuite: no such user: ana@school.example\n"


def test_app_password_lifecycle(run):
    """app-password add prints the password once; list shows labels; del removes it."""
    run("user", "add", "ana@school.example", "--password-stdin", stdin=PASSWORD)
    code, out, err = run("app-password", "add", "ana@school.example", "iPhone")
    assert code == 0 and len(out.strip()) == 24 and "shown only this once" in err
    code, out, _ = run("app-password", "list", "ana@school.example")
    assert out.startswith("iPhone\t") and out.count("\n") == 1
    assert run("app-password", "del", "ana@school.example", "iPhone")[0] == 0
    assert run("app-password", "list", "ana@school.example")[1] == ""


@pytest.mark.parametrize(
    "argv,stdin,message",
    [
        (("user", "add", "not-an-address", "--password-stdin"), PASSWORD, "malformed address"),
        (("user", "add", "a@school.example", "--password-stdin"), "\n", "the password is empty"),
        (("user", "add", "a@school.example", "--password-stdin"), "short\n", "too short"),
        (("user", "add", "a@school.example", "--quota", "lots", "--password-stdin"), PASSWORD, "malformed quota"),
        (("user", "add", "a@school.example"), "", "--password-stdin"),
        (("user", "del", "nobody@school.example"), "", "no such user"),
        (("user", "passwd", "nobody@school.example", "--password-stdin"), PASSWORD, "no such user"),
        (("app-password", "add", "nobody@school.example", "x"), "", "no such user"),
        (("app-password", "del", "nobody@school.example", "x"), "", "no such user"),
    ],
)
def test_misuse_is_one_line_and_makes_nothing(run, argv, stdin, message):
    """Bad input exits non-zero with one clear line and leaves no account behind."""
    code, out, err = run(*argv, stdin=stdin)
    assert code != 0 and err.count("\n") == 1 and err.startswith("schoolsuite: ") and message in err
    assert run("user", "list")[1] == ""


def test_duplicate_user(run):
    """A second add of the same address (in any case) is refused."""
    run("user", "add", "ana@school.example", "--password-stdin", stdin=PASSWORD)
    code, _, err = run("user", "add", "ANA@school.example", "--password-stdin", stdin=PASSWORD)
    assert code == 2 and "exists already" in err


def test_missing_instance(tmp_path, monkeypatch):
    """Without an instance the command says so in one line (real subprocess, no traceback)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "schoolsuite", "user", "list"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and proc.stderr.startswith("schoolsuite: no instance")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_cli_user_add_makes_everything_a_teacher_needs(run, instance):
    """`user add` from the CLI (no protocol module loaded) creates mailboxes, calendar, address book and file space."""
    from schoolsuite.config import load_config
    from schoolsuite.instance import open_store
    from schoolsuite.storage import accounts as directory
    from schoolsuite.storage import dav, files, mail

    assert run("user", "add", "ana@school.example", "--password-stdin", stdin=PASSWORD)[0] == 0
    store = open_store(load_config(instance.config))
    try:
        with store.read() as txn:
            user = txn.user(directory.find_account_id(txn, "ana@school.example"))
            names = {m.name for m in mail.list_mailboxes(user)}
            assert {"INBOX", "Drafts", "Sent", "Trash", "Junk", "Archive"} <= names
            collections = dav.list_collections(user)
            tags = " ".join(str(c) for c in collections)
            assert "VCALENDAR" in tags and "VADDRESSBOOK" in tags
            assert files.root(user) is not None
    finally:
        store.close()
