"""LGA's peak memory beyond the model's weights, next to the memory that materialising every
down-projection gradient takes, and LGA's time per proxy fact (issue 5's acceptance line).

LGA never forms a weight gradient: it keeps the down-projection inputs k_t (m wide) and output
gradients g_t (d wide) of each candidate layer for one batch, and backward computes activation
gradients only. Materialising means holding grad W (d x m) for every layer: L * d * m floats for
one sample's gradient, twice that to take an inner product of two (old / new answer).

Measured, for each batch size and with LGA's activation checkpointing off / on:
- lga_peak_extra_bs{B}[_ckpt]: peak memory during an LGA run over --n facts, beyond what was allocated
  before it (the model's weights). GPU: torch.cuda.max_memory_allocated. CPU: the peak of the bytes of
  tensor storages created during the run and still alive (`LiveTensors`, a TorchDispatchMode that
  sees backward ops too); allocator overhead is not included.
- lga_seconds_per_fact_bs{B}[_ckpt]: wall time of a run / --n (p50 over --repeats, after a warm-up,
  without the meter).
- grads_all_layers: L * d * m * bytes(dtype): one set of all down-projection gradients.
- materialised_peak_extra / materialised_seconds_per_fact: the plain autograd route (weights require
  grad, backward for the old answer, a copy of the L gradients, backward for the new answer, inner
  products), one fact at a time: the baseline LGA avoids. Its scores are also the correctness check:
  LGA's signed scores must match them before anything is timed (a wrong route is never timed).

    python bench/bench_lga_memory.py [--model smollm2-135m] [--n 16] [--batch-sizes 1,8] [--checkpoint off,on]
    python bench/bench_lga_memory.py --random-weights --device cuda   # architecture twin, no download
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_results, percentiles, provenance  # noqa: E402

from golden_fast.data import builtin_facts, load  # noqa: E402
from golden_fast.data.location import data_dir  # noqa: E402
from golden_fast.locate.lga import LGAConfig, lga_inner_products  # noqa: E402
from golden_fast.models import get_adapter, load_model  # noqa: E402
from golden_fast.tokens import target_span  # noqa: E402

DATA = (data_dir() or Path("data")) / "counterfact" / "counterfact-edit.json"  # $GOLDEN_FAST_DATA
# SmolLM2-135M's architecture, for --random-weights (the device machine has no model cache or network)
SMOLLM2 = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    rope_theta=100000.0,
    bos_token_id=1,
    eos_token_id=2,
    # no pad_token_id: a random init zeroes that embedding row, and a zero residual (the fallback
    # tokenizer's BOS can be that id) makes RMSNorm's backward NaN in this twin
    pad_token_id=None,
)


class LiveTensors(TorchDispatchMode):
    """Bytes of tensor storages created inside the block and still alive, and their peak: every op
    output's storage is counted once, from its creation until it is freed (weakref.finalize on the
    storage object, which PyTorch keeps unique per storage). Backward ops run through the mode too.
    Exact for tensors, blind to allocator overhead; slows every op (memory only, never timed)."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            id(t.untyped_storage())
            for t in torch.utils._pytree.tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor)
        }
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                st = t.untyped_storage()
                key = id(st)
                # views and in-place results share an input's storage: a weight's view is no new memory
                if key not in self._seen and key not in inputs and st.nbytes() > 0:
                    self._seen.add(key)
                    self.live += st.nbytes()
                    weakref.finalize(st, self._free, key, st.nbytes())
        self.peak = max(self.peak, self.live)
        return out


