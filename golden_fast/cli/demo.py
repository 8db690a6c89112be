"""`golden-fast demo`: what `make demo` runs. The model's structure and the built-in facts'
pre-edit table, then the main job (`golden-fast run`) on the embedded default."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on the default model and built-in facts",
                       description=__doc__)
    from golden_fast.cli.run import add_run_arguments

    add_run_arguments(p)
    p.add_argument("--structure-only", action="store_true", help="print the structure and pre-edit table only")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from golden_fast.cli.run import settings_from
    from golden_fast.demo import run_demo
    from golden_fast.run import run_main

    if args.structure_only:
        return run_demo(model_name=args.model)
    run_main(settings_from(args))
    return 0
