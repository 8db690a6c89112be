"""An editor's settings for a model, found by measurement: a grid over its hyperparameters on one
batch of facts, rewrite / rephrase / locality per setting.

    python bench/tune_editor.py --method ultraedit --n 100 \
        --grid '{"layers": [[3,4,5,6,7,8], [18,19,20,21,22,23]], "lr": [1e-4, 3e-4, 1e-3]}'
    python bench/tune_editor.py --method alphaedit --n 100 \
        --grid '{"nullspace_rel_threshold": [0.01, 0.03, 0.1], "L2": [1, 10, 100]}'

Each setting edits the same n facts as one batch, is scored (knowedit suite, locality against the
pre-edit predictions) and reverted. Optimised targets (z, v*) depend on the optimisation settings
only, so settings that change the solve (lambda, thresholds, ridges) share them (`reuse_targets`,
kept in $GOLDEN_FAST_HOME/targets/<model>.safetensors across runs): the first setting pays for them,
and each row still reports the targets' cost. One JSON line per
setting in --out/<method>.jsonl, with the editor's resolved hyperparameters (its preset under the
setting); a rerun skips the settings whose resolved hyperparameters are already there, so a changed
preset is measured again. The last line names the best rewrite among this grid's settings (rows of
other presets or grids in the file left out) that keep locality at or above --min-locality.
"""

from __future__ import annotations

import argparse
import itertools
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
from golden_fast.edit.config import hparams_record  # noqa: E402
from golden_fast.edit.target_cache import TargetCache, reuse_targets  # noqa: E402
from golden_fast.evaluate import evaluate  # noqa: E402
from golden_fast.fileio import append_jsonl, read_jsonl  # noqa: E402
from golden_fast.models import home, load_model  # noqa: E402

SHOWN = ("rewrite_acc", "rephrase_acc", "locality")


def settings_grid(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, in the order given."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default=str((data_dir() or Path("data")) / "counterfact" / "counterfact-edit.json"))
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--grid", type=json.loads, required=True, help="JSON: {field: [values, ...], ...}")
    p.add_argument("--fixed", type=json.loads, default={}, help="JSON: fields set for every setting")
    p.add_argument("--min-locality", type=float, default=0.75)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out or _common.RESULTS / "tune" / args.model)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.method}.jsonl"
    model, tok = load_model(args.model)
    reqs, _ = validate(args.data, offset=args.offset)
    reqs = reqs[: args.n]
    same = lambda r: r["n"] == args.n and r["offset"] == args.offset and r["data"] == Path(args.data).name  # noqa: E731
    rows = [r for r in read_jsonl(path) if same(r)]
    # a setting is done when a row holds the same resolved hyperparameters (preset and setting); rows
    # that predate that record are matched on the setting alone
    done = {json.dumps(r["hparams"], sort_keys=True) for r in rows if "hparams" in r}
    done_legacy = {json.dumps(r["settings"], sort_keys=True) for r in rows if "hparams" not in r}
    pre = evaluate(model, tok, reqs, suites=("knowedit",))
    store = home() / "targets" / f"{args.model}.safetensors"  # z and v* shared by every run on this model
    grid_keys: set[str] = set()  # this grid's settings, resolved: the rows the summary ranks
    with reuse_targets(TargetCache.load(store).autosave(store)) as cache:
        for setting in settings_grid(args.grid):
            setting = dict(args.fixed) | setting
            ed = Editor(model, tok, args.method, hparams=setting, progress=True)  # targets take minutes
            resolved = hparams_record(ed.hparams, with_layers=True)
            grid_keys |= {json.dumps(resolved, sort_keys=True), json.dumps(setting, sort_keys=True)}
            if json.dumps(resolved, sort_keys=True) in done or json.dumps(setting, sort_keys=True) in done_legacy:
                continue
            t0 = time.perf_counter()
            res = ed.edit(reqs, mode="batch")
            edit_s = time.perf_counter() - t0
            try:
                post = evaluate(model, tok, reqs, pre=pre, suites=("knowedit",))
            finally:
                res.revert()
            ex = res.traces[0].extras
            summ = {m: s.mean for m, s in post.summary().items()}
            row = {"model": args.model, "method": args.method, "data": Path(args.data).name, "n": args.n,
                   "offset": args.offset, "settings": setting, "hparams": resolved, "layers": list(ed.layers),
                   "edit_seconds": edit_s + float(ex.get("targets_reused_seconds", 0.0)),
                   "update_norm": res.traces[0].update_norm, "summary": summ,
                   "warnings": sorted({w for t in res.traces for w in t.warnings})[:5],
                   "threads": torch.get_num_threads(), "machine": _common.device_name()}
            append_jsonl(path, row)
            if cache.misses:
                cache.save(store)
            shown = " ".join(f"{m} {summ.get(m, float('nan')):.3f}" for m in SHOWN)
            print(f"{json.dumps(setting)}: {shown} ({row['edit_seconds']:.1f} s)", flush=True)
    rows = [r for r in read_jsonl(path) if same(r) and json.dumps(r.get("hparams", r["settings"]), sort_keys=True)
            in grid_keys]
    ok = [r for r in rows if r["summary"].get("locality", 0) >= args.min_locality]
    best = max(ok, key=lambda r: r["summary"].get("rewrite_acc", 0), default=None)
    print(json.dumps({"bench": "tune_editor", "method": args.method, "settings": len(rows),
                      "best": best and {"settings": best["settings"], "summary": best["summary"]}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
