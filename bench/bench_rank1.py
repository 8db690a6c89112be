"""Benchmark of applying many rank-one edits to down-projection weights on the CPU (issue 6).

Three ways to get W_l += sum_j u_lj v_ljᵀ for n edits on every weight of a set:
  batched     rank1_apply_many, backend "cpp": all layers in one OpenMP region, float32 sums,
              one rounding per element, no float32 copy of a weight (csrc/rank1.cpp);
  per_edit    a torch loop, one in-place W.addr_(u_j, v_j) per edit and layer, in W's dtype
              (u_j, v_j cast to it): what naive sequential editing does; rounds into W n times;
  fp32_mm     one float32 matmul per layer and a cast: W.copy_(W.float().addmm_(U, Vᵀ)) for a
              16-bit W (a float32 copy of the whole weight), W.addmm_(U, Vᵀ) for a float32 W.
Shapes: SmolLM2-135M's 30 down-projections (576 x 1536) and one Gemma-3-12B down-projection
(3840 x 15360), random weights; n = 1, 100, 1,000, 10,000; float32 and bfloat16 weights.

Method:
- correctness first: on a small case, batched must equal the float64 truth rounded once (dyadic
  inputs) and per-layer rank1_apply bit for bit, else nothing is timed;
- every (shape, dtype, n, method) runs in a FRESH CHILD PROCESS that builds its inputs, then times
  `repeats` calls after one warm-up (perf_counter; p20/p50/p80) and measures memory;
- peak memory = the kernel's resident high-water mark (VmHWM, reset through /proc/self/clear_refs)
  minus the resident size just before the first call, after malloc_trim(0) returned freed heap
  pages to the system: so it counts every byte the method touches (torch tensors, BLAS packing
  buffers, per-thread tiles), which neither tracemalloc (blind to torch) nor torch's allocator
  statistics (blind to BLAS) would. A fresh process keeps earlier cases' freed memory out of it;
- per_edit at large n is timed on its first k edits and scaled by n / k (its cost is exactly linear
  in n: the same in-place update n times), marked "extrapolated" in the table and the CSV;
- the heaviest case (Gemma, n = 10,000) runs once per method, without warm-up.
Accuracy (bfloat16): on a slice of rows of each shape, against the float64 truth rounded once to
bfloat16 (the best a bf16 weight can hold): batched and fp32_mm should be exactly that (0 ulp, or
1 where the float32 sum falls on the other side of a rounding boundary); per_edit's drift shows as
ulps and as the share of the intended update that actually landed in the weight; "sequential"
(accuracy only) applies the edits one rank1_apply at a time, so W is rounded once per edit but the
vectors stay float32: the drift of rounding the weight alone.
Each edit term changes a weight by about 1e-3 of its typical size (ours: small, as real edits are).

    python bench/bench_rank1.py            # full: about 15-30 min on 2 cores
    python bench/bench_rank1.py --quick    # 6 layers, Gemma / 4 in each dimension, n <= 1000: ~2 min
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for a source checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py

import _common  # noqa: E402
import torch  # noqa: E402

from golden_fast import native  # noqa: E402
from golden_fast.ops.rank1 import rank1_apply, rank1_apply_many  # noqa: E402

BENCH = "bench_rank1"
METHODS = ("batched", "per_edit", "fp32_mm")
W_SCALE = 0.02  # weights ~ N(0, 0.02^2), a typical initialisation scale
EDIT_SCALE = 1e-3  # each term u_j v_jᵀ changes a weight by ~1e-3 of W_SCALE (ours, see the doc)


def shapes(quick: bool) -> list[tuple[str, int, int, int]]:
    """(name, layers, d, m): weights are (d, m), out x in, like nn.Linear."""
    if quick:
        return [("smollm2-135m-x6", 6, 576, 1536), ("gemma3-12b/4", 1, 960, 3840)]
    return [("smollm2-135m", 30, 576, 1536), ("gemma3-12b", 1, 3840, 15360)]


def make_inputs(L: int, d: int, m: int, n: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ws = [(W_SCALE * torch.randn(d, m, generator=g)).to(dtype) for _ in range(L)]
    s = math.sqrt(EDIT_SCALE * W_SCALE)  # u and v elements ~ s: their products ~ EDIT_SCALE * W_SCALE
    us = s * torch.randn(L, d, n, generator=g)
    vs = s * torch.randn(L, m, n, generator=g)
    return ws, us, vs


def run_method(method: str, ws, us, vs, edits: int | None = None) -> None:
    if method == "batched":
        rank1_apply_many(ws, us, vs, backend="cpp")
    elif method == "per_edit":
        n = us.shape[2] if edits is None else edits
        for layer, w in enumerate(ws):
            u, v = us[layer].to(w.dtype), vs[layer].to(w.dtype)
            for j in range(n):
                w.addr_(u[:, j], v[:, j])  # rounds into w's dtype at every edit
    elif method == "fp32_mm":
        for layer, w in enumerate(ws):
            if w.dtype == torch.float32:
                w.addmm_(us[layer], vs[layer].T)
            else:
                w.copy_(w.float().addmm_(us[layer], vs[layer].T))  # a float32 copy of the weight
    else:
        raise ValueError(method)


# ---- child process: one (shape, dtype, n, method), time and peak memory -------------------------
def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def child(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    dtype = getattr(torch, spec["dtype"])
    ws, us, vs = make_inputs(spec["L"], spec["d"], spec["m"], spec["n"], dtype)
    edits = spec.get("edits")
    _trim()
    before = _common.rss_bytes()
    reset = _common.reset_peak_rss()
    times = _common.time_call(
        lambda: run_method(spec["method"], ws, us, vs, edits), repeats=spec["repeats"], warmup=spec["warmup"]
    )
    peak = _common.peak_rss_bytes()
    return {"times": times, "peak_extra_bytes": (peak - before) if reset and peak and before else None}


def measure(spec: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(_common.ROOT), os.environ.get("PYTHONPATH")])))
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env, timeout=3600
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- correctness and accuracy -------------------------------------------------------------------
def check_correct() -> None:
    """Dyadic inputs: float32 sums are exact, so batched must be the float64 truth rounded once."""
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.bfloat16, torch.float32):
        ws = [(torch.randint(-128, 129, (64, 300), generator=g) / 16).to(dtype) for _ in range(3)]
        us = torch.randint(-8, 9, (3, 64, 40), generator=g) / 4
        vs = torch.randint(-8, 9, (3, 300, 40), generator=g) / 4
        truth = [(w.double() + u.double() @ v.double().T).to(dtype) for w, u, v in zip(ws, us, vs)]
        singles = [rank1_apply(w.clone(), u, v, backend="cpp") for w, u, v in zip(ws, us, vs)]
        rank1_apply_many(ws, us, vs, backend="cpp")
        for w, t, s in zip(ws, truth, singles):
            if not (torch.equal(w, t) and torch.equal(w, s)):
                raise SystemExit(f"batched rank1_apply_many is wrong for {dtype}: not timing it")


def ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Number of bfloat16 values between a and b, from their bit patterns (0: equal)."""
    def key(x: torch.Tensor) -> torch.Tensor:
        bits = x.contiguous().view(torch.int16).to(torch.int64)
        mag = bits & 0x7FFF
        return torch.where(bits < 0, -mag, mag)

    return (key(a) - key(b)).abs()


