"""The planner's memory figures (golden_fast/plan) against what the stages take here: the peak
resident memory (VmHWM over the whole process) of a FRESH process that imports golden-fast, loads the
model and runs one stage, against the plan's total for that stage (runtime + tokenizer + weights +
working memory: golden_fast/plan/memory.py).

Stages, each in its own process, float32, the plan computed for the same sizes (the planner's
Assumptions set from the real token counts of the facts, texts and templates used):
- load: `load_model(model)` and a read of every weight;
- lga: `golden_fast.locate.lga.lga` on --facts facts (one batch of LGAConfig's 8 by default);
- stats: one layer's second moment over --stats-texts texts of the cached model-sampled corpus (no cache);
- r-rome: --edits sequential R-ROME edits with the preset (cached templates): the plan's figure is an
  edit of a sequential run, so two edits cover it;
- emmet (only with --emmet N): one EMMET batch of N facts.
Every stage process reads every weight after loading: float32 safetensors are memory-mapped, so a
weight is resident once read, and the plan counts all of them (a stage that reads only the lower
layers, as statistics does, would otherwise hold fewer). Nothing is warmed up or trimmed: a stage's
first-call costs and the C library's retained heap are part of what a process needs.

The environment's glibc settings (MALLOC_*: MALLOC_MMAP_THRESHOLD_=65536 keeps freed tensors out of
a fragmenting heap) pass to every stage process and are recorded with the results.
--live adds, per stage, the peak of torch's own CPU allocator (torch.profiler memory events) in one
process, which is what the working-memory formulas count without the runtime, tokenizer or heap.

    OMP_NUM_THREADS=1 python bench/plan_vs_measured.py --model smollm2-135m [--live] [--emmet 8]
Appends one JSON line to bench/results/plan/<model>.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, provenance  # noqa: E402

MiB = 2**20
STAGE_ORDER = ("load", "lga", "stats", "r-rome", "emmet")


def status_mib() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


def torch_alloc_peak(run: Callable[[], Any]) -> int:
    """Peak bytes held by torch's CPU allocator during run(), from the profiler's memory events."""
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


@dataclasses.dataclass
class Stage:
    """One measured stage: what runs, the planner's Assumptions for its sizes, details to record."""

    run: Callable[[], Any]
    assumptions: dict[str, Any]
    details: dict[str, Any]


def _lga_stage(args, model, tok) -> Stage:
    from golden_fast.data import builtin_facts
    from golden_fast.locate.lga import LGAConfig, lga
    from golden_fast.tokens import target_span

    reqs = [f for f in builtin_facts() if f.ground_truth is not None][: args.facts]
    lens, ans = [], []
    for r in reqs:
        for answer in (r.ground_truth, r.target_new):
            sp = target_span(tok, r.text, answer)
            lens.append(sp.end - 1)
        ans.append(sp.end - sp.start)  # the new target's tokens
    T, A = max(lens), max(1, round(sum(ans) / len(ans)))
    kw = dict(prompt_tokens=T + 1 - A, answer_tokens=A, after_subject=1, lga_batch=min(8, len(reqs)))
    return Stage(lambda: lga(model, tok, reqs, config=LGAConfig()), kw, {})


def _stats_stage(args, model, tok, tmp: Path) -> Stage:
    from golden_fast.edit.config import preset
    from golden_fast.models import get_adapter
    from golden_fast.stats import StatsConfig, second_moments

    layer = min(preset("r-rome", args.model).layers[0], get_adapter(model).n_layers - 1)
    texts = _corpus_texts(args.model, args.stats_texts)
    path = tmp / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cfg = StatsConfig(corpus=str(path), n_samples=len(texts), cache=False, checkpoint_every=0)
    n_tok = [len(tok(t, truncation=True, max_length=cfg.max_length)["input_ids"]) for t in texts]
    kw = dict(stats_text_tokens=max(n_tok), stats_batch_tokens=cfg.batch_tokens, layer=layer)
    return Stage(lambda: second_moments(model, tok, [layer], cfg, progress=False), kw,
                 {"corpus_tokens": sum(n_tok)})


