"""Benchmark of the second-moment pass (golden_fast.stats; FORMULAS.md, section Second-moment
statistics C_l) against the anchors' route.

golden-fast: every requested layer in ONE forward pass that stops after the deepest requested
layer, keys folded into per-layer sums during the pass (mom2_update, upper triangle only).
Anchors (ROME's layer_stats, MEMIT, EasyEdit): one full forward pass over the corpus per layer
(logits included), accumulating that layer only. Both routes run in the same process, on the same
model, the same texts and the same batches, so the ratio is the gain of the single pass alone.

Correctness first: on the first few texts, the one-pass sums of the first, middle and last layer
must equal the per-layer sums (same counts; max relative error <= 1e-5), else nothing is timed.
After timing, all layers of both routes are compared again.

The corpus is the offline fallback (texts sampled from the model, cached after the first run)
unless --corpus names a file or directory. The one-pass route is timed with the automatic mom2
backend (panels on the CPU) and with the torch reference, alternately, its runs spread evenly among
the full passes of the per-layer route: on a shared machine the load drifts over the minutes the
per-layer route takes. The per-layer route's p20/p50/p80 are over layers.

    python bench/bench_stats.py                                  # smollm2-135m, 30 layers, 16 x 128
    python bench/bench_stats.py --n-texts 64 --max-length 256    # the issue's size (long on 2 cores)
    python bench/bench_stats.py --baseline-layers 6              # time 6 full passes, extrapolate 30
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for a source checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py

import _common  # noqa: E402
import torch  # noqa: E402

from golden_fast.cli.stats import parse_layers  # noqa: E402
from golden_fast.models import get_adapter, load_model  # noqa: E402
from golden_fast.ops import get_op, use_backend  # noqa: E402
from golden_fast.stats import StatsConfig, per_layer_second_moments, resolve_corpus, second_moments  # noqa: E402

BENCH = "bench_stats"


def max_rel_err(a: dict, b: dict) -> tuple[float, bool]:
    """(max over layers of max|a - b| / max|b|, counts all equal)."""
    err, same_counts = 0.0, True
    for layer in b:
        scale = b[layer].sum.abs().max().item() or 1.0
        err = max(err, (a[layer].sum.double() - b[layer].sum.double()).abs().max().item() / scale)
        same_counts &= a[layer].count == b[layer].count
    return err, same_counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--layers", default="all", help="layers of the one pass (default all)")
    p.add_argument("--corpus", default="model-sampled", help="model-sampled (default) or a file/directory")
    p.add_argument("--n-texts", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128, help="tokens per text (sampled texts: this long)")
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=3,
                   help="timed runs of the one-pass route per backend, spread over the run (default 3)")
    p.add_argument(
        "--baseline-layers",
        type=int,
        default=0,
        help="time the full pass of only this many evenly spaced layers and extrapolate "
        "(default 0: every layer, no extrapolation)",
    )
    p.add_argument("--no-csv", action="store_true", help="do not append to bench/results/")
    args = p.parse_args()

    prov = _common.provenance("cpu")
    model, tok = load_model(args.model)
    adapter = get_adapter(model)
    layers = parse_layers(args.layers, adapter.n_layers)
    cfg = StatsConfig(
        corpus=args.corpus,
        n_samples=args.n_texts,
        max_length=args.max_length,
        batch_tokens=args.batch_tokens,
        dtype=args.dtype,
        sample_length=args.max_length,
        cache=False,
    )
    # Sample (or read) the corpus once, untimed: both routes then read the same cached texts.
    t0 = time.perf_counter()
    resolve_corpus(cfg.corpus, cfg, model, tok).texts(cfg.n_samples)
    corpus_s = time.perf_counter() - t0

    # 1. correctness on the first texts, three layers, before any timing
    check_layers = sorted({layers[0], layers[len(layers) // 2], layers[-1]})
    small = cfg.replace(n_samples=min(4, cfg.n_samples))
    err, same = max_rel_err(
        second_moments(model, tok, check_layers, small, progress=False),
        per_layer_second_moments(model, tok, check_layers, small, progress=False),
    )
    if not same or err > 1e-5:
        print(f"FAIL: one pass != per-layer passes (counts equal: {same}, max rel err {err:.2e})")
        return 1
    print(f"check: layers {check_layers} on {small.n_samples} texts agree (max rel err {err:.1e})")

    # 2 + 3. Timing. The machine's load drifts over the minutes the anchors' route takes, so the
    # one-pass runs (automatic mom2 backend, panels on the CPU, and the torch reference, alternated)
    # are spread evenly among the full passes instead of all being run first.
    op = get_op("mom2_update")
    auto = op.choose("cpu")
    timed = layers
    if args.baseline_layers and args.baseline_layers < len(layers):
        k = args.baseline_layers
        timed = sorted({layers[round(i * (len(layers) - 1) / max(1, k - 1))] for i in range(k)})
    reps = max(1, args.repeats)
    # before full pass i for i in `slots` (len(timed) = after the last one)
    slots = [round(r * len(timed) / max(1, reps - 1)) for r in range(reps)] if reps > 1 else [0]
    one_pass: dict[str, list[float]] = {auto: [], "torch": []}
    result = {}

    def time_one_pass(backend: str) -> None:
        with use_backend(backend):
            t0 = time.perf_counter()
            result["one"] = second_moments(model, tok, layers, cfg, progress=False)
            one_pass[backend].append(time.perf_counter() - t0)
        print(f"one pass, {len(layers)} layers [mom2 {backend}]: {one_pass[backend][-1]:.1f}s", flush=True)

    with use_backend(auto):
        second_moments(model, tok, layers, cfg, progress=False)  # warm-up
    per_pass, per = [], {}
    for i in range(len(timed) + 1):
        for _ in range(slots.count(i)):
            for backend in (auto, "torch") if len(per_pass) % 2 == 0 else ("torch", auto):
                time_one_pass(backend)
        if i == len(timed):
            break
        layer = timed[i]
        t0 = time.perf_counter()
        per.update(per_layer_second_moments(model, tok, [layer], cfg, progress=False))
        per_pass.append(time.perf_counter() - t0)
        print(f"full pass, layer {layer:2d}: {per_pass[-1]:.1f}s", flush=True)
    extrapolated = len(timed) < len(layers)
    per_layer_total = sum(per_pass) * len(layers) / len(timed)
    one = result["one"]
    n_tokens, n_texts = one[layers[0]].count, one[layers[0]].n_texts

    # 4. both routes agree on every layer timed
    err_all, same_all = max_rel_err({k: one[k] for k in per}, per)
    if not same_all or err_all > 1e-5:
        print(f"FAIL: after timing, one pass != per-layer passes (counts {same_all}, err {err_all:.2e})")
        return 1

    t_one = _common.percentiles(one_pass[auto])
    t_ref = _common.percentiles(one_pass["torch"])
    t_per = _common.percentiles(per_pass)
    speedup = per_layer_total / t_one["p50"]
    m = adapter.d_ff
    print()
    print(
        f"{args.model}: {len(layers)} layers, d={adapter.d_model}, m={m}, {n_texts} texts, "
        f"{n_tokens} tokens, {args.dtype}, batch_tokens={args.batch_tokens}; {prov['device']}, "
        f"load avg {prov['load_average']:.1f}"
    )
    print(f"{'route':44s} {'passes':>6s} {'p50 (s)':>9s} {'[p20, p80]':>16s} {'speedup':>8s}")
    rows = [
        (f"one pass, all layers, mom2 {auto}", 1, t_one, speedup),
        ("one pass, all layers, mom2 torch", 1, t_ref, per_layer_total / t_ref["p50"]),
        ("one full pass per layer (anchors), per pass", 1, t_per, None),
    ]
    for label, passes, t, s in rows:
        spread = f"[{t['p20']:.2f}, {t['p80']:.2f}]"
        print(f"{label:44s} {passes:6d} {t['p50']:9.2f} {spread:>16s} {'' if s is None else f'{s:.1f}x':>8s}")
    label = "one full pass per layer (anchors), total" + (" (extrap.)" if extrapolated else "")
    print(f"{label:44s} {len(layers):6d} {per_layer_total:9.2f} {'':>16s} {'1.0x':>8s}")
    print(f"one pass == per-layer passes on {len(per)} layers: max rel err {err_all:.1e}, counts equal")

    record = {
        "bench": BENCH,
        **prov,
        "model": args.model,
        "dtype": args.dtype,
        "n_layers": len(layers),
        "d": adapter.d_model,
        "m": m,
        "texts": n_texts,
        "tokens": n_tokens,
        "max_length": args.max_length,
        "batch_tokens": args.batch_tokens,
        "mom2_backend": auto,
        "one_pass_s": t_one,
        "one_pass_torch_s": t_ref,
        "per_layer_pass_s": t_per,
        "per_layer_total_s": per_layer_total,
        "per_layer_extrapolated": extrapolated,
        "per_layer_timed_layers": len(timed),
        "speedup": speedup,
        "speedup_torch_mom2": per_layer_total / t_ref["p50"],
        "max_rel_err": err_all,
        "corpus": args.corpus,
        "corpus_prep_s": corpus_s,
    }
    if not args.no_csv:
        details = {
            k: record[k]
            for k in (
                "model",
                "dtype",
                "n_layers",
                "m",
                "texts",
                "tokens",
                "max_length",
                "batch_tokens",
                "mom2_backend",
                "per_layer_extrapolated",
            )
        }
        path = _common.append_results(
            BENCH,
            [
                ("one_pass_p50", t_one["p50"], "s"),
                ("one_pass_torch_mom2_p50", t_ref["p50"], "s"),
                ("per_layer_pass_p50", t_per["p50"], "s"),
                ("per_layer_total", per_layer_total, "s"),
                ("speedup", speedup, "x"),
            ],
            prov,
            details,
        )
        print(f"rows appended to {path}")
    print(json.dumps(record, default=str))
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
