"""End-to-end helpers: a loopback DNS server, aiosmtpd sinks, an instance with accounts and [smtp] settings."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope

from schoolsuite.storage import Store, load_master_key
from schoolsuite.storage import accounts as directory
from schoolsuite.storage import mail

HERE = Path(__file__).parent
PASSWORDS = {"alice@school.example": "Alice-pw-7f3k2m9q", "bob@school.example": "Bob-pw-9s8d7f6g"}


def set_section(config: Path, section: str, **values: Any) -> None:
    """Set keys of ``[section]`` in a config file (values rendered as TOML)."""
    text = config.read_text()
    head = f"[{section}]\n"
    start = text.index(head) + len(head)
    end = text.find("\n[", start)
    end = len(text) if end < 0 else end
    body = text[start:end]
    for key, value in values.items():
        rendered = ("true" if value else "false") if isinstance(value, bool) else (
            repr(value) if isinstance(value, (int, float)) else json.dumps(value))
        body, n = re.subn(rf"^{key} = .*$", f"{key} = {rendered}", body, flags=re.M)
        assert n == 1, key
    config.write_text(text[:start] + body + text[end:])


class DNSServer:
    """tests/smtp/dns_zone_server.py in a subprocess on 127.0.0.1:port."""

    def __init__(self, tmp: Path, port: int, zones: dict[str, list[list[Any]]]) -> None:
        self.port = port
        spec = tmp / "zones.json"
        spec.write_text(json.dumps({"zones": zones}))
        self.proc = subprocess.Popen([sys.executable, str(HERE / "dns_zone_server.py"), str(spec), str(port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"DNS test server did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]
    rcpt_options: list[str]


@dataclass
class SinkHandler:
    """Accepts everything except: 550 for local parts starting 'reject', 451 for 'later'."""

    messages: list[Received] = field(default_factory=list)
    event: threading.Event = field(default_factory=threading.Event)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Envelope, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        local = address.partition("@")[0]
        if local.startswith("reject"):
            return "550 5.1.1 No such user here"
        if local.startswith("later"):
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:  # noqa: N802
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or
                                      envelope.content, list(envelope.mail_options), list(envelope.rcpt_options)))
        self.event.set()
        return "250 2.0.0 Message accepted for delivery"

    def wait(self, count: int, timeout: float = 20) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages


def start_sink(host: str, port: int, **kw: Any) -> tuple[Controller, SinkHandler]:
    handler = SinkHandler()
    controller = Controller(handler, hostname=host, port=port, decode_data=False, **kw)
    controller.start()
    return controller, handler


def open_store(inst_dir: Path) -> Store:
    return Store.open(inst_dir / "data", load_master_key(inst_dir / "secrets" / "master.key"))


def inbox(inst_dir: Path, address: str) -> list[bytes]:
    """The messages in an account's INBOX, read through the store (another process may be serving)."""
    store = open_store(inst_dir)
    try:
        with store.read() as txn:
            account_id = directory.find_account_id(txn, address)
            user = txn.user(account_id)
            box = mail.require_mailbox(user, "INBOX")
            index = mail.load_index(user, box.id)
            out = []
            for uid in index.uids:
                stored = mail.get_message(user, box.id, uid)
                out.append(mail.read_message(user, stored.content_id))
            return out
    finally:
        store.close()


def wait_for(predicate: Any, timeout: float = 20, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def add_alias(inst_dir: Path, address: str, alias: str) -> None:
    store = open_store(inst_dir)
    try:
        with store.write() as txn:
            account = directory.find_account(txn, address)
            account.aliases.append(alias)
            directory.update_account(txn, account)
    finally:
        store.close()
