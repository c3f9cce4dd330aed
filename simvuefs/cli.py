"""The ``simvuefs`` command: argument parsing, logging setup and exit codes.

This is the only module that calls ``sys.exit``. Every subcommand either returns an exit
status or raises :class:`simvuefs.logs.UsageError` / :class:`simvuefs.errors.SimvueError`,
which are printed as one line (never a traceback, never the token).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from simvuefs import __version__
from simvuefs.errors import SimvueError
from simvuefs.logs import UsageError

Handler = Callable[[argparse.Namespace], int]


def _add_devserver(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "devserver",
        help="run a local Simvue-compatible server (demos, tests, benchmarks)",
        description="Run a local Simvue-compatible server. Needs the 'devserver' extra.",
    )

    def run(args: argparse.Namespace) -> int:
        try:
            from simvuefs.devserver import cli as devserver_cli
        except ImportError as exc:
            raise UsageError(
                f"the devserver needs extra packages ({exc.name} is missing): "
                "pip install 'simvuefs[devserver]'"
            ) from None
        return devserver_cli.run(args)

    from simvuefs.devserver.arguments import add_arguments

    add_arguments(parser)
    parser.set_defaults(handler=run)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="simvuefs", description="Mount a Simvue server's runs as directories."
    )
    parser.add_argument("--version", action="version", version=f"simvuefs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_devserver(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line and exit with its status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        status = handler(args)
    except UsageError as exc:
        print(f"simvuefs: {exc}", file=sys.stderr)
        sys.exit(exc.exitcode)
    except SimvueError as exc:
        print(f"simvuefs: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(status)
