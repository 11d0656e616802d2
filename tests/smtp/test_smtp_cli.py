"""schoolsuite dkim generate|show and queue list|retry|delete on an instance."""

from __future__ import annotations

import re
import subprocess

import dkim

from support import Instance, schoolsuite_cmd


def cli(inst: Instance, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(schoolsuite_cmd("-c", str(inst.config), *args), capture_output=True, text=True, timeout=60)


def test_dkim_generate_prints_record_and_refuses_twice(instance: Instance) -> None:
    """dkim generate prints a TXT record whose key verifies a signature made with the stored key; a second run refuses."""
    out = cli(instance, "dkim", "generate", "School.Example.")
    assert out.returncode == 0, out.stderr
    assert "schoolsuite._domainkey.school.example. IN TXT" in out.stdout
    record = "".join(re.findall(r'"([^"]*)"', out.stdout.split("TXT", 1)[1]))
    assert record.startswith("v=DKIM1; k=rsa; p=")
    again = cli(instance, "dkim", "generate", "school.example")
    assert again.returncode == 2 and again.stderr.startswith("schoolsuite: ") and again.stderr.count("\n") == 1
    assert cli(instance, "dkim", "show", "school.example").stdout.strip() == out.stdout.strip().splitlines()[-1]

    from schoolsuite.services.dkim_keys import DkimSigner
    from schoolsuite.storage import Store, load_master_key

    store = Store.open(instance.dir / "data", load_master_key(instance.dir / "secrets" / "master.key"))
    try:
        signed = DkimSigner(store).sign(b"From: a@school.example\r\nSubject: s\r\n\r\nbody\r\n", "school.example")
    finally:
        store.close()
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record.encode())


def test_dkim_rotate_and_unknown_domain(instance: Instance) -> None:
    """--replace rotates the key (a new record); show for a domain without key exits 2."""
    first = cli(instance, "dkim", "generate", "school.example", "--selector", "s1").stdout
    second = cli(instance, "dkim", "generate", "school.example", "--selector", "s2", "--replace").stdout
    assert "s2._domainkey.school.example." in second and first.split("p=")[1] != second.split("p=")[1]
    missing = cli(instance, "dkim", "show", "other.example")
    assert missing.returncode == 2 and "no DKIM key for other.example" in missing.stderr


def test_queue_commands_on_empty_queue(instance: Instance) -> None:
    """queue list says the queue is empty; retry/delete of an unknown id exit 2 with one line."""
    assert cli(instance, "queue", "list").stdout == "queue is empty\n"
    for action in ("retry", "delete"):
        out = cli(instance, "queue", action, "00112233445566ff")
        assert out.returncode == 2 and out.stderr == "schoolsuite: no queued message 00112233445566ff\n"
    assert cli(instance, "queue", "delete", "not-hex").returncode == 2


def test_signer_leaves_unsignable_message_unchanged(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A message dkimpy cannot sign goes out unsigned instead of failing; a domain without key is untouched."""
    import os

    from schoolsuite.services import dkim_keys
    from schoolsuite.storage import Store

    store = Store.open(tmp_path / "d", os.urandom(32), map_size=1 << 28)
    try:
        dkim_keys.generate(store, "x.example")
        signer = dkim_keys.DkimSigner(store)
        assert signer.sign(b"not a message", "x.example") == b"not a message"
        plain = b"From: a@y.example\r\n\r\nbody\r\n"
        assert signer.sign(plain, "y.example") == plain
        assert signer.sign(b"From: a@x.example\r\n\r\nbody\r\n", "x.example").startswith(b"DKIM-Signature: v=1;")
    finally:
        store.close()
