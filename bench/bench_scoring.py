"""Benchmark of evaluation scoring (golden_fast.evaluate.score_spans), against the anchors' route.

Speed: `evaluate(..., suites=("knowedit", "counterfact"))` on N CounterFact records, with the
batched route (left-padded batches, head on target positions only, chunked vocabulary) and
the per-record route (one unpadded forward per sequence with full logits, as EasyEdit and
ROME score), in the same run, on the same model; both score the same deduplicated set of
(prompt, answer) sequences, so the ratio is the gain of batching and head gathering alone.
Correctness is checked first, on a few records, and both runs' rows are compared at the end.

Memory: peak resident memory of scoring on a large-vocabulary model (Gemma-3, 262,144
tokens) with the batched route (chunked gathering) and the full-logits route (the same
batches through the model's own head plus a float32 [B, T, V] log-softmax). Each variant
runs in a fresh subprocess that loads the model, tokenises, scores one warm-up sequence,
resets the kernel's resident high-water mark (/proc/self/clear_refs, Linux >= 4.0), then
scores; peak = VmHWM - RSS at the reset. tracemalloc cannot see torch's allocations, and a
process-lifetime ru_maxrss would be dominated by model loading.

    python bench/bench_scoring.py                         # smollm2-135m x 200, gemma3-270m memory
    python bench/bench_scoring.py --n 50 --skip-memory
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for a source checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py

import _common  # noqa: E402
import torch  # noqa: E402

from golden_fast.data import load  # noqa: E402
from golden_fast.data.location import data_dir
from golden_fast.evaluate import SUITES, evaluate  # noqa: E402
from golden_fast.evaluate.scoring import SpanTable, score_spans  # noqa: E402
from golden_fast.models import load_model  # noqa: E402

BENCH = "bench_scoring"
SUITES_BOTH = ("knowedit", "counterfact")


def default_data() -> Path:
    root = (data_dir() or _common.ROOT / "data")
    return root / "counterfact" / "counterfact-edit.json"


def compare(a, b) -> tuple[int, int]:
    """(values compared, values differing) between two reports of the same requests; magnitudes
    compare at 1e-5, flags and accuracies exactly (differences there are argmax near-ties)."""
    ra, rb = a.by_request(), b.by_request()
    if ra.keys() != rb.keys() or any(ra[p].keys() != rb[p].keys() for p in ra):
        raise SystemExit("FAIL: the batched and per-record reports hold different metrics")
    n = diff = 0
    for p in ra:
        for m, v in ra[p].items():
            n += 1
            tol = 1e-5 if m.endswith("_magnitude") else 1e-12
            diff += abs(v - rb[p][m]) > tol
    return n, diff


def run_speed(args, prov) -> dict:
    reqs = load(args.data, limit=args.n)
    model, tok = load_model(args.model)
    kw = dict(suites=SUITES_BOTH, batch_size=args.batch_size, n_boot=10)

    # 1. correctness before timing: a few records, both routes
    few = reqs[: min(8, len(reqs))]
    n, diff = compare(evaluate(model, tok, few, **kw), evaluate(model, tok, few, route="per-record", **kw))
    if diff > max(1, n // 100):
        raise SystemExit(f"FAIL: {diff} of {n} values differ between the batched and per-record routes")
    print(f"correctness: {n - diff}/{n} values identical on {len(few)} records (differences: near-ties)")

    # 2. timing (the warm-up was step 1); scoring_seconds excludes the report's bootstrap
    batched = []
    for _ in range(args.repeats):
        rep = evaluate(model, tok, reqs, **kw)
        batched.append(rep.meta["scoring_seconds"])
    ref_reqs = reqs[: args.reference_n or len(reqs)]
    ref_rep = evaluate(model, tok, ref_reqs, route="per-record", **kw)
    per_record = [ref_rep.meta["scoring_seconds"]]

    n, diff = compare(evaluate(model, tok, ref_reqs, **kw) if len(ref_reqs) != len(reqs) else rep, ref_rep)
    pb, pr = _common.percentiles(batched), _common.percentiles(per_record)
    out = {
        "model": args.model,
        "records": len(reqs),
        "reference_records": len(ref_reqs),
        "scored_sequences": rep.meta["n_scored_sequences"],
        "batch_size": args.batch_size,
        "batched_seconds": pb,
        "per_record_seconds": pr,
        "batched_records_per_s": len(reqs) / pb["p50"],
        "per_record_records_per_s": len(ref_reqs) / pr["p50"],
        "values_compared": n,
        "values_differing": diff,
    }
    out["speedup"] = out["batched_records_per_s"] / out["per_record_records_per_s"]
    print(rep.table())
    return out


def memory_child(args) -> None:
    """One memory variant in this (fresh) process; prints one JSON line."""
    reqs = load(args.data, limit=args.memory_n)
    model, tok = load_model(args.memory_model)
    table = SpanTable(tok)
    for r in reqs:
        for s in SUITES_BOTH:
            SUITES[s].register(r, table)
    spans = [table.span(*k) for k in table._spans]
    score_spans(model, tok, spans[:1], route=args.memory_child)  # lazy initialisations out of the peak
    ok = _common.reset_peak_rss()
    before = _common.rss_bytes()
    t0 = time.perf_counter()
    score_spans(model, tok, spans, route=args.memory_child, batch_size=args.memory_batch, max_tokens=10**9)
    seconds = time.perf_counter() - t0
    peak = _common.peak_rss_bytes()
    print(
        json.dumps(
            {
                "variant": args.memory_child,
                "sequences": len(spans),
                "rss_before": before,
                "peak": peak,
                "peak_extra": peak - before,
                "reset_ok": ok,
                "seconds": seconds,
                "longest": max(len(s.ids) for s in spans),
            }
        )
    )


def run_memory(args) -> dict:
    out = {"model": args.memory_model, "records": args.memory_n, "batch_size": args.memory_batch}
    for variant in ("batched", "full-logits"):
        cmd = [
            sys.executable,
            __file__,
            "--memory-child",
            variant,
            "--memory-model",
            args.memory_model,
            "--memory-n",
            str(args.memory_n),
            "--memory-batch",
            str(args.memory_batch),
            "--data",
            str(args.data),
            *(["--threads", str(args.threads)] if args.threads else []),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"memory child {variant} failed:\n{proc.stderr[-3000:]}")
        out[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["ratio_full_over_batched"] = out["full-logits"]["peak_extra"] / max(out["batched"]["peak_extra"], 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", type=Path, default=default_data())
    p.add_argument("--n", type=int, default=200, help="CounterFact records for the speed runs")
    p.add_argument(
        "--reference-n", type=int, default=None, help="records for the per-record route (default --n)"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of the batched route")
    p.add_argument("--memory-model", default="gemma3-270m")
    p.add_argument("--memory-n", type=int, default=64, help="CounterFact records for the memory runs")
    p.add_argument("--memory-batch", type=int, default=32, help="rows per forward in the memory runs")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's); recorded in the results",
    )
    p.add_argument("--no-csv", action="store_true", help="do not append to bench/results")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args)
    if not args.data.is_file():
        raise SystemExit(f"CounterFact not found at {args.data} (set GOLDEN_FAST_DATA or --data)")

    prov = _common.provenance("cpu")
    result: dict = {"bench": BENCH, **prov}
    rows = []
    if not args.skip_speed:
        s = run_speed(args, prov)
        result["speed"] = s
        print(f"\n{'route':<12}{'records':>8}{'p50 s':>10}{'p20 s':>10}{'p80 s':>10}{'records/s':>12}")
        for name, key, n in (
            ("batched", "batched", s["records"]),
            ("per-record", "per_record", s["reference_records"]),
        ):
            t = s[f"{key}_seconds"]
            print(
                f"{name:<12}{n:>8}{t['p50']:>10.2f}{t['p20']:>10.2f}{t['p80']:>10.2f}{s[f'{key}_records_per_s']:>12.2f}"
            )
        print(
            f"speedup (records/s, batched / per-record): {s['speedup']:.2f}x; "
            f"{s['values_differing']} of {s['values_compared']} metric values differ (near-ties)"
        )
        rows += [
            ("batched_records_per_s", s["batched_records_per_s"], "records/s"),
            ("per_record_records_per_s", s["per_record_records_per_s"], "records/s"),
            ("speedup", s["speedup"], "x"),
        ]
    if not args.skip_memory:
        m = run_memory(args)
        result["memory"] = m
        mib = lambda b: b / 2**20  # noqa: E731
        print(
            f"\npeak memory of scoring, {m['model']}, {m['batched']['sequences']} sequences "
            f"(longest {m['batched']['longest']} tokens), batch {m['batch_size']}:"
        )
        for v in ("batched", "full-logits"):
            r = m[v]
            print(
                f"  {v:<12} peak extra RSS {mib(r['peak_extra']):9.1f} MiB  "
                f"(RSS before {mib(r['rss_before']):.0f} MiB, "
                f"{r['seconds']:.1f} s{'' if r['reset_ok'] else ', peak NOT reset: includes loading'})"
            )
        print(f"  full-logits / batched: {m['ratio_full_over_batched']:.1f}x")
        rows += [
            ("memory_batched_peak_extra", m["batched"]["peak_extra"], "bytes"),
            ("memory_full_logits_peak_extra", m["full-logits"]["peak_extra"], "bytes"),
        ]
    if rows and not args.no_csv:
        path = _common.append_results(BENCH, rows, prov, {"args": {k: str(v) for k, v in vars(args).items()}})
        print(f"results appended to {path.relative_to(_common.ROOT)}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
