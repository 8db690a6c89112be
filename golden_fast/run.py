"""The main job: `golden-fast run` / `make demo`.

1. LGA on a proxy slice of the facts chooses the layer (no trial edits);
2. the other facts are edited at that layer: R-ROME one by one (each edit evaluated, then
   reverted) and EMMET as one batch;
3. everything is evaluated before and after; a table is printed and a report written
   (HTML, Markdown, JSON) whose path is printed last.

The facts default to the built-in set (83 facts the default model knows); `--data` takes any
file `golden_fast.data.load` reads.

Under torchrun every rank runs the job (the stages share their work across the ranks); rank 0 alone
prints and writes the report.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from golden_fast import distributed
from golden_fast.data import builtin_facts, load, split
from golden_fast.edit import Editor
from golden_fast.edit.config import preset
from golden_fast.edit.editor import SharedOverrides
from golden_fast.edit.moments import Moments
from golden_fast.evaluate import EvalReport, evaluate
from golden_fast.evaluate.report import HEADLINE_METRICS
from golden_fast.models import DEFAULT_MODEL, get_adapter, load_model

# metrics shown in the printed table, in order (others stay in the JSON)
SHOWN = HEADLINE_METRICS


@dataclasses.dataclass
class RunSettings:
    """Settings of the main job (each a CLI flag of `golden-fast run`)."""

    model: str = DEFAULT_MODEL
    data: str | None = None  # None: the built-in facts
    n_proxy: int = 16  # facts LGA reads
    n_edit: int | None = 12  # facts edited and evaluated (None: all the rest); small: make demo < 10 min
    lga_variant: str = "signed"
    # "lga": the layer of the best LGA score, seconds; "hybrid": LGA's shortlist, then trial R-ROME edits
    # on proxy facts cut by successive halving (minutes; lands in the golden band far more often)
    locator: str = "lga"
    mom2_n_samples: int | None = 128  # texts for C (None: the preset's): 2 sampling batches on a fresh machine
    layer: int | None = None  # skip LGA and edit here
    methods: tuple[str, ...] = ("r-rome", "emmet")
    out: str | None = None
    seed: int = 0
    progress: bool = True


def _say(*args: Any, **kwargs: Any) -> None:
    """print, on rank 0 only."""
    if distributed.is_main():
        print(*args, **kwargs)


def _facts(s: RunSettings) -> tuple[list, list]:
    """(proxy, test): a deterministic, disjoint split with exactly n_proxy proxy facts."""
    facts = builtin_facts() if s.data is None else load(s.data)
    if len(facts) < s.n_proxy + 1:
        raise ValueError(f"{len(facts)} facts: need more than n_proxy={s.n_proxy}")
    return split(facts, s.n_proxy / len(facts), seed=s.seed)


def _summary_row(report: EvalReport) -> dict[str, dict[str, float]]:
    return {m: {"mean": v.mean, "lo": v.lo, "hi": v.hi, "n": v.n} for m, v in report.summary().items()}


def _plot_metrics(reports: dict[str, EvalReport], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = [m for m in SHOWN if all(m in r.summary() for r in reports.values())]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / max(1, len(reports))
    for j, (name, rep) in enumerate(reports.items()):
        s = rep.summary()
        means = np.array([s[m].mean for m in metrics])
        err = np.array([[s[m].mean - s[m].lo for m in metrics], [s[m].hi - s[m].mean for m in metrics]])
        ax.bar(np.arange(len(metrics)) + j * width, means, width, yerr=err, capsize=2, label=name)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(reports) - 1) / 2, metrics, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean (95% bootstrap CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _write_report(s: RunSettings, out: Path, layer: int, proxy: list, test: list, lga_scores: Any,
                  reports: dict[str, EvalReport], header: list[str], rows: list, timings: dict[str, float],
                  results: dict[str, Any], pre: EvalReport) -> tuple[str, str]:
    """Write the report (HTML, Markdown, results.json, plots) into `out`; the HTML and Markdown paths."""
    from golden_fast.report import Report

    rep = Report(f"golden-fast run: {s.model}", f"{len(proxy)} proxy facts for LGA, {len(test)} test facts edited")
    how = ("with no trial edit" if s.locator == "lga"
           else f"with {lga_scores.extra.get('cost', {}).get('edits', '?')} trial edits" if lga_scores is not None
           else "")
    rep.text("Chosen layer", (f"{s.locator.upper()} ({s.lga_variant} variant) chose layer {layer} from {len(proxy)} "
                              f"proxy facts in {timings.get(s.locator, 0):.1f} s, {how}." if lga_scores is not None
                              else f"Layer {layer} was given; LGA was skipped."))
    if lga_scores is not None:
        rep.figure("LGA per-layer scores", lga_scores.plot(out / "lga.png"),
                   caption="Tukey fences dashed; dropped layers marked; the chosen layer highlighted.")
        rep.pre("LGA summary", lga_scores.summary())
    rep.table("Metrics (means)", header, rows, note="95% bootstrap intervals are in results.json and the plot.")
    rep.figure("Metrics", _plot_metrics(reports, out / "metrics.png"))
    rep.table("Time (s)", ["stage", "seconds"], [[k, v] for k, v in timings.items()])
    rep.pre("Metric conventions", "\n".join(f"{k}: {v}" for k, v in pre.conventions.items()))
    rep.pre("Settings", json.dumps(dataclasses.asdict(s), indent=1))
    paths = rep.write(out, results=results)
    return str(paths.html), str(paths.markdown)


def run_main(settings: RunSettings | None = None) -> dict[str, Any]:
    """Run the main job; returns the results (also written to the report's results.json)."""
    from golden_fast.locate import locate

    s = settings or RunSettings()
    t_start = time.perf_counter()
    out = Path(s.out or f"golden-fast-run-{s.model.replace('/', '_')}")
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
    model, tok = load_model(s.model)
    from golden_fast.demo import structure_table

    _say(f"== golden-fast run: {s.model} ({time.perf_counter() - t_start:.1f} s to load)", flush=True)
    _say(structure_table(model), flush=True)
    proxy, rest = _facts(s)
    test = rest[: s.n_edit] if s.n_edit else rest
    timings: dict[str, float] = {}

    # 1. the layer
    lga_scores = None
    if s.locator not in ("lga", "hybrid"):
        raise ValueError(f"locator must be 'lga' or 'hybrid', got {s.locator!r}")
    if s.layer is None:
        t0 = time.perf_counter()
        if s.locator == "hybrid":
            editor = {"method": "r-rome", "hparams": SharedOverrides(
                {"mom2_n_samples": s.mom2_n_samples} if s.mom2_n_samples else {})}
            lga_scores = locate(model, tok, proxy, method="hybrid", editor=editor, variant=s.lga_variant,
                                progress=s.progress)
        else:
            lga_scores = locate(model, tok, proxy, method="lga", variant=s.lga_variant, progress=s.progress)
        timings[s.locator] = time.perf_counter() - t0
        layer = lga_scores.chosen
        _say(f"{s.locator.upper()} ({s.lga_variant}) on {len(proxy)} proxy facts chose layer {layer} "
              f"in {timings[s.locator]:.1f} s\n{lga_scores.summary()}", flush=True)
    else:
        layer = int(s.layer)
        _say(f"layer {layer} given (LGA skipped)", flush=True)

    # 2. statistics (cached: computed once per model and sample count)
    hparams0 = preset("r-rome", s.model)
    if s.mom2_n_samples:
        hparams0 = dataclasses.replace(hparams0, mom2_n_samples=s.mom2_n_samples)
    t0 = time.perf_counter()
    moments = Moments.from_stats(model, tok, dataclasses.replace(hparams0, layers=(layer,)))
    moments.C(layer, get_adapter(model).down_weight(layer).shape[1])  # computed (or read) now, timed here
    timings["statistics"] = time.perf_counter() - t0

    # 3. evaluation before, edits, evaluation after
    t0 = time.perf_counter()
    pre = evaluate(model, tok, test, suites=("knowedit", "counterfact"), model_name=s.model)
    timings["pre_eval"] = time.perf_counter() - t0
    reports: dict[str, EvalReport] = {"pre-edit": pre}
    edit_info: dict[str, Any] = {}
    for method in s.methods:
        overrides = SharedOverrides(mom2_n_samples=hparams0.mom2_n_samples)
        t0 = time.perf_counter()
        ed = Editor(model, tok, method, layers=[layer], hparams=overrides, stats=moments, progress=s.progress)
        if ed.spec.single:
            per = ed.edit_each(test, lambda i, r, res: evaluate(model, tok, [r], pre=pre, suites=pre.suites,
                                                                  model_name=s.model))
            post = EvalReport.concat(per, pre=pre)
            label = f"{method} (one by one)"
        else:
            res = ed.edit(test, mode="batch")
            post = evaluate(model, tok, test, pre=pre, suites=pre.suites, model_name=s.model)
            res.revert()
            label = f"{method} (batch of {len(test)})"
        timings[method] = time.perf_counter() - t0
        reports[label] = post
        edit_info[label] = {"method": method, "seconds": timings[method], "n": len(test)}
        _say(f"{label}: {timings[method]:.1f} s", flush=True)

    # 4. table and report
    names = list(reports)
    summ = {n: r.summary() for n, r in reports.items()}
    metrics = [m for m in SHOWN if any(m in summ[n] for n in names)]
    header = ["metric"] + names
    rows = [[m] + [summ[n][m].mean if m in summ[n] else float("nan") for n in names] for m in metrics]
    width = max(len(n) for n in names) + 2
    _say(f"\n== layer {layer}: {len(test)} test facts (pre-edit vs after each editor; means)")
    _say(f"{'metric':<14}" + "".join(f"{n:>{width}}" for n in names))
    for r in rows:
        _say(f"{r[0]:<14}" + "".join(f"{v:>{width}.3f}" if v == v else f"{'-':>{width}}" for v in r[1:]))
    results = {
        "settings": dataclasses.asdict(s),
        "layer": layer,
        "lga": lga_scores.to_dict() if lga_scores is not None else None,
        "proxy": [r.ref for r in proxy],
        "test": [r.ref for r in test],
        "summaries": {n: _summary_row(r) for n, r in reports.items()},
        "edits": edit_info,
        "timings_s": timings,
        "conventions": pre.conventions,
    }
    html, md = distributed.broadcast_object(
        _write_report(s, out, layer, proxy, test, lga_scores, reports, header, rows, timings, results, pre)
        if distributed.is_main() else None)
    total = time.perf_counter() - t_start
    _say(f"\nreport: {Path(html).resolve()}\n        {Path(md).resolve()}\n"
         f"== done in {total:.1f} s")
    results["report"] = html
    return results
