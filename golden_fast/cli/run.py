"""`golden-fast run`: the main job. LGA chooses the layer on proxy facts, R-ROME (one by one) and
EMMET (one batch) edit the other facts there, and a report (HTML, Markdown, JSON) is written.

    golden-fast run --model smollm2-135m
    golden-fast run --model gemma3-270m --data counterfact-edit.json --n-edit 100

(--data: a local copy of a benchmark file such as CounterFact; `--data builtin` uses the small
fact set shipped with the package.)
"""

from __future__ import annotations

import argparse

from golden_fast.cli import add_threads_argument


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    from golden_fast.locate.lga import VARIANTS
    from golden_fast.run import RunSettings

    d = RunSettings()
    p.add_argument("--model", default=d.model, help=f"zoo name, local folder or HF id (default {d.model})")
    p.add_argument("--data", default=None, help="facts file (default: the built-in facts)")
    p.add_argument("--n-proxy", type=int, default=d.n_proxy, help="facts LGA reads")
    p.add_argument("--n-edit", type=int, default=d.n_edit, help="facts edited and evaluated (0: all the rest)")
    p.add_argument("--layer", type=int, default=None, help="edit at this layer (skips LGA)")
    p.add_argument("--lga-variant", default=d.lga_variant, choices=VARIANTS)
    p.add_argument("--locator", default=d.locator, choices=("lga", "hybrid"),
                   help="lga: seconds; hybrid: LGA's shortlist then trial edits, minutes, more reliable")
    p.add_argument("--methods", default=",".join(d.methods), help="comma-separated editors")
    p.add_argument("--mom2-n-samples", type=int, default=d.mom2_n_samples,
                   help="texts of the statistics corpus for C (0: the preset's)")
    p.add_argument("--out", default=None, help="report folder (default ./golden-fast-run-<model>)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-progress", action="store_true")
    add_threads_argument(p)


def settings_from(args: argparse.Namespace):
    from golden_fast.run import RunSettings

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if not methods:
        raise ValueError("--methods: name at least one editor")
    return RunSettings(model=args.model, data=args.data, n_proxy=args.n_proxy, n_edit=args.n_edit or None,
                       lga_variant=args.lga_variant, locator=args.locator,
                       mom2_n_samples=args.mom2_n_samples or None, layer=args.layer,
                       methods=methods, out=args.out, seed=args.seed, progress=not args.no_progress)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the main job: locate with LGA, edit, evaluate, report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from golden_fast.run import run_main

    run_main(settings_from(args))
    return 0
