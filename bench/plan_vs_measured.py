"""The planner's memory figures (golden_fast/plan) against what the stages take here: peak resident
memory (VmHWM, reset before each stage: golden_fast.experiment.memory.measure_peak) above what the
process held before the stage (the loaded model, for every stage but load).

Stages measured on the CPU, float32, each with the plan computed for the same sizes (the planner's
Assumptions set from the real token counts of the facts, texts and templates used):
- load: `load_model(model)` and a read of every weight (float32 safetensors are memory-mapped: a
  weight is resident once read); the tokenizer's share is measured apart (a second one loaded);
- lga: `golden_fast.locate.lga.lga` on --facts facts (one batch of LGAConfig's 8 by default);
- stats: one layer's second moment over --stats-texts texts of the cached model-sampled corpus (no cache);
- r-rome: --edits sequential R-ROME edits with the preset (cached statistics and templates): the
  plan's figure is an edit of a sequential run, so two edits cover it;
- emmet (only with --emmet N): one EMMET batch of N facts.
Before each stage: a small warm-up of the same code (LGA, stats) so one-time allocations are not
counted, then gc and malloc_trim so freed heap is given back.

--live adds the peak of torch's own CPU allocator (torch.profiler memory events: tensors and the
kernels' internal workspaces), which is what the formulas count: the resident peak is that plus the
C library's heap (glibc keeps freed blocks, small allocations fragment it), Python objects and
autograd's nodes. The glibc settings are recorded with the results; MALLOC_ARENA_MAX=1
MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0 shrink the heap's part.

    OMP_NUM_THREADS=1 python bench/plan_vs_measured.py --model smollm2-135m [--live] [--emmet 8]
Appends one JSON line to bench/results/plan/<model>.jsonl.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, provenance  # noqa: E402

from golden_fast.experiment.memory import measure_peak, rss_bytes  # noqa: E402

MiB = 2**20


def trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def torch_alloc_peak(run) -> int:
    """Peak bytes held by torch's CPU allocator during run() (every c10 allocation: tensors, and the
    workspaces kernels allocate internally), from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    cur = peak = 0
    for _, nbytes in events:
        cur += nbytes
        peak = max(peak, cur)
    return peak


