"""UltraEdit's settings for a model, found by measurement: a grid of layer bands x step sizes.

    python bench/tune_ultraedit.py --model smollm2-135m --n 100 --bands 3-8,8-13,13-18,18-23,23-28 \
        --lrs 1e-4,3e-4,1e-3,3e-3

Each setting edits the same n CounterFact facts as one batch (one turn, a fresh normalisation),
is scored (knowedit suite: rewrite, rephrase, locality against the pre-edit predictions), and is
reverted. One JSON line per setting in --out/tune.jsonl; a rerun skips the settings already there.
The printed table ends with the setting that has the best rewrite among those keeping locality at
or above --min-locality.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from golden_fast.data import validate  # noqa: E402
from golden_fast.data.location import data_dir  # noqa: E402
from golden_fast.edit import Editor  # noqa: E402
from golden_fast.evaluate import evaluate  # noqa: E402
from golden_fast.fileio import append_jsonl, read_jsonl  # noqa: E402
from golden_fast.models import load_model  # noqa: E402


def _band(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default=str((data_dir() or Path("data")) / "counterfact" / "counterfact-edit.json"))
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--bands", type=lambda s: [_band(w) for w in s.split(",")], default=[_band("3-8")])
    p.add_argument("--lrs", type=lambda s: [float(w) for w in s.split(",")], default=[1e-6])
    p.add_argument("--ridges", type=lambda s: [float(w) for w in s.split(",")], default=[1.0])
    p.add_argument("--min-locality", type=float, default=0.75)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out or _common.RESULTS / "tune_ultraedit" / args.model)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tune.jsonl"
    model, tok = load_model(args.model)
    reqs, _ = validate(args.data, offset=args.offset)
    reqs = reqs[: args.n]
    done = {(tuple(r["layers"]), r["lr"], r["ridge"], r["n"], r["offset"]) for r in read_jsonl(path)}
    pre = evaluate(model, tok, reqs, suites=("knowedit",))
    for layers in args.bands:
        for lr in args.lrs:
            for ridge in args.ridges:
                key = (tuple(layers), lr, ridge, args.n, args.offset)
                if key in done:
                    continue
                ed = Editor(model, tok, "ultraedit", layers=layers, hparams={"lr": lr, "ridge": ridge},
                            progress=False)
                t0 = time.perf_counter()
                res = ed.edit(reqs, mode="batch")
                edit_s = time.perf_counter() - t0
                try:
                    post = evaluate(model, tok, reqs, pre=pre, suites=("knowedit",))
                finally:
                    res.revert()
                summ = {m: s.mean for m, s in post.summary().items()}
                row = {"model": args.model, "n": args.n, "offset": args.offset, "layers": layers, "lr": lr,
                       "ridge": ridge, "edit_seconds": edit_s, "update_norm": res.traces[0].update_norm,
                       "summary": summ, "threads": torch.get_num_threads(), "machine": _common.device_name()}
                append_jsonl(path, row)
                shown = " ".join(f"{m} {summ.get(m, float('nan')):.3f}"
                                 for m in ("rewrite_acc", "rephrase_acc", "locality"))
                print(f"layers {layers[0]}-{layers[-1]} lr {lr:g} ridge {ridge:g}: {shown} ({edit_s:.1f} s)",
                      flush=True)
    rows = [r for r in read_jsonl(path) if r["n"] == args.n and r["offset"] == args.offset]
    ok = [r for r in rows if r["summary"].get("locality", 0) >= args.min_locality]
    best = max(ok, key=lambda r: r["summary"].get("rewrite_acc", 0), default=None)
    print(json.dumps({"bench": "tune_ultraedit", "settings": len(rows), "best": best and {
        k: best[k] for k in ("layers", "lr", "ridge", "summary")}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
