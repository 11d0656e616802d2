"""``schoolsuite queue list|retry|delete`` and ``schoolsuite dkim generate|show`` (mail transport)."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from schoolsuite.errors import UserError
from schoolsuite.instance import instance_store


def _when(ts: float) -> str:
    if not ts:
        return "now"
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _queue_list(args: argparse.Namespace) -> int:
    from schoolsuite.services.queue import list_queue

    with instance_store(args) as (_, store):
        entries = list_queue(store)
    if not entries:
        print("queue is empty")
        return 0
    for e in entries:
        pending = [r for r in e.recipients if r.status == "queued"]
        print(f"{e.id}  {e.size:>9}  queued {_when(e.created)}  next {_when(e.next_attempt)}  "
              f"attempts {e.attempts}  from <{e.sender}>")
        for r in pending:
            print(f"    <{r.address}>  {r.last_reply or 'not tried yet'}")
    return 0


def _queue_retry(args: argparse.Namespace) -> int:
    from schoolsuite.services.queue import retry_now

    with instance_store(args) as (_, store):
        if not retry_now(store, args.id):
            raise UserError(f"no queued message {args.id}")
    print(f"{args.id} will be retried at once")
    return 0


def _queue_delete(args: argparse.Namespace) -> int:
    from schoolsuite.services.queue import delete

    with instance_store(args) as (_, store):
        if not delete(store, args.id):
            raise UserError(f"no queued message {args.id}")
    print(f"{args.id} deleted (no notice sent)")
    return 0


def _check_domain(domain: str) -> str:
    from schoolsuite.config import check_hostname

    try:
        return check_hostname(domain)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _dkim_generate(args: argparse.Namespace) -> int:
    from schoolsuite.services import dkim_keys

    domain = _check_domain(args.domain)
    selector = _check_domain(args.selector) if args.selector else dkim_keys.DEFAULT_SELECTOR
    with instance_store(args) as (_, store):
        try:
            key = dkim_keys.generate(store, domain, selector, replace=args.replace)
        except dkim_keys.KeyExists as exc:
            raise UserError(str(exc)) from None
    print(f"DKIM key for {key.domain} created (private part sealed in the store).")
    print("Publish this DNS TXT record:")
    print(key.zone_line)
    return 0


def _dkim_show(args: argparse.Namespace) -> int:
    from schoolsuite.services import dkim_keys

    domain = _check_domain(args.domain)
    with instance_store(args) as (_, store):
        key = dkim_keys.describe(store, domain)
    if key is None:
        raise UserError(f"no DKIM key for {domain} (make one with 'schoolsuite dkim generate {domain}')")
    print(key.zone_line)
    return 0


def register(sub: Any) -> None:
    """Add the ``queue`` and ``dkim`` commands to the CLI."""
    from schoolsuite.cli import config_option

    queue = sub.add_parser("queue", help="inspect and manage the outbound mail queue")
    queue_sub = queue.add_subparsers(dest="queue_command", metavar="ACTION", parser_class=type(queue))
    queue_sub.required = True
    p = queue_sub.add_parser("list", help="list queued messages")
    p.set_defaults(func=_queue_list)
    p = queue_sub.add_parser("retry", help="try a queued message again at once")
    p.add_argument("id")
    p.set_defaults(func=_queue_retry)
    p = queue_sub.add_parser("delete", help="drop a queued message without notice")
    p.add_argument("id")
    p.set_defaults(func=_queue_delete)
    for p in queue_sub.choices.values():
        config_option(p)

    dkim = sub.add_parser("dkim", help="DKIM signing keys")
    dkim_sub = dkim.add_subparsers(dest="dkim_command", metavar="ACTION", parser_class=type(dkim))
    dkim_sub.required = True
    p = dkim_sub.add_parser("generate", help="create a domain's signing key and print its DNS record")
    p.add_argument("domain")
    p.add_argument("--selector", help="DKIM selector (default: schoolsuite)")
    p.add_argument("--replace", action="store_true", help="replace an existing key (rotation)")
    p.set_defaults(func=_dkim_generate)
    p = dkim_sub.add_parser("show", help="print the DNS record of a domain's key")
    p.add_argument("domain")
    p.set_defaults(func=_dkim_show)
    for p in dkim_sub.choices.values():
        config_option(p)