def accuracy(name: str, m: int, n: int, rows: int) -> dict:
    """bf16 errors on `rows` rows of one weight (rows are independent: a slice gives the statistics).

    Against the float64 truth rounded once to bfloat16 -- the best any method can store:
    ulps (0: exactly that, 1: its neighbour), and how much of the intended update landed,
    <W - W0, dW> / <dW, dW> (1: all of it on average; a single bf16 rounding of a 1e-3 change
    loses most of it element by element, but not on average).
    """
    ws, us, vs = make_inputs(1, rows, m, n, torch.bfloat16, seed=7)
    w0 = ws[0]
    delta = us[0].double() @ vs[0].double().T  # (rows, m), exact up to float64 rounding
    best = (w0.double() + delta).to(torch.bfloat16)
    out = {}
    for method in (*METHODS, "sequential"):
        w = w0.clone()
        if method == "sequential":  # one exact rank1_apply per edit: float32 vectors, W rounded per edit
            for j in range(n):
                rank1_apply(w, us[0][:, j : j + 1], vs[0][:, j : j + 1], backend="cpp")
        else:
            run_method(method, [w], us, vs)
        u = ulps(w, best).flatten().double()
        out[method] = {
            # p99.9, not the max: where w0 + dW nearly cancels, bf16 steps are tiny and any float32
            # rounding spans many of them
            "p999_ulp": u.kthvalue(max(1, int(0.999 * u.numel()))).values.item(),
            "share_0ulp": (u == 0).double().mean().item(),
            "share_le1ulp": (u <= 1).double().mean().item(),
            "update_landed": ((w.double() - w0.double()) * delta).sum().item() / (delta * delta).sum().item(),
        }
    return {"shape": name, "n": n, "rows": rows, **out}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small shapes and n <= 1000 (about 2 minutes)")
    p.add_argument("--ns", default=None, help="comma-separated edit counts (default 1,100,1000,10000)")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--per-edit-max", type=int, default=200,
                   help="per_edit runs at most this many edit-layer updates per call; more are extrapolated")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--no-csv", action="store_true")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    if not native.has_op("rank1_apply_many"):
        raise SystemExit(f"the C++ op is not built: {native.reason()}")
    torch.set_num_threads(args.threads)
    prov = _common.provenance("cpu")
    check_correct()
    ns = [int(x) for x in args.ns.split(",")] if args.ns else ([1, 100, 1000] if args.quick else [1, 100, 1000, 10000])
    dtypes = args.dtypes.split(",")
    results, rows = [], []
    header = (f"{'shape':<18}{'dtype':<10}{'n':>7}  {'method':<9}{'p50 s':>10}{'p20 s':>10}{'p80 s':>10}"
              f"{'peak MiB':>10}  note")  # fmt: skip
    print(header)
    print("-" * len(header))
    for name, L, d, m in shapes(args.quick):
        heavy = d * m * L >= 50e6  # the Gemma matrix: each call at n = 10,000 is ~1.2 TFLOP
        for dtype in dtypes:
            for n in ns:
                per = {}
                for method in METHODS:
                    spec = {"L": L, "d": d, "m": m, "n": n, "dtype": dtype, "method": method, "threads": args.threads,
                            "repeats": args.repeats, "warmup": 1}  # fmt: skip
                    note = ""
                    flops = 2.0 * L * d * m * n
                    if heavy and n >= 10000 and method != "per_edit":
                        spec.update(repeats=1, warmup=0)  # once, as the issue asks
                        note = "single run"
                    elif flops > 1e11 and method != "per_edit":  # calls of seconds: no warm-up needed
                        spec.update(repeats=min(2, args.repeats), warmup=0)
                    k = n
                    if method == "per_edit" and n * L > args.per_edit_max:
                        k = max(1, args.per_edit_max // L)
                        spec["edits"] = k
                        note = f"extrapolated from {k} edits"
                    r = measure(spec)
                    scale = n / k
                    times = [t * scale for t in r["times"]]
                    pct = _common.percentiles(times)
                    peak = r["peak_extra_bytes"]
                    per[method] = pct["p50"]
                    print(f"{name:<18}{dtype:<10}{n:>7}  {method:<9}{pct['p50']:>10.4f}{pct['p20']:>10.4f}"
                          f"{pct['p80']:>10.4f}{(peak or 0) / 2**20:>10.1f}  {note}", flush=True)  # fmt: skip
                    key = f"{name}/{dtype}/n={n}/{method}"
                    rows += [(f"{key}/p50", pct["p50"], "s"), (f"{key}/p20", pct["p20"], "s"),
                             (f"{key}/p80", pct["p80"], "s")]  # fmt: skip
                    if peak is not None:
                        rows.append((f"{key}/peak_extra", peak, "bytes"))
                    results.append({"shape": name, "layers": L, "d": d, "m": m, "dtype": dtype, "n": n,
                                    "method": method, **pct, "peak_extra_bytes": peak, "note": note})  # fmt: skip
                for other in ("per_edit", "fp32_mm"):
                    speedup = per[other] / per["batched"]
                    rows.append((f"{name}/{dtype}/n={n}/speedup_vs_{other}", speedup, "x"))
                    print(f"{'':<35}speedup of batched over {other}: {speedup:.2f}x")
    accuracy_rows = []
    if not args.skip_accuracy and "bfloat16" in dtypes:
        print("\nbfloat16 accuracy against the float64 truth (a slice of rows of each shape)")
        print(f"{'shape':<18}{'n':>7}  {'method':<11}{'p99.9 ulp':>10}{'0 ulp':>9}{'<=1 ulp':>9}{'update landed':>15}")
        for name, _, d, m in shapes(args.quick):
            for n in ns:
                acc = accuracy(name, m, n, rows=64 if d * m >= 10e6 else min(d, 256))
                accuracy_rows.append(acc)
                for method in (*METHODS, "sequential"):
                    a = acc[method]
                    print(f"{name:<18}{n:>7}  {method:<11}{a['p999_ulp']:>10.0f}{a['share_0ulp']:>9.4f}"
                          f"{a['share_le1ulp']:>9.4f}{a['update_landed']:>15.4f}", flush=True)  # fmt: skip
                    for k, unit in (("p999_ulp", "ulp"), ("share_0ulp", "ratio"), ("share_le1ulp", "ratio"),
                                    ("update_landed", "ratio")):  # fmt: skip
                        rows.append((f"{name}/bfloat16/n={n}/{method}/{k}", a[k], unit))
    details = {"args": {k: str(v) for k, v in vars(args).items() if k != "child"}, "ns": ns,
               "memory": "peak RSS (VmHWM) minus RSS before the first call, fresh child process, after malloc_trim",
               "edit_scale": EDIT_SCALE, "w_scale": W_SCALE, "cpu_isa": native.cpu_isa()}  # fmt: skip
    if not args.no_csv:
        path = _common.append_results(BENCH, rows, prov, details)
        print(f"\nappended {len(rows)} rows to {path}")
    print(json.dumps({"bench": BENCH, **prov, **details, "results": results, "accuracy": accuracy_rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
