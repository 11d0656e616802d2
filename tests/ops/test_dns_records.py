"""``schoolsuite dns-records``: the records an operator publishes, checked by BIND's named-checkzone."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ops_helpers import new_instance
from ops_helpers import cli
from support import require_program


def _zone(records: str, domain: str) -> str:
    """The printed records inside a minimal zone (SOA, NS) so that named-checkzone can load them."""
    return (f"$ORIGIN {domain}.\n$TTL 3600\n@ IN SOA ns.{domain}. hostmaster.{domain}. 1 7200 900 1209600 300\n"
            f"@ IN NS ns.{domain}.\nns IN A 192.0.2.53\nmail IN A 192.0.2.25\n" + records)


def test_records_follow_the_config_and_load_in_bind(tmp_path: Path) -> None:
    """MX, SRV per listener port (RFC 6186/8314/6764), SPF, DKIM, DMARC and MTA-STS form a valid zone."""
    inst = new_instance(tmp_path)
    text = inst.config.read_text().replace('hostname = "localhost"', 'hostname = "mail.school.example"')
    inst.config.write_text(text)
    inst.set_listener("imap", enabled=False)
    assert cli(inst, "dkim", "generate", "school.example").returncode == 0
    proc = cli(inst, "dns-records")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "school.example.\t3600\tIN\tMX\t10 mail.school.example." in out
    assert f"_imaps._tcp.school.example.\t3600\tIN\tSRV\t0 1 {inst.ports['imaps']} mail.school.example." in out
    assert "_imap._tcp" not in out  # disabled listener: not advertised
    assert f"_submissions._tcp.school.example.\t3600\tIN\tSRV\t0 1 {inst.ports['submissions']} " in out
    assert f"_caldavs._tcp.school.example.\t3600\tIN\tSRV\t0 1 {inst.ports['https']} mail.school.example." in out
    assert '_carddavs._tcp.school.example.\t3600\tIN\tTXT\t"path=/dav/"' in out
    assert '"v=spf1 mx -all"' in out and "v=DMARC1; p=quarantine" in out
    assert re.search(r'^schoolsuite\._domainkey\.school\.example\.\t3600\tIN\tTXT\t\( "v=DKIM1; k=rsa; p=', out, re.M)
    assert re.search(r'^_mta-sts\.school\.example\.\t3600\tIN\tTXT\t"v=STSv1; id=[0-9a-f]{20}"$', out, re.M)
    checkzone = require_program("named-checkzone")
    zone = tmp_path / "school.example.zone"
    zone.write_text(_zone(out, "school.example"))
    check = subprocess.run([checkzone, "-k", "fail", "-n", "fail", "school.example", str(zone)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "OK" in check.stdout, check.stdout + check.stderr


def test_systemd_endpoints_publish_standard_ports(tmp_path: Path) -> None:
    """With socket activation the SRV records name the standard ports (993, 465, 443)."""
    inst = new_instance(tmp_path)
    for name in ("imaps", "submissions", "https"):
        inst.set_listener(name, endpoint=f"systemd:domain=INET6:name={name}")
    out = cli(inst, "dns-records").stdout
    assert "_imaps._tcp.school.example.\t3600\tIN\tSRV\t0 1 993 localhost." in out
    assert "_submissions._tcp.school.example.\t3600\tIN\tSRV\t0 1 465 localhost." in out
    assert "_caldavs._tcp.school.example.\t3600\tIN\tSRV\t0 1 443 localhost." in out
    assert "no DKIM key for school.example yet" in out
