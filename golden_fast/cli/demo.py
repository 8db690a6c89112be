"""`golden-fast demo`: the main job on the embedded default (what `make demo` runs)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on the default model and built-in facts",
                       description=__doc__)
    p.add_argument("--model", default=None, help="model name or path (default: smollm2-135m)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N built-in facts")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from golden_fast.demo import run_demo

    return run_demo(model_name=args.model, limit=args.limit)
