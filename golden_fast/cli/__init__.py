"""`golden-fast` command line. Each subcommand lives in its own module exposing
`register(subparsers)`; errors become one clear line (a traceback only with --debug).

Under torchrun (`torchrun --nproc-per-node 2 -m golden_fast experiment ...`) every process runs the
command in one process group (`golden_fast.distributed`); only rank 0 prints to stdout."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Iterator

# subcommand modules, in the order `--help` lists them
_COMMANDS = ["run", "models", "data", "edit", "stats", "evaluate", "locate", "experiment", "plan", "demo"]

# exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad input
EXIT_FAILURE = 1
EXIT_USAGE = 2


# Torch's default of one OpenMP thread per core stalls at every barrier once another job holds a core:
# the same command can run many times slower on a shared machine or a busy laptop. Every long command
# takes --threads; $GOLDEN_FAST_THREADS is the default for all of them.
THREADS_ENV = "GOLDEN_FAST_THREADS"
THREADS_HELP = (
    f"torch CPU threads (default: ${THREADS_ENV}, else torch's one per core). When another job holds a "
    "core, torch's default waits at its barriers and runs many times slower: use --threads 1 there"
)


class CLIError(Exception):
    """An error meant for the user: printed as one line, exit code `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    """The --threads option of a long-running command (applied by `main` before the command runs)."""
    p.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)


def apply_threads(threads: int | None) -> int | None:
    """Set torch's CPU thread count from --threads, else from $GOLDEN_FAST_THREADS; the count set, or None."""
    source = "--threads"
    if threads is None and os.environ.get(THREADS_ENV, "").strip():
        source, text = f"${THREADS_ENV}", os.environ[THREADS_ENV].strip()
        try:
            threads = int(text)
        except ValueError:
            raise CLIError(f"{source} must be a positive integer, got {text!r}", code=EXIT_USAGE) from None
    if threads is None:
        return None
    if threads < 1:
        raise CLIError(f"{source} must be >= 1, got {threads}", code=EXIT_USAGE)
    import torch

    torch.set_num_threads(threads)
    return threads


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


def _several_processes() -> bool:
    """What torchrun's $WORLD_SIZE says, read without importing torch (a single process needs nothing)."""
    return os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1")


def join_ranks() -> bool:
    """Under torchrun, join the process group before the command runs; True when this call made it
    (so `leave_ranks` is this process's to call)."""
    if not _several_processes():
        return False
    import torch.distributed as dist

    from golden_fast import distributed

    if not distributed.launched() or (dist.is_available() and dist.is_initialized()):
        return False
    return distributed.init()


def leave_ranks(ok: bool) -> None:
    """Destroy the process group; after a success, once every rank is done (a failed rank's peers
    may never come to the barrier: torchrun stops them)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    if ok:
        dist.barrier()
    dist.destroy_process_group()


@contextlib.contextmanager
def main_rank_prints() -> Iterator[None]:
    """Ranks other than 0 print nothing to stdout (errors still go to stderr)."""
    if not _several_processes():
        yield
        return
    from golden_fast import distributed

    if distributed.is_main():
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        yield


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    owned = join_ranks()
    code = EXIT_FAILURE
    try:
        with main_rank_prints():
            code = _run_command(args)
        return code
    finally:
        if owned:
            leave_ranks(ok=code == 0)


def _run_command(args: argparse.Namespace) -> int:
    try:
        if hasattr(args, "threads"):
            apply_threads(args.threads)
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
