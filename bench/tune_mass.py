"""How the MEMIT / EMMET presets were found: a sweep of mom2_update_weight (lambda, the weight of
C against the batch's own keys) on one batch of CounterFact facts, rewrite and locality per value.

The targets z (the v* of MEMIT, optimised at the last edited layer) do not depend on lambda, so
they are optimised once per method and reused for every value of the sweep; only the per-layer
solves and the evaluation are repeated. Results are appended per (method, lambda) to
--out/sweep.jsonl; a rerun skips the values already there.

    python bench/tune_mass.py --n 100 --methods memit,emmet --lambdas 1000,5000,15000,50000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from golden_fast.data import builtin_facts, load
from golden_fast.data.location import data_dir
from golden_fast.edit import Editor
from golden_fast.edit.config import preset
from golden_fast.edit.methods import memit as memit_module
from golden_fast.edit.target_cache import TARGET_FIELDS
from golden_fast.evaluate import EvalReport, evaluate
from golden_fast.models import load_model

DATA = (data_dir() or Path("data")) / "counterfact" / "counterfact-edit.json"  # $GOLDEN_FAST_DATA


def _cached_targets(real):
    """optimise_targets, memoised on the fields the targets depend on: lambda (the sweep's only
    change) and the solve's other settings are left out, so MEMIT and EMMET share their z when
    their v* settings agree."""
    memo: dict = {}

    def cached(model, tok, requests, layer, site, templates, hp, *a, **k):
        key = (layer, site, tuple(r.ref for r in requests), tuple(templates),
               json.dumps({f: v for f, v in dataclasses.asdict(hp).items() if f in TARGET_FIELDS},
                          sort_keys=True, default=str))
        if key not in memo:
            memo[key] = real(model, tok, requests, layer, site, templates, hp, *a, **k)
        return memo[key]

    return cached


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", default=str(DATA), help="a facts file, or builtin")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--methods", default="memit,emmet")
    ap.add_argument("--lambdas", default="1000,5000,15000,50000")
    ap.add_argument("--layers", default=None, help="comma-separated layers (default: the preset's)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    model, tok = load_model(args.model)
    reqs = (builtin_facts() if args.data == "builtin" else load(args.data, limit=args.n))[: args.n]
    layers = {"layers": tuple(int(x) for x in args.layers.split(","))} if args.layers else {}
    out = Path(args.out or Path(__file__).resolve().parent / "results" / "tune_mass" / args.model)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sweep.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {(r["method"], r["lambda"]) for r in rows}
    pre_path = out / f"pre-{len(reqs)}.json"
    pre = EvalReport.from_json(pre_path) if pre_path.exists() else evaluate(model, tok, reqs)
    pre.to_json(pre_path)
    memit_module.optimise_targets = _cached_targets(memit_module.optimise_targets)
    for method in args.methods.split(","):
        for lam in (float(x) for x in args.lambdas.split(",")):
            if (method, lam) in done:
                continue
            hp = dataclasses.replace(preset(method, args.model), mom2_update_weight=lam, **layers)
            t0 = time.perf_counter()
            res = Editor(model, tok, method, hparams=hp, progress=True).edit(reqs, mode="batch")
            seconds = time.perf_counter() - t0
            post = evaluate(model, tok, reqs, pre=pre)
            res.revert()
            s = post.summary()
            row = {"method": method, "lambda": lam, "n": len(reqs), "layers": list(hp.layers), "seconds": seconds,
                   **{m: s[m].mean for m in ("rewrite_acc", "rephrase_acc", "locality") if m in s},
                   "warnings": sorted({w for t in res.traces for w in t.warnings})[:5]}
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{method} lambda {lam:g}: rewrite {row.get('rewrite_acc', float('nan')):.3f} "
                  f"locality {row.get('locality', float('nan')):.3f} ({seconds:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
