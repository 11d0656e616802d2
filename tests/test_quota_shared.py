"""One quota per account, shared by mail and files, over real IMAP and WebDAV connections."""

from __future__ import annotations

import base64
import http.client
import imaplib
import re
import ssl
import subprocess

from support import schoolsuite_cmd

PASSWORD = "a good long password"
ADDRESS = "ana@school.example"


def _add_user(instance, quota: str) -> None:
    subprocess.run(schoolsuite_cmd("-c", str(instance.config), "user", "add", ADDRESS, "--quota", quota,
                                   "--password-stdin"), input=PASSWORD + "\n", text=True, check=True,
                   capture_output=True, timeout=60)


def _put(instance, name: str, size: int) -> int:
    ctx = ssl.create_default_context(cafile=str(instance.cert))
    conn = http.client.HTTPSConnection("localhost", instance.ports["https"], context=ctx, timeout=30)
    auth = base64.b64encode(f"{ADDRESS}:{PASSWORD}".encode()).decode()
    conn.request("PUT", f"/files/{ADDRESS}/{name}", body=b"x" * size, headers={"Authorization": f"Basic {auth}"})
    status = conn.getresponse().status
    conn.close()
    return status


def test_files_and_mail_draw_on_one_quota(running):
    """Files stored over WebDAV count against IMAP APPEND, and mail counts against WebDAV PUT."""
    instance, _ = running
    _add_user(instance, "1M")
    assert _put(instance, "report.bin", 700_000) in (200, 201, 204)

    ctx = ssl.create_default_context(cafile=str(instance.cert))
    imap = imaplib.IMAP4_SSL("localhost", instance.ports["imaps"], ssl_context=ctx, timeout=30)
    try:
        imap.login(ADDRESS, PASSWORD)
        typ, data = imap.getquotaroot("INBOX")
        storage = re.search(rb"STORAGE (\d+) (\d+)", b" ".join(x for x in data[1] if isinstance(x, bytes)))
        assert storage and int(storage.group(1)) >= 683 and int(storage.group(2)) == 1024  # KiB
        message = b"Subject: big\r\n\r\n" + b"y" * 500_000 + b"\r\n"
        typ, data = imap.append("INBOX", None, None, message)
        assert typ == "NO" and b"OVERQUOTA" in data[0]
        small = b"Subject: small\r\n\r\n" + b"z" * 200_000 + b"\r\n"
        assert imap.append("INBOX", None, None, small)[0] == "OK"
    finally:
        imap.logout()
    # 700 KB of files + 200 KB of mail: another 200 KB file no longer fits.
    assert _put(instance, "more.bin", 200_000) == 507
