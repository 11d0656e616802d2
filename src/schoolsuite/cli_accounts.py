"""``schoolsuite user …`` and ``schoolsuite app-password …`` (interfaces.md)."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import Any

from schoolsuite.errors import UserError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_quota(text: str) -> int:
    """``5G``, ``500M``, ``1T`` or a number of bytes."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (value[:-1], value[-1]) if value[-1:] in _UNITS and value[-1:] else (value, "")
    try:
        amount = float(number)
    except ValueError:
        raise UserError(f"malformed quota {text!r}: expected e.g. 5G, 500M or a number of bytes") from None
    if amount <= 0:
        raise UserError(f"the quota must be positive, not {text!r}")
    return int(amount * _UNITS[unit])


def _format_bytes(n: int | None) -> str:
    if n is None:
        return "none"
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit] and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Again: "):
            raise UserError("the passwords differ")
        return first
    raise UserError("give the password on standard input with --password-stdin")


def _run(args: argparse.Namespace, action: Any) -> int:
    from schoolsuite.instance import instance_store
    from schoolsuite.services.accounts import AccountService
    from schoolsuite.services.audit import cli_actor

    with instance_store(args) as (_, store):
        # Operator actions go to the audit log.
        return int(action(AccountService(store, actor=cli_actor())) or 0)


def _user_add(args: argparse.Namespace) -> int:
    password = _read_password(args)
    quota = parse_quota(args.quota) if args.quota else None

    def act(service: Any) -> None:
        info = service.add(args.address, password, name=args.name or "", quota=quota)
        print(f"created {info.address}")

    return _run(args, act)


def _user_passwd(args: argparse.Namespace) -> int:
    password = _read_password(args)
    return _run(args, lambda s: (s.set_password(args.address, password), print("password changed"))[0])


def _user_del(args: argparse.Namespace) -> int:
    def act(service: Any) -> None:
        service.delete(args.address)
        print(f"deleted {args.address}: its data key is destroyed")

    return _run(args, act)


def _user_list(args: argparse.Namespace) -> int:
    def act(service: Any) -> None:
        for info in service.list():
            flag = "" if info.active else "\t(disabled)"
            print(f"{info.address}\t{info.name}{flag}")

    return _run(args, act)


def _user_show(args: argparse.Namespace) -> int:
    def act(service: Any) -> None:
        info = service.get(args.address)
        created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info.created))
        print(f"address:       {info.address}")
        print(f"name:          {info.name}")
        print(f"quota:         {_format_bytes(info.quota)}")
        print(f"active:        {'yes' if info.active else 'no'}")
        print(f"created:       {created}")
        print(f"aliases:       {', '.join(info.aliases) or '-'}")
        print(f"app passwords: {', '.join(label for label, _ in info.app_passwords) or '-'}")

    return _run(args, act)


def _app_add(args: argparse.Namespace) -> int:
    def act(service: Any) -> None:
        secret = service.add_app_password(args.address, args.label)
        print(secret)
        print(f"app password {args.label!r} for {args.address}; it is shown only this once", file=sys.stderr)

    return _run(args, act)


def _app_list(args: argparse.Namespace) -> int:
    def act(service: Any) -> None:
        for label, created in service.list_app_passwords(args.address):
            print(f"{label}\t{time.strftime('%Y-%m-%d %H:%M', time.gmtime(created))}")

    return _run(args, act)


def _app_del(args: argparse.Namespace) -> int:
    return _run(args, lambda s: (s.delete_app_password(args.address, args.label), print("deleted"))[0])


def register(sub: Any) -> None:
    """Add the ``user`` and ``app-password`` commands to the CLI."""
    from schoolsuite.cli import config_option

    user = sub.add_parser("user", help="manage accounts")
    user_sub = user.add_subparsers(dest="user_command", metavar="ACTION", parser_class=type(user))
    user_sub.required = True

    p = user_sub.add_parser("add", help="create an account")
    p.add_argument("address")
    p.add_argument("--name", help="full name")
    p.add_argument("--quota", help="storage quota, e.g. 5G")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=_user_add)

    p = user_sub.add_parser("passwd", help="set an account's password")
    p.add_argument("address")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=_user_passwd)

    for name, func, text in (("del", _user_del, "delete an account and destroy its data key"),
                             ("show", _user_show, "show an account")):
        p = user_sub.add_parser(name, help=text)
        p.add_argument("address")
        p.set_defaults(func=func)
    p = user_sub.add_parser("list", help="list the accounts")
    p.set_defaults(func=_user_list)
    for p in user_sub.choices.values():
        config_option(p)

    app = sub.add_parser("app-password", help="manage per-device passwords")
    app_sub = app.add_subparsers(dest="app_command", metavar="ACTION", parser_class=type(app))
    app_sub.required = True
    p = app_sub.add_parser("add", help="generate an app password (printed once)")
    p.add_argument("address")
    p.add_argument("label")
    p.set_defaults(func=_app_add)
    p = app_sub.add_parser("list", help="list an account's app passwords")
    p.add_argument("address")
    p.set_defaults(func=_app_list)
    p = app_sub.add_parser("del", help="delete an app password")
    p.add_argument("address")
    p.add_argument("label")
    p.set_defaults(func=_app_del)
    for p in app_sub.choices.values():
        config_option(p)
