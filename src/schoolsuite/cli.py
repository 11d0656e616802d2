"""The ``schoolsuite`` command line (interfaces.md is the contract).

Every operator mistake ends as one line ``schoolsuite: <message>`` on stderr
and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from schoolsuite import __version__
from schoolsuite.errors import UserError

EXIT_USAGE = 2
EXIT_FAILURE = 1


class _Parser(argparse.ArgumentParser):
    """argparse that reports misuse as one line, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"schoolsuite: {message} (see '{self.prog} --help')\n")


def _cmd_init(args: argparse.Namespace) -> int:
    from schoolsuite.instance import init_instance

    config = init_instance(Path(args.dir), args.domain, args.hostname)
    print(f"instance ready: {config}")
    print(f"run it with: schoolsuite serve -c {config}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from schoolsuite.config import load_config
    from schoolsuite.instance import find_config
    from schoolsuite.server import serve

    return serve(load_config(find_config(args)))


def config_option(parser: argparse.ArgumentParser, default: str | None = argparse.SUPPRESS) -> None:
    """``-c FILE``; on a subcommand (default SUPPRESS) it overrides the global one.

    Shared by the command modules (cli_accounts, cli_mail, cli_ops).
    """
    parser.add_argument("-c", "--config", metavar="FILE", default=default,
                        help="config file (default: $SCHOOLSUITE_CONFIG or ./schoolsuite.toml)")


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand."""
    parser = _Parser(prog="schoolsuite", description="Mail and groupware for schools, sealed at rest.")
    parser.add_argument("--version", action="version", version=f"schoolsuite {__version__}")
    config_option(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("init", help="make a ready-to-run instance in DIR")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--domain", default="school.example", help="mail domain (default: %(default)s)")
    p.add_argument("--hostname", default=None, help="host name for the TLS certificate (default: mail.DOMAIN)")
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("serve", help="run every configured listener")
    config_option(p)  # per-subcommand -c overrides the global one
    p.set_defaults(func=_cmd_serve)

    try:
        from schoolsuite import cli_accounts
    except ImportError:
        pass  # the account commands land separately
    else:
        cli_accounts.register(sub)
    try:
        from schoolsuite import cli_ops
    except ImportError:
        pass
    else:
        cli_ops.register(sub)  # admin-token, audit, dns-records, backup, restore (issue 7)
    try:
        from schoolsuite import cli_mail
    except ImportError:
        pass
    else:
        cli_mail.register(sub)  # queue list|retry|delete, dkim generate|show (issue 4)
    return parser


def _store_errors() -> tuple[type[BaseException], ...]:
    """Error types from the storage layer that are operator-facing one-liners."""
    try:
        from schoolsuite.storage import StoreError
        from schoolsuite.storage.crypto import MasterKeyError
    except ImportError:
        return ()
    return (StoreError, MasterKeyError)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).splitlines()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "command", None) == "init" and args.hostname is None:
        args.hostname = f"mail.{args.domain}"
    try:
        return int(args.func(args) or 0)
    except (UserError, *_store_errors()) as exc:
        print(f"schoolsuite: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("SCHOOLSUITE_DEBUG"):
            raise
        print(f"schoolsuite: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(set SCHOOLSUITE_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