def _mom2(args, method: str) -> bool:
    """--mom2 auto: on when the preset's statistics of the edited layers are cached."""
    if args.mom2 != "auto":
        return args.mom2 == "on"
    from golden_fast.edit.config import preset
    from golden_fast.models import home

    h = preset(method, args.model)
    return all(any((home() / "stats").glob(f"{args.model}-*/*/layer{x:03d}-n{h.mom2_n_samples}-{h.mom2_dtype}.*"))
               for x in h.layers)


def _edit_sizes(tok, requests, tmpls, kl: bool, tmpl_params) -> tuple[dict[str, int], dict[str, int]]:
    """Assumptions (prompt, answer, after-subject tokens) from the padded rows the editor builds."""
    from golden_fast.edit.values import _build_rows

    P = S = 0
    answers = []
    for r in requests:
        rr = _build_rows(tok, [r], tmpls, kl=kl)
        P = max(P, *map(len, rr.prefix))
        S = max(S, *map(len, rr.suffix))
        answers += [len(x) for x, is_kl in zip(rr.pred_ids, rr.is_kl) if not is_kl]
    A = max(1, round(sum(answers) / len(answers)))
    ctx = max((n for n, c in tmpl_params if c > 0), default=-2) + 2
    after = max(1, S - A + 1)
    kw = dict(prompt_tokens=max(after, P - ctx + after), answer_tokens=A, after_subject=after)
    return kw, {"real_prefix": P, "real_suffix": S}


def _edit_stage(args, model, tok, method: str) -> Stage:
    from golden_fast.data import builtin_facts
    from golden_fast.edit import Editor
    from golden_fast.edit.config import preset
    from golden_fast.edit.context import context_templates
    from golden_fast.models import get_adapter

    facts = [f for f in builtin_facts() if f.ground_truth is not None]
    hp = preset(method, args.model)
    n_layers = get_adapter(model).n_layers
    layers = sorted({min(x, n_layers - 1) for x in hp.layers})  # the preset's, or a tiny model's top layer
    requests = facts[: args.edits if method == "r-rome" else args.emmet]
    tmpls = context_templates(model, tok, hp.context_template_length_params)
    kw, sizes = _edit_sizes(tok, requests, tmpls, hp.kl_factor > 0, hp.context_template_length_params)
    mom2 = _mom2(args, method)
    kw["mom2_adjustment"] = mom2
    if method == "r-rome":
        kw["layer"] = layers[0]
    else:
        kw.update(emmet_facts=len(requests), emmet_layers=tuple(layers))
    mode = "sequential" if method == "r-rome" else "batch"

    def run() -> None:
        ed = Editor(model, tok, method, hparams={"mom2_adjustment": mom2, "layers": layers}, progress=False)
        ed.edit(requests, mode=mode)
        ed.revert()

    return Stage(run, kw, {**sizes, "mom2": mom2, "facts": len(requests)})


def build_stage(name: str, args, model, tok, tmp: Path) -> Stage:
    if name == "load":
        return Stage(lambda: None, {}, {})
    if name == "lga":
        return _lga_stage(args, model, tok)
    if name == "stats":
        return _stats_stage(args, model, tok, tmp)
    return _edit_stage(args, model, tok, name)


def read_every_weight(model) -> None:
    # float32 safetensors are memory-mapped: a weight becomes resident when first read
    with torch.no_grad():
        for p in model.parameters():
            p.sum()


# ---- one stage in this (fresh) process ------------------------------------------------------------


def child(args) -> int:
    """Import, load, read the weights, run one stage; print the process's memory as one JSON line."""
    torch.set_num_threads(args.threads)
    import golden_fast.edit  # noqa: F401
    import golden_fast.locate.lga  # noqa: F401
    import golden_fast.stats  # noqa: F401
    from golden_fast.models import load_model

    marks = {"imported": status_mib()}
    model, tok = load_model(args.model)
    marks["loaded"] = status_mib()
    read_every_weight(model)
    marks["weights_read"] = status_mib()
    with tempfile.TemporaryDirectory() as tmp:
        stage = build_stage(args.child, args, model, tok, Path(tmp))
        marks["before_stage"] = status_mib()
        t0 = time.perf_counter()
        stage.run()
        seconds = time.perf_counter() - t0
    marks["end"] = status_mib()
    print(json.dumps({"stage": args.child, "peak_mib": marks["end"]["VmHWM"], "marks": marks,
                      "seconds": seconds}))
    return 0


