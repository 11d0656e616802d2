"""Fixtures for SMTP end-to-end tests: one running instance per module with DNS and sink on loopback."""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from schoolsuite.instance import init_instance
from smtp_e2e import PASSWORDS, DNSServer, SinkHandler, add_alias, set_section, start_sink
from support import LISTENERS, Instance, Running, active_listeners, free_port, schoolsuite_cmd, start_server


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
    run = start_server(schoolsuite_cmd("serve", "-c", str(inst.config)), expect=active_listeners())
    try:
        yield MailSystem(inst, run, dns, sink, sink_port, record, parents_pem)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
        controller.stop()
        dns.stop()


@pytest.fixture(scope="module")
def mailsys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailSystem]:
    """A running instance (alice with an alias, bob), DKIM key for school.example, loopback DNS and sink."""
    yield from start_mail_system(tmp_path_factory.mktemp("mail"))
