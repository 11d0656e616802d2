"""Operator commands: ``admin-token add|list|del``, ``audit``, ``dns-records``, ``backup DEST``, ``restore SRC DIR``."""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

from schoolsuite.errors import UserError
from schoolsuite.instance import instance_store


def _token_add(args: argparse.Namespace) -> int:
    from schoolsuite.services import audit
    from schoolsuite.services.admin_tokens import AdminTokens

    with instance_store(args) as (_, store):
        token = AdminTokens(store).add(args.label, audit.cli_actor())
    print(token)
    print(f"admin token {args.label!r}: give it to the portal as 'Authorization: Bearer <token>'; "
          "it is shown only this once", file=sys.stderr)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    from schoolsuite.services.admin_tokens import AdminTokens

    with instance_store(args) as (_, store):
        for info in AdminTokens(store).list():
            print(f"{info.label}\t{time.strftime('%Y-%m-%d %H:%M', time.gmtime(info.created))}")
    return 0


def _token_del(args: argparse.Namespace) -> int:
    from schoolsuite.services import audit
    from schoolsuite.services.admin_tokens import AdminTokens

    with instance_store(args) as (_, store):
        AdminTokens(store).delete(args.label, audit.cli_actor())
    print(f"revoked admin token {args.label!r}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from schoolsuite.services import audit

    with instance_store(args) as (_, store):
        since = time.time() - args.days * 86400 if args.days else 0.0
        for entry in audit.entries(store, since, args.limit):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.time))
            print(f"{stamp}\t{entry.actor}\t{entry.action}\t{entry.target}\t{entry.detail}")
    return 0


def _dns_records(args: argparse.Namespace) -> int:
    from schoolsuite.services import dkim_keys
    from schoolsuite.services.clientsetup import dns_records, mta_sts_policy

    with instance_store(args) as (config, store):
        key = dkim_keys.describe(store, config.instance.domain)
    dkim = None if key is None else (key.record_name, key.record_text)
    policy_id = hashlib.sha256(mta_sts_policy(config).encode()).hexdigest()[:20]
    print("\n".join(dns_records(config, dkim, policy_id)))
    return 0


def _backup(args: argparse.Namespace) -> int:
    from schoolsuite.services.backup import backup

    with instance_store(args) as (_, store):
        info = backup(store, Path(args.dest))
    print(f"backup written to {info.path}: {info.size} bytes in {info.seconds:.1f} s, sha256 {info.sha256}")
    print("the master key is not in it: keep secrets/master.key safe and apart from the backups",
          file=sys.stderr)
    return 0


def _restore(args: argparse.Namespace) -> int:
    from schoolsuite.config import CONFIG_NAME, load_config
    from schoolsuite.instance import _load_key
    from schoolsuite.services.backup import restore

    target = Path(args.dir)
    config_path = target / CONFIG_NAME if target.is_dir() else target
    if not config_path.is_file():
        raise UserError(f"no instance in {args.dir}: {config_path} does not exist (make one with 'schoolsuite init')")
    config = load_config(config_path)
    kept = restore(Path(args.src), config.paths.data_dir, _load_key(config), config.store.map_size,
                   replace=args.replace)
    print(f"restored {args.src} into {config.paths.data_dir}")
    if kept is not None:
        print(f"the store that was there is kept in {kept}")
    return 0


def register(sub: Any) -> None:
    """Add the operator commands to the CLI."""
    from schoolsuite.cli import config_option

    token = sub.add_parser("admin-token", help="manage bearer tokens of the provisioning API")
    token_sub = token.add_subparsers(dest="token_command", metavar="ACTION", parser_class=type(token))
    token_sub.required = True
    p = token_sub.add_parser("add", help="create a token (printed once)")
    p.add_argument("label")
    p.set_defaults(func=_token_add)
    p = token_sub.add_parser("list", help="list the tokens")
    p.set_defaults(func=_token_list)
    p = token_sub.add_parser("del", help="revoke a token")
    p.add_argument("label")
    p.set_defaults(func=_token_del)
    for p in token_sub.choices.values():
        config_option(p)

    p = sub.add_parser("audit", help="show the audit log of administrative actions")
    p.add_argument("--days", type=float, default=0, help="only the last DAYS days")
    p.add_argument("--limit", type=int, default=None, help="only the newest LIMIT entries")
    p.set_defaults(func=_audit)
    config_option(p)

    p = sub.add_parser("dns-records", help="print the DNS records to publish for the mail domain")
    p.set_defaults(func=_dns_records)
    config_option(p)

    p = sub.add_parser("backup", help="copy the store (consistent while the server runs) into DEST")
    p.add_argument("dest", metavar="DEST")
    p.set_defaults(func=_backup)
    config_option(p)

    p = sub.add_parser("restore", help="bring a backup SRC back as the store of the instance in DIR")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dir", metavar="DIR", help="instance directory (or its schoolsuite.toml)")
    p.add_argument("--replace", action="store_true",
                   help="replace the store that is there (it is kept as DATA_DIR.before-restore-TIME)")
    p.set_defaults(func=_restore)
