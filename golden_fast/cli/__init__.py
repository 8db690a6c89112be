"""`golden-fast` command line. Each subcommand lives in its own module exposing
`register(subparsers)`; errors become one clear line (a traceback only with --debug)."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand modules, in the order `--help` lists them
_COMMANDS = ["run", "models", "data", "edit", "stats", "evaluate", "locate", "experiment", "demo"]

# exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad input
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CLIError(Exception):
    """An error meant for the user: printed as one line, exit code `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="golden-fast",
        description="Locate the golden layer, edit facts in closed form, evaluate the edit.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMANDS:
        importlib.import_module(f"golden_fast.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("golden-fast: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line unless --debug
        if args.debug:
            raise
        code = getattr(exc, "code", None)
        code = code if isinstance(code, int) and code > 0 else (
            EXIT_USAGE if isinstance(exc, (ValueError, FileNotFoundError, KeyError)) else EXIT_FAILURE
        )
        print(f"golden-fast {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