class Meter:
    """Peak bytes allocated inside a `with` block beyond what was allocated before it: CUDA's allocator
    statistics on a GPU, `LiveTensors` on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.mode = LiveTensors().__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.mode.__exit__(*exc)
            self.peak = self.mode.peak


def _model(args):
    if not args.random_weights:
        return load_model(args.model, device=args.device)
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from golden_fast.models import build_tiny

    torch.manual_seed(0)
    cfg = LlamaConfig(**SMOLLM2)
    cfg._name_or_path = "smollm2-135m-random"
    model = AutoModelForCausalLM.from_config(cfg).float().to(args.device).eval()
    if args.tok:  # the real tokenizer's files (carried to a machine without the model cache)
        tok = AutoTokenizer.from_pretrained(args.tok)
        tok.padding_side = "left"
    else:  # a tiny one: ids stay below the vocabulary size; sequences are longer than the real ones
        tok = build_tiny("tiny-llama")[1]
    return model, tok


def _materialised(model, tok, reqs):
    """Per-sample <grad_W old, grad_W new> for every layer's down-projection, the autograd way."""
    adapter = get_adapter(model)
    L = adapter.n_layers
    weights = [adapter.down_proj(layer).weight for layer in range(L)]
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    for w in weights:
        w.requires_grad_(True)
    device = weights[0].device
    out = np.zeros((len(reqs), L))
    try:
        for i, r in enumerate(reqs):
            grads = []
            for answer in (r.ground_truth, r.target_new):
                sp = target_span(tok, r.text, answer)
                ids = torch.tensor([sp.ids[: sp.end]], device=device)
                logits = model(input_ids=ids).logits[0].float()
                pos = torch.arange(sp.start - 1, sp.end - 1, device=device)
                loss = torch.nn.functional.cross_entropy(logits[pos], ids[0, sp.start : sp.end])
                grads.append([g.detach().clone() for g in torch.autograd.grad(loss, weights)])  # L x (d, m)
            out[i] = [float((a.double() * b.double()).sum()) for a, b in zip(*grads)]
            del grads
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--random-weights", action="store_true", help="SmolLM2-135M's architecture, random weights")
    ap.add_argument("--tokenizer", default=None, help="with --random-weights: a folder with the real tokenizer")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default=str(DATA) if DATA.is_file() else "builtin")
    ap.add_argument("--n", type=int, default=16, help="proxy facts per LGA run")
    ap.add_argument("--batch-sizes", default="1,8,16")
    ap.add_argument("--theta", default="down", choices=("down", "mlp", "block"))
    ap.add_argument("--checkpoint", default="off,on", help="LGA's activation checkpointing: off, on or both")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--check-n", type=int, default=2, help="facts of the materialised route (check + baseline)")
    ap.add_argument("--no-csv", action="store_true")
    args = ap.parse_args()

    device = torch.device(args.device)
    model, tok = _model(args)
    reqs = builtin_facts() if args.data == "builtin" else load(args.data, limit=args.n)
    reqs = [r for r in reqs if r.ground_truth is not None][: args.n]
    if len(reqs) < args.n:
        raise SystemExit(f"only {len(reqs)} facts with a ground truth in {args.data}")
    adapter = get_adapter(model)
    W = adapter.down_weight(0)
    L, (d, m) = adapter.n_layers, W.shape
    grads_bytes = L * d * m * W.element_size()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    # 1. correctness first: LGA against materialised gradients on the first facts (float32 model)
    check = reqs[: args.check_n]
    with Meter(device) as mm:
        t0 = time.perf_counter()
        truth = _materialised(model, tok, check)
        mat_seconds = (time.perf_counter() - t0) / len(check)
    res = lga_inner_products(model, tok, check, None, LGAConfig(theta="down", batch_size=len(check)))
    scale = np.sqrt(np.abs(res["aa"] * res["bb"]))
    rel = float(np.max(np.abs(res["ab"] - truth) / scale))
    if not np.isfinite(rel) or rel > 1e-3:
        raise SystemExit(f"LGA disagrees with materialised gradients (max relative error {rel:.3g}): not timing it")

    # 2. LGA: peak memory (one run under the meter) and time per fact (runs without it), per setting
    rows, table = [], []
    for ckpt in [x == "on" for x in args.checkpoint.split(",")]:
        for bs in [int(x) for x in args.batch_sizes.split(",")]:
            cfg = LGAConfig(theta=args.theta, batch_size=bs, checkpoint=ckpt)
            lga_inner_products(model, tok, reqs[:bs], None, cfg)  # warm-up
            with Meter(device) as meter:
                lga_inner_products(model, tok, reqs, None, cfg)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                lga_inner_products(model, tok, reqs, None, cfg)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append((time.perf_counter() - t0) / len(reqs))
            sec = percentiles(times)["p50"]
            tag = f"bs{bs}" + ("_ckpt" if ckpt else "")
            table.append((bs, ckpt, meter.peak, meter.peak / grads_bytes, sec))
            rows += [
                (f"lga_peak_extra_{tag}", meter.peak, "bytes"),
                (f"lga_peak_over_grads_{tag}", meter.peak / grads_bytes, "ratio"),
                (f"lga_seconds_per_fact_{tag}", sec, "s"),
            ]
    rows += [
        ("grads_all_layers", grads_bytes, "bytes"),
        ("materialised_peak_extra", mm.peak, "bytes"),
        ("materialised_seconds_per_fact", mat_seconds, "s"),
        ("check_max_rel_err", rel, "ratio"),
    ]

    prov = provenance(device)
    print(
        f"{args.model}{' (random weights)' if args.random_weights else ''} on {prov['device']}: L={L}, d={d}, "
        f"m={m}; weights {weight_bytes / 2**20:.1f} MiB; theta={args.theta}; {len(reqs)} facts; "
        f"load average {prov['load_average']}"
    )
    print(
        f"all down-projection gradients (one set): {grads_bytes / 2**20:.1f} MiB; the materialised route "
        f"(two sets, one fact at a time) peaked at {mm.peak / 2**20:.1f} MiB extra, {mat_seconds:.2f} s/fact"
    )
    print(f"LGA vs materialised gradients: max relative error {rel:.2e} (scale |a||b|)")
    print(f"{'batch':>6} {'checkpoint':>11} {'LGA peak extra':>15} {'/ all grads':>12} {'s / fact':>9}")
    for bs, ckpt, peak, ratio, sec in table:
        print(f"{bs:>6} {'on' if ckpt else 'off':>11} {peak / 2**20:>11.1f} MiB {100 * ratio:>11.1f}% {sec:>9.3f}")
    details = {
        "model": args.model,
        "random_weights": args.random_weights,
        "n": len(reqs),
        "theta": args.theta,
        "L": L,
        "d": d,
        "m": m,
        "dtype": str(W.dtype),
        "memory": "cuda max_memory_allocated"
        if device.type == "cuda"
        else "live tensor storages (TorchDispatchMode), allocator overhead excluded",
    }
    if not args.no_csv:
        append_results("bench_lga_memory", rows, prov, details)
    print(json.dumps({"bench": "bench_lga_memory", **details, **{k: v for k, v, _ in rows}, **prov}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