def _corpus_texts(model_name: str, n: int) -> list[str]:
    """The first n texts of the model's cached model-sampled corpus; else the built-in facts' prompts."""
    from golden_fast.models import home

    for f in sorted((home() / "corpora").glob(f"{model_name}-*/*.jsonl")):
        texts = [json.loads(line)["text"] for line in f.read_text().splitlines() if line.strip()]
        if len(texts) >= n:
            return texts[:n]
    from golden_fast.data import builtin_facts

    facts = builtin_facts()
    return [" ".join(f.text for f in facts[i : i + 12]) for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--facts", type=int, default=8, help="LGA facts (one batch of 8 by default)")
    ap.add_argument("--stats-texts", type=int, default=64)
    ap.add_argument("--edits", type=int, default=2, help="sequential R-ROME edits")
    ap.add_argument("--emmet", type=int, default=0, help="facts of one EMMET batch (0: skip)")
    ap.add_argument("--mom2", choices=("auto", "on", "off"), default="auto",
                    help="R-ROME / EMMET with C (on) or C = I (off); auto: on when the preset's statistics of "
                         "the edited layers are cached (computing them is the stats stage's job, and slow)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--live", action="store_true",
                    help="also run each stage under torch.profiler(profile_memory=True): the peak of the bytes "
                         "torch's CPU allocator holds (tensors and the kernels' workspaces), what the formulas "
                         "count, without the C library's heap overhead")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    # everything the stages import, imported now: module code is not what is measured
    import golden_fast.edit  # noqa: F401
    from golden_fast.data import builtin_facts
    from golden_fast.edit import Editor
    from golden_fast.edit.config import preset
    from golden_fast.edit.context import context_templates
    from golden_fast.edit.values import _build_rows
    from golden_fast.locate.lga import LGAConfig, lga
    from golden_fast.models import load_model
    from golden_fast.plan import Assumptions, plan_model, stage_memory
    from golden_fast.stats import StatsConfig, second_moments
    from golden_fast.tokens import target_span

    plan = plan_model(args.model, devices=["cpu:1TB"], dtypes=["float32"], stages=["load"])
    arch = plan.arch
    rows: list[dict] = []

    def record(stage: str, measured, planned: int, detail: dict) -> None:
        ratio = measured.extra_mib * MiB / planned if planned else math.nan
        rows.append({"stage": stage, "planned_mib": planned / MiB, "measured_peak_extra_mib": measured.extra_mib,
                     "ratio_measured_over_planned": ratio, "peak_mib": measured.peak_mib,
                     "reset": measured.reset, **detail})
        print(f"{stage:8s} planned {planned / MiB:8.1f} MiB   RSS peak {measured.extra_mib:8.1f} MiB   "
              f"ratio {ratio:5.2f}", flush=True)

    # ---- load --------------------------------------------------------------------------------
    trim()
    before = rss_bytes()
    t0 = time.perf_counter()
    with measure_peak() as mem:
        model, tok = load_model(args.model)
        # float32 safetensors are memory-mapped: a weight becomes resident when first read (the first
        # forward pass), so read every one here
        with torch.no_grad():
            for p in model.parameters():
                p.sum()
    seconds = time.perf_counter() - t0
    trim()
    settled = (rss_bytes() - before) / MiB
    from transformers import AutoTokenizer

    from golden_fast.models import ZOO, cache_dir

    src = str(cache_dir(args.model)) if args.model in ZOO else args.model
    with measure_peak() as tmem:  # a second tokenizer: what load_model's own one holds
        tok2 = AutoTokenizer.from_pretrained(src)
    del tok2
    trim()
    load = plan.stage("load", "float32")
    lp = load.weights_bytes + load.buffers_bytes
    record("load", mem, lp, {"settled_growth_mib": settled, "tokenizer_mib": tmem.extra_mib,
                             "ratio_without_tokenizer": (mem.extra_mib - tmem.extra_mib) * MiB / lp,
                             "seconds": seconds})

    def planned(stage: str, **kw) -> tuple[int, dict]:
        asm = Assumptions(**kw).resolve(arch, args.model)
        sm = stage_memory(stage, arch, asm, 4)
        return sm.device_bytes + sm.host_bytes, {"terms_mib": {k: round(v / MiB, 2) for k, v in
                                                              {**sm.device, **sm.host}.items()}, **sm.notes}

    facts = [f for f in builtin_facts() if f.ground_truth is not None]
    stages: list[tuple[str, object, int, dict]] = []  # (name, run, planned bytes, details)

    # ---- LGA ------------------------------------------------------------------------------------
    reqs = facts[: args.facts]
    lens, ans = [], []
    for r in reqs:
        for answer in (r.ground_truth, r.target_new):
            sp = target_span(tok, r.text, answer)
            lens.append(sp.end - 1)
        ans.append(sp.end - sp.start)  # the new target's tokens
    T, A = max(lens), max(1, round(sum(ans) / len(ans)))
    lga(model, tok, reqs[:1], config=LGAConfig())  # warm-up
    p, d = planned("lga", prompt_tokens=T + 1 - A, answer_tokens=A, after_subject=1, lga_batch=min(8, len(reqs)))
    stages.append(("lga", lambda: lga(model, tok, reqs, config=LGAConfig()), p, d))

    # ---- statistics -----------------------------------------------------------------------------
    layer = preset("r-rome", args.model).layers[0]
    tmp = tempfile.TemporaryDirectory()
    texts = _corpus_texts(args.model, args.stats_texts)
    path = Path(tmp.name) / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cfg = StatsConfig(corpus=str(path), n_samples=len(texts), cache=False, checkpoint_every=0)
    second_moments(model, tok, [layer], cfg.replace(n_samples=4), progress=False)  # warm-up
    n_tok = [len(tok(t, truncation=True, max_length=cfg.max_length)["input_ids"]) for t in texts]
    p, d = planned("stats", stats_text_tokens=max(n_tok), stats_batch_tokens=cfg.batch_tokens, layer=layer)
    stages.append(("stats", lambda: second_moments(model, tok, [layer], cfg, progress=False), p,
                   {**d, "corpus_tokens": sum(n_tok)}))

    # ---- R-ROME, EMMET --------------------------------------------------------------------------
    def lengths(requests, tmpls, kl: bool):
        """(prefix, suffix) widths of the padded rows (the longest), target tokens per row (the mean:
        only real target positions are scored)."""
        P = S = 0
        answers = []
        for r in requests:
            rr = _build_rows(tok, [r], tmpls, kl=kl)
            P = max(P, *map(len, rr.prefix))
            S = max(S, *map(len, rr.suffix))
            answers += [len(x) for x, is_kl in zip(rr.pred_ids, rr.is_kl) if not is_kl]
        return P, S, max(1, round(sum(answers) / len(answers)))

    def sizes(P, S, A, tmpl_params):
        ctx = max((n for n, c in tmpl_params if c > 0), default=-2) + 2
        after = max(1, S - A + 1)
        return dict(prompt_tokens=max(after, P - ctx + after), answer_tokens=A, after_subject=after)

    def mom2(method: str) -> bool:
        if args.mom2 != "auto":
            return args.mom2 == "on"
        from golden_fast.models import home

        h = preset(method, args.model)
        return all(any((home() / "stats").glob(f"{args.model}-*/*/layer{x:03d}-n{h.mom2_n_samples}-{h.mom2_dtype}.*"))
                   for x in h.layers)

    def edit(method: str, requests, mode: str) -> None:
        # a fresh Editor: C is loaded by its first edit
        ed = Editor(model, tok, method, hparams={"mom2_adjustment": mom2(method)}, progress=False)
        ed.edit(requests, mode=mode)
        ed.revert()

    hp = preset("r-rome", args.model)
    edits = facts[: args.edits]
    P, S, A = lengths(edits, context_templates(model, tok, hp.context_template_length_params), hp.kl_factor > 0)
    p, d = planned("r-rome", layer=hp.layers[0], mom2_adjustment=mom2("r-rome"),
                   **sizes(P, S, A, hp.context_template_length_params))
    stages.append(("r-rome", lambda: edit("r-rome", edits, "sequential"), p,
                   {**d, "edits": len(edits), "real_prefix": P, "real_suffix": S, "mom2": mom2("r-rome")}))
    if args.emmet:
        he = preset("emmet", args.model)
        batch = facts[: args.emmet]
        P, S, A = lengths(batch, context_templates(model, tok, he.context_template_length_params), he.kl_factor > 0)
        p, d = planned("emmet", emmet_facts=len(batch), mom2_adjustment=mom2("emmet"),
                       **sizes(P, S, A, he.context_template_length_params))
        stages.append(("emmet", lambda: edit("emmet", batch, "batch"), p,
                       {**d, "real_prefix": P, "real_suffix": S, "mom2": mom2("emmet")}))

    # ---- measure: resident peaks first, then (--live) torch's allocator, whose profiler runs would
    # leave the heap fragmented for the resident measurements that followed them
    for name, run, p, d in stages:
        trim()
        t0 = time.perf_counter()
        with measure_peak() as mem:
            run()
        record(name, mem, p, {**d, "seconds": time.perf_counter() - t0})
    if args.live:
        for row, (name, run, p, _) in zip(rows[1:], stages):
            trim()
            alloc = torch_alloc_peak(run)
            row["torch_alloc_peak_mib"] = alloc / MiB
            row["ratio_torch_alloc_over_planned"] = alloc / p
            print(f"{name:8s} planned {p / MiB:8.1f} MiB   torch allocator peak {alloc / MiB:8.1f} MiB   "
                  f"ratio {alloc / p:5.2f}", flush=True)
    tmp.cleanup()

    prov = provenance("cpu")
    line = {"bench": "plan_vs_measured", "model": args.model, "dtype": "float32", "threads": torch.get_num_threads(),
            "memory": "peak resident set (VmHWM) above the RSS before the stage", "stages": rows,
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "OMP_", "MKL_"))}, **prov,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    print(json.dumps(line))
    if not args.no_save:
        out = ROOT / "bench" / "results" / "plan" / f"{args.model}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
