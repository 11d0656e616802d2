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

import base64
import smtplib
import ssl
from collections.abc import Iterator
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from schoolsuite.instance import init_instance
from schoolsuite.storage import Store, load_master_key
from schoolsuite.storage import accounts as directory
from schoolsuite.storage import mail
from support import LISTENERS, Instance, Running, active_listeners, free_port, schoolsuite_cmd, start_server, stop_process

HERE = Path(__file__).parent
ALICE, BOB = "alice@school.example", "bob@school.example"
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
        stop_process(self.proc, 5)


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


def inbox(inst_dir: Path, address: str, mailbox: str = "INBOX") -> list[bytes]:
    """The messages in an account's mailbox, read through the store (another process may be serving)."""
    store = open_store(inst_dir)
    try:
        with store.read() as txn:
            account_id = directory.find_account_id(txn, address)
            user = txn.user(account_id)
            box = mail.require_mailbox(user, mailbox)
            index = mail.load_index(user, box.id)
            out = []
            for uid in index.uids:
                stored = mail.get_message(user, box.id, uid)
                out.append(mail.read_message(user, stored.content_id))
            return out
    finally:
        store.close()


def wait_for(predicate: Any, timeout: float = 40, interval: float = 0.2) -> Any:
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


@dataclass
class MailSystem:
    inst: Instance
    run: Running
    dns: DNSServer
    sink: SinkHandler
    sink_port: int
    dkim_record: str  # the TXT value `schoolsuite dkim generate` printed for school.example
    parents_key: bytes  # PEM of parents.example's DKIM key (selector p1)

    def port(self, name: str) -> int:
        return self.inst.ports[name]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(schoolsuite_cmd("-c", str(self.inst.config), *args), capture_output=True, text=True,
                              timeout=60)


def _key() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def make_instance(tmp: Path) -> Instance:
    inst = Instance(tmp / "inst", init_instance(tmp / "inst", "school.example", "localhost"))
    for name in LISTENERS:
        inst.ports[name] = free_port()
        inst.set_listener(name, endpoint=f"tcp:{inst.ports[name]}:interface=127.0.0.1")
    for address, password in PASSWORDS.items():
        subprocess.run(schoolsuite_cmd("-c", str(inst.config), "user", "add", address, "--password-stdin"),
                       input=password + "\n", text=True, check=True, capture_output=True, timeout=60)
    add_alias(inst.dir, "alice@school.example", "alice.alias@school.example")
    return inst


def zones(dkim_record: str, parents_record: str) -> dict[str, list[list[Any]]]:
    return {
        "school.example": [["schoolsuite._domainkey.school.example", "TXT", dkim_record]],
        "remote.example": [["remote.example", "MX", 10, "mx.remote.example"], ["mx.remote.example", "A", "127.0.0.1"]],
        "later.example": [["later.example", "MX", 10, "mx.later.example"], ["mx.later.example", "A", "127.0.0.3"]],
        "nullmx.example": [["nullmx.example", "MX", 0, ""]],
        "parents.example": [["parents.example", "TXT", "v=spf1 ip4:127.0.0.1 -all"],
                            ["_dmarc.parents.example", "TXT", "v=DMARC1; p=reject"],
                            ["p1._domainkey.parents.example", "TXT", parents_record]],
        "bank.example": [["bank.example", "TXT", "v=spf1 ip4:192.0.2.1 -all"],
                         ["_dmarc.bank.example", "TXT", "v=DMARC1; p=reject; adkim=s"]],
        "news.example": [["news.example", "TXT", "v=spf1 ip4:192.0.2.1 -all"],
                         ["_dmarc.news.example", "TXT", "v=DMARC1; p=quarantine"]],
    }


def start_mail_system(tmp: Path, *, sink_port: int | None = None, **smtp: Any) -> Iterator[MailSystem]:
    inst = make_instance(tmp)
    generated = subprocess.run(schoolsuite_cmd("-c", str(inst.config), "dkim", "generate", "school.example"),
                               capture_output=True, text=True, check=True, timeout=60).stdout
    record = "".join(re.findall(r'"([^"]*)"', generated.split("TXT", 1)[1]))
    parents_pem, parents_record = _key()
    dns = DNSServer(tmp, free_port(), zones(record, parents_record))
    sink_port = sink_port or free_port()
    controller, sink = start_sink("127.0.0.1", sink_port)
    settings = dict(dns_servers=f"127.0.0.1:{dns.port}", outbound_port=sink_port, queue_retry_initial_seconds=1,
                    queue_retry_max_seconds=2, queue_poll_seconds=0.2)
    settings.update(smtp)
    set_section(inst.config, "smtp", **settings)
    run = start_server(schoolsuite_cmd("serve", "-c", str(inst.config)), expect=active_listeners(), timeout=60)
    try:
        yield MailSystem(inst, run, dns, sink, sink_port, record, parents_pem)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
        controller.stop()
        dns.stop()


def tls_context(m: MailSystem) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(m.inst.cert))


def message(sender: str, to: str, subject: str, body: str = "Hello from the test.\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content(body)
    return msg


def submit(m: MailSystem, msg: EmailMessage, *, implicit: bool = False, user: str = ALICE,
           rcpts: list[str] | None = None, sender: str | None = None) -> dict:
    if implicit:
        client = smtplib.SMTP_SSL("localhost", m.port("submissions"), context=tls_context(m), timeout=20)
    else:
        client = smtplib.SMTP("localhost", m.port("submission"), timeout=20)
        client.starttls(context=tls_context(m))
    with client:
        client.login(user, PASSWORDS[user])
        return client.send_message(msg, from_addr=sender, to_addrs=rcpts)
