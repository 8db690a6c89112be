"""`golden-fast edit`: edit facts into a model, print what each edit cost, save the journal.

    golden-fast edit --model smollm2-135m --method r-rome --layers 6 --data builtin --limit 10 \\
        --mode sequential --save-journal edits/run1

The saved journal replays the edit on a fresh copy of the model (`golden_fast.edit.apply_journal`),
bit for bit. --mode sequential edits the requests one after another, each on the model left by
the previous ones (lifelong editing); --mode batch computes them all on the unedited weights and
applies them as one update (native for MEMIT/EMMET; for ROME/R-ROME a sum of independent rank-one
updates, which ROME was not designed for). The default is the method's own: sequential for
ROME/R-ROME, batch for MEMIT/EMMET.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from golden_fast.cli import CLIError, add_threads_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "edit", help="edit facts with any registered editor (ROME, R-ROME, MEMIT, EMMET, ...) and save the journal",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="zoo name, tiny-* name, local folder or Hugging Face id")
    from golden_fast.edit.registry import editor_names

    p.add_argument("--method", default=None, choices=editor_names(),
                   help="editing method (default: the --hparams file's, else r-rome)")
    p.add_argument("--layers", default=None, type=_parse_layers,
                   help="layer(s) to edit: 6, 3,4,5 or 3-8 (default: the method's preset for the model)")
    p.add_argument("--data", required=True, help="a CounterFact/zsRE/KnowEdit/golden-fast file, or 'builtin'")
    p.add_argument("--format", default=None, help="data format (default: detected from the records)")
    p.add_argument("--limit", type=int, default=None, help="edit only the first N requests (after --offset)")
    p.add_argument("--offset", type=int, default=0, help="skip the first N requests")
    p.add_argument("--mode", choices=("batch", "sequential"), default=None,
                   help="sequential (one after another) or batch (all at once); default: the method's own")
    p.add_argument("--batch-size", type=int, default=None,
                   help="with --mode sequential: requests per step (MEMIT/EMMET chunks; default 1)")
    p.add_argument("--hparams", default=None, help="YAML/JSON hyperparameter file (default: the preset)")
    p.add_argument("--save-journal", required=True, metavar="DIR", help="directory to save the journal to")
    p.add_argument("--include-originals", action="store_true",
                   help="also save the pre-edit weights of the edited layers (as large as those layers)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing journal directory")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "float64"),
                   help="model dtype (default float32); replaying a journal needs the same dtype")
    p.add_argument("--device", default="cpu", help="device to load the model on (cpu, cuda, cuda:1, ...)")
    p.add_argument("--evaluate", action="store_true",
                   help="evaluate before and after the edit (golden_fast.evaluate) and print both")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="end with one JSON line summarising the run")
    add_threads_argument(p)
    p.set_defaults(func=_run)


def _parse_layers(text: str) -> list[int]:
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:  # a range, inclusive (layers are never negative)
                lo, hi = part.split("-", 1)
                out += list(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"layers must look like 6, 3,4,5 or 3-8; got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("no layer given")
    return out


def _evaluate_fn():
    """golden_fast.evaluate.evaluate when the evaluation package provides it, else None."""
    try:
        from golden_fast.evaluate import evaluate
    except ImportError:
        return None
    return evaluate


def _run(args: argparse.Namespace) -> int:
    from golden_fast.data import load
    from golden_fast.edit import Editor
    from golden_fast.models import load_model

    if args.limit is not None and args.limit < 1:
        raise CLIError("--limit must be >= 1", code=2)
    if Path(args.save_journal).exists() and not args.overwrite:
        # checked now, not after a long edit
        raise CLIError(f"{args.save_journal} exists; pass --overwrite to replace it", code=2)
    evaluate = None
    if args.evaluate:
        evaluate = _evaluate_fn()
        if evaluate is None:
            raise CLIError("--evaluate needs golden_fast.evaluate.evaluate, which this install lacks", code=2)

    requests = load(args.data, format=args.format, limit=args.limit, offset=args.offset)
    if not requests:
        raise CLIError(f"no requests in {args.data} (offset {args.offset}, limit {args.limit})", code=2)
    t0 = time.perf_counter()
    model, tok = load_model(args.model, dtype=args.dtype, device=args.device)
    t_load = time.perf_counter() - t0
    editor = Editor(model, tok, method=args.method, layers=args.layers, hparams=args.hparams,
                    progress=not args.no_progress)
    print(f"model {args.model} ({args.dtype}, {args.device}, loaded in {t_load:.1f} s); "
          f"method {editor.method}, layers {editor.layers}; {len(requests)} request(s) from {args.data}")

    pre = evaluate(model, tok, requests) if evaluate is not None else None
    result = editor.edit(requests, mode=args.mode, batch_size=args.batch_size)
    print(result.summary())
    path = result.journal.save(args.save_journal, include_originals=args.include_originals,
                               overwrite=args.overwrite)
    print(f"journal: {len(result.journal)} update(s) on layer(s) {result.journal.touched_layers}, "
          f"saved to {path}")

    if evaluate is not None:
        post = evaluate(model, tok, requests, pre=pre)
        print(post.table())

    if args.json:
        print(json.dumps({
            "model": args.model,
            "method": result.method,
            "mode": result.mode,
            "layers": editor.layers,
            "n_requests": len(requests),
            "wall_time_s": round(result.wall_time, 4),
            "update_norms": {str(k): v for k, v in result.update_norms.items()},
            "final_losses": [t.loss_curve[-1] if t.loss_curve else None for t in result.traces],
            "journal": str(path),
        }))
    return 0