def run_child(args, stage: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", stage, "--model", args.model, "--facts", str(args.facts),
           "--stats-texts", str(args.stats_texts), "--edits", str(args.edits), "--emmet", str(args.emmet),
           "--mom2", args.mom2, "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- the parent: plans, one process per stage, the record -----------------------------------------


def planned(args, stage: str, kw: dict[str, Any]) -> dict[str, Any]:
    from golden_fast.plan import Assumptions, plan_model

    p = plan_model(args.model, devices=["cpu:1TB"], dtypes=["float32"], stages=[stage],
                   assumptions=Assumptions(**kw)).stage(stage, "float32")
    m = p.memory
    return {"planned_mib": p.total_bytes / MiB, "planned_weights_mib": (p.weights_bytes + p.buffers_bytes) / MiB,
            "planned_working_mib": (m.device_bytes + m.host_bytes) / MiB,
            "planned_process_mib": {k: round(v / MiB, 2) for k, v in m.process.items()},
            "terms_mib": {k: round(v / MiB, 2) for k, v in {**m.device, **m.host}.items()}, **m.notes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--stages", default=None, help="comma-separated subset of load,lga,stats,r-rome,emmet")
    ap.add_argument("--facts", type=int, default=8, help="LGA facts (one batch of 8 by default)")
    ap.add_argument("--stats-texts", type=int, default=64)
    ap.add_argument("--edits", type=int, default=2, help="sequential R-ROME edits")
    ap.add_argument("--emmet", type=int, default=0, help="facts of one EMMET batch (0: skip)")
    ap.add_argument("--mom2", choices=("auto", "on", "off"), default="auto",
                    help="R-ROME / EMMET with C (on) or C = I (off); auto: on when the preset's statistics of "
                         "the edited layers are cached (computing them is the stats stage's job, and slow)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--live", action="store_true", help="also each stage's torch allocator peak (one process)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    if args.child:
        return child(args)
    torch.set_num_threads(args.threads)

    from golden_fast.models import load_model

    names = [s for s in STAGE_ORDER if s != "emmet" or args.emmet]
    if args.stages:
        names = [s for s in names if s in args.stages.split(",")]
    model, tok = load_model(args.model)  # the sizes (token counts, templates) the stages will see
    tmp = tempfile.TemporaryDirectory()
    stages = {name: build_stage(name, args, model, tok, Path(tmp.name)) for name in names}
    rows = []
    for name, st in stages.items():
        row = {"stage": name, **planned(args, name, st.assumptions), **st.details}
        got = run_child(args, name)
        row.update(measured_peak_mib=got["peak_mib"], ratio_measured_over_planned=got["peak_mib"] / row["planned_mib"],
                   marks_mib=got["marks"], seconds=got["seconds"])
        rows.append(row)
        print(f"{name:8s} planned {row['planned_mib']:8.1f} MiB   measured peak {got['peak_mib']:8.1f} MiB   "
              f"ratio {row['ratio_measured_over_planned']:5.3f}", flush=True)
    if args.live:
        read_every_weight(model)
        for row in rows:
            if row["stage"] != "load":
                alloc = torch_alloc_peak(stages[row["stage"]].run)
                row["torch_alloc_peak_mib"] = alloc / MiB
                row["ratio_torch_alloc_over_working"] = alloc / MiB / row["planned_working_mib"]
    tmp.cleanup()

    line = {"bench": "plan_vs_measured", "model": args.model, "dtype": "float32", "threads": args.threads,
            "memory": "peak resident set (VmHWM) of a fresh process per stage, against the plan's total",
            "stages": rows,
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "OMP_", "MKL_"))},
            **provenance("cpu"), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    print(json.dumps(line))
    if not args.no_save:
        out = ROOT / "bench" / "results" / "plan" / f"{args.model}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
