"""R-ROME edit latency with prefix reuse against recomputing every token of every layer at
every step (the anchors' way), same settings, same run (issue 4).

Both routes optimise the same v*; the script checks they agree before reporting times.
The closed-form part uses the statistics cache when it holds C for the layer, else C = I
(`--mom2` decides; the same for both routes either way, so the ratio is the v* loop's).

    python bench/bench_edit.py [--model smollm2-135m] [--layer 6] [--n 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_results, provenance  # noqa: E402

from golden_fast.data import builtin_facts, load  # noqa: E402
from golden_fast.data.location import data_dir  # noqa: E402
from golden_fast.edit.base import run_method  # noqa: E402
from golden_fast.edit.config import preset  # noqa: E402
from golden_fast.edit.context import context_templates  # noqa: E402
from golden_fast.edit.moments import Moments  # noqa: E402
from golden_fast.edit.values import _build_rows  # noqa: E402
from golden_fast.models import get_adapter, load_model  # noqa: E402

DATA = (data_dir() or Path("data")) / "counterfact" / "counterfact-edit.json"  # $GOLDEN_FAST_DATA


def token_layer_work(tok, reqs, templates, n_layers: int, layer: int, kl: bool) -> dict:
    """Why the speedup is what it is: token x layer work per v* step of each route, from the real
    batch layout (rows padded to the widest prefix P and suffix S, as both routes run them).

    With frozen weights a backward pass is about one forward (only input gradients), and both routes
    backpropagate only through blocks >= layer; the full route does so at every column, the reuse
    route at suffix columns only. The head and log-softmax (same in both) are left out, so the
    ratio is an upper bound of the measured one."""
    out = {"P": [], "S": [], "ratio": []}
    for r in reqs:
        rows = _build_rows(tok, [r], templates, kl=kl)
        P = max(len(p) for p in rows.prefix)
        S = max(len(s) for s in rows.suffix)
        top = n_layers - layer
        full = (P + S) * n_layers + (P + S) * top
        reuse = 2 * S * top
        out["P"].append(P)
        out["S"].append(S)
        out["ratio"].append(full / reuse)
    return {k: sum(v) / len(v) for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--n", type=int, default=5, help="edits timed per route")
    ap.add_argument("--data", default=str(DATA) if DATA.is_file() else "builtin")
    ap.add_argument("--mom2", choices=["identity", "cache"], default="identity")
    ap.add_argument("--no-csv", action="store_true")
    args = ap.parse_args()

    model, tok = load_model(args.model)
    reqs = (builtin_facts() if args.data == "builtin" else load(args.data, limit=args.n))[: args.n]
    base = dataclasses.replace(preset("r-rome", args.model), layers=(args.layer,))
    if args.mom2 == "identity":
        base = dataclasses.replace(base, mom2_adjustment=False)
    templates = context_templates(model, tok, base.context_template_length_params)  # sampled once, outside timing
    work = token_layer_work(tok, reqs, templates, get_adapter(model).n_layers, args.layer, base.kl_factor > 0)
    print(f"batch layout: mean prefix width P {work['P']:.1f}, suffix width S {work['S']:.1f} tokens; "
          f"token x layer work ratio (full / reuse, forward + backward, head excluded) {work['ratio']:.2f}x",
          flush=True)
    moments = Moments.from_stats(model, tok, base) if base.mom2_adjustment else Moments(None)
    noop = lambda layer, U, V: None  # noqa: E731 - weights stay as they are: each edit on the same model

    results, breakdown = {}, {}
    for route, reuse in (("prefix_reuse", True), ("full_recompute", False)):
        hp = dataclasses.replace(base, prefix_reuse=reuse)
        times, vstars, steps, setup, loop = [], [], [], [], []
        for r in reqs:
            t0 = time.perf_counter()
            tr = run_method("r-rome", model, tok, [r], hp, moments, noop, progress=False)[0]
            times.append(time.perf_counter() - t0)
            vstars.append(tr.extras["v_star"])
            steps.append(len(tr.loss_curve))
            setup.append(tr.extras["v_setup_seconds"])
            loop.append(tr.extras["v_loop_seconds"])
        results[route] = (times, torch.stack(vstars), steps)
        per_step = sum(loop) / sum(steps)
        breakdown[route] = {"setup_mean": sum(setup) / len(setup), "per_step": per_step,
                            "rest_mean": (sum(times) - sum(setup) - sum(loop)) / len(times)}
        print(f"{route:15s} mean {sum(times) / len(times):7.2f} s/edit  steps {steps}  "
              f"(unedited pass {breakdown[route]['setup_mean']:.2f} s, {per_step:.3f} s/step, "
              f"keys + solve {breakdown[route]['rest_mean']:.2f} s)", flush=True)

    (t_fast, v_fast, s_fast), (t_full, v_full, s_full) = results["prefix_reuse"], results["full_recompute"]
    rel = float(((v_fast - v_full).norm(dim=1) / v_full.norm(dim=1)).max())
    agree = rel < 1e-3 and s_fast == s_full
    speedup = sum(t_full) / sum(t_fast)
    print(f"v* agreement: max relative difference {rel:.2e}, same step counts: {s_fast == s_full}")
    step_ratio = breakdown["full_recompute"]["per_step"] / breakdown["prefix_reuse"]["per_step"]
    print(f"speedup (full recompute / prefix reuse): {speedup:.2f}x  at layer {args.layer}; "
          f"per optimisation step {step_ratio:.2f}x (token x layer model {work['ratio']:.2f}x); the unedited "
          f"pass and the keys/solve cost the same in both routes and bound the whole-edit ratio")
    if not agree:
        print("routes disagree: not reporting a speedup", file=sys.stderr)
        return 1
    prov = provenance()
    details = {"model": args.model, "layer": args.layer, "n": len(reqs), "mom2": args.mom2,
               "v_num_grad_steps": base.v_num_grad_steps, "templates": base.context_template_length_params,
               "vstar_max_rel_diff": rel, "mean_prefix_width": work["P"], "mean_suffix_width": work["S"],
               "token_layer_work_ratio": work["ratio"]}
    rows = [
        ("prefix_reuse_mean", sum(t_fast) / len(t_fast), "s"),
        ("full_recompute_mean", sum(t_full) / len(t_full), "s"),
        ("speedup", speedup, "x"),
        ("per_step_speedup", step_ratio, "x"),
        ("prefix_reuse_per_step", breakdown["prefix_reuse"]["per_step"], "s"),
        ("full_recompute_per_step", breakdown["full_recompute"]["per_step"], "s"),
        ("setup_mean", breakdown["prefix_reuse"]["setup_mean"], "s"),
    ]
    if not args.no_csv:
        append_results("bench_edit", rows, prov, details)
    print(json.dumps({"bench": "bench_edit", **prov, **details, **{n: v for n, v, _ in rows}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
