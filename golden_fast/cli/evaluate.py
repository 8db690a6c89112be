"""`golden-fast evaluate`: score a model on edit requests (the knowedit, counterfact and soft suites,
golden_fast/FORMULAS.md, section "Evaluation metrics") and print the report.

    golden-fast evaluate --model smollm2-135m --data counterfact-edit.json \\
        --limit 200 --suites knowedit counterfact --json pre.json

Without --pre the model is taken as the pre-edit reference (locality is absent; the saved
JSON carries the predictions a later `--pre pre.json` run compares against).
"""

from __future__ import annotations

import argparse
import time

from golden_fast.cli import CLIError, add_threads_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a model on edit requests (KnowEdit / CounterFact metrics)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="zoo name, tiny-* name, local folder or Hugging Face id")
    p.add_argument("--data", required=True, help="a CounterFact/zsRE/KnowEdit/golden-fast file, or 'builtin'")
    p.add_argument("--format", default=None, help="data format (default: detected from the records)")
    p.add_argument("--limit", type=int, default=None, help="only the first N requests (after --offset)")
    p.add_argument("--offset", type=int, default=0, help="skip the first N requests")
    p.add_argument(
        "--suites",
        nargs="+",
        default=["knowedit"],
        metavar="SUITE",
        help="knowedit, counterfact and/or soft (also comma-separated); default: knowedit",
    )
    p.add_argument(
        "--fluency", action="store_true", help="also sample text and measure n-gram entropy (slow)"
    )
    p.add_argument(
        "--pre", default=None, metavar="JSON", help="a report of the unedited model (for locality)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="rows per forward pass (default 64)")
    p.add_argument(
        "--max-tokens", type=int, default=4096, help="padded tokens per forward pass (default 4096)"
    )
    p.add_argument("--dtype", default="float32", help="model dtype (float32, bfloat16, float16)")
    p.add_argument("--device", default="cpu", help="device to load the model on (cpu, cuda, ...)")
    p.add_argument("--seed", type=int, default=0, help="fluency sampling and bootstrap seed")
    p.add_argument("--json", default=None, metavar="PATH", help="write the full report as JSON")
    p.add_argument("--csv", default=None, metavar="PATH", help="write the per-request rows as CSV")
    add_threads_argument(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from golden_fast.data import load
    from golden_fast.evaluate import SUITES, EvalReport, evaluate
    from golden_fast.models import load_model

    suites = [s.strip() for part in args.suites for s in part.split(",") if s.strip()]
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        raise CLIError(f"unknown suite(s) {unknown or suites}; known: {', '.join(SUITES)}", code=2)
    if args.limit is not None and args.limit < 1:
        raise CLIError("--limit must be >= 1", code=2)
    if args.batch_size < 1 or args.max_tokens < 1:
        raise CLIError("--batch-size and --max-tokens must be >= 1", code=2)
    pre = EvalReport.from_json(args.pre) if args.pre else None

    requests = load(args.data, format=args.format, limit=args.limit, offset=args.offset)
    if not requests:
        raise CLIError(f"no requests in {args.data} (offset {args.offset}, limit {args.limit})", code=2)
    t0 = time.perf_counter()
    model, tok = load_model(args.model, dtype=args.dtype, device=args.device)
    print(
        f"model {args.model} ({args.dtype}, {args.device}, loaded in {time.perf_counter() - t0:.1f} s); "
        f"{len(requests)} request(s) from {args.data}"
    )
    report = evaluate(
        model,
        tok,
        requests,
        pre=pre,
        suites=suites,
        fluency=args.fluency,
        batch_size=args.batch_size,
        max_tokens=args.max_tokens,
        seed=args.seed,
        model_name=args.model,
    )
    print(report.table())
    meta = report.meta
    print(
        f"scored {meta['n_scored_sequences']} sequences in {meta['scoring_seconds']:.1f} s "
        f"({len(requests) / max(meta['scoring_seconds'], 1e-9):.1f} requests/s); "
        f"total {meta['total_seconds']:.1f} s"
    )
    if args.json:
        report.to_json(args.json)
        print(f"report: {args.json}")
    if args.csv:
        report.to_csv(args.csv)
        print(f"rows: {args.csv}")
    return 0
