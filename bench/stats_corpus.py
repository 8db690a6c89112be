"""Which text C should come from: the model-sampled corpus or WikiText-2, judged by the edits.

    python bench/stats_corpus.py                      # smollm2-135m, CounterFact: R-ROME 50, EMMET 100
    python bench/stats_corpus.py --table

For each corpus, with the same number of texts (--texts, default the preset's 320; WikiText-2's
test-split paragraphs average about 135 tokens against the sampled texts' 128), the same facts
and the same targets (v* and z depend on the weights and the request, not on C, so every corpus
gets the same ones: optimised once, then served from a target cache):

- R-ROME: each of the first --rrome-n facts edited alone at the preset layer, evaluated, reverted;
- EMMET: one batch of the first --emmet-n facts at the preset layers, evaluated, reverted;
- the statistics pass itself: its seconds in this run (near 0 when the cache already held C).

Rewrite, rephrase and locality (knowedit suite) with 95% intervals, and the paired difference per
fact between the corpora (bootstrap over facts). Results: bench/results/stats_corpus/<model>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common  # noqa: E402

from golden_fast.edit import Editor  # noqa: E402
from golden_fast.edit.moments import Moments  # noqa: E402
from golden_fast.edit.target_cache import TargetCache, reuse_targets  # noqa: E402
from golden_fast.evaluate import evaluate  # noqa: E402
from golden_fast.models import home, load_model  # noqa: E402

METRICS = ("rewrite_acc", "rephrase_acc", "locality")


def per_fact(report, metric: str, n: int) -> list[float]:
    """One value per request of an EvalReport of n requests, in order (NaN where the metric is absent)."""
    values = [report.value(i, metric) for i in range(n)]
    return [float("nan") if v is None else float(v) for v in values]


def paired_difference(a: list[float], b: list[float], n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of b - a over the facts where both exist, with a 95% bootstrap interval over facts."""
    x = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(1)
    return {"mean": float(x.mean()), "lo": float(np.quantile(means, 0.025)), "hi": float(np.quantile(means, 0.975)),
            "n": int(x.size)}


def _load_stats(ed: Editor) -> float:
    """Load C of the editor's layers once and hand it to the editor; the seconds it took in this run (near
    0 when the cache held it)."""
    t0 = time.perf_counter()
    source = Moments.from_stats(ed.model, ed.tok, ed.hparams).source
    ed.stats = Moments({layer: source(layer) for layer in ed.layers})
    return time.perf_counter() - t0


def run(args: argparse.Namespace) -> dict[str, Any]:
    model, tok = load_model(args.model)
    facts = _common.first_facts(args.data, max(args.rrome_n, args.emmet_n), args.offset)
    pre = evaluate(model, tok, facts, suites=("knowedit",))
    store = home() / "targets" / f"{args.model}.safetensors"
    cache = TargetCache.load(store) if store.exists() else TargetCache()
    out: dict[str, Any] = {"model": args.model, "texts": args.texts, "corpora": {}, "machine": _common.device_name()}
    with reuse_targets(cache):
        for corpus in args.corpora:
            over = {"mom2_dataset": corpus, "mom2_n_samples": args.texts}
            row: dict[str, Any] = {}
            rr = Editor(model, tok, "r-rome", hparams=dict(over, **({"layers": [args.layer]} if args.layer is not None
                                                                    else {})), progress=False)
            row["stats_seconds_r-rome"] = _load_stats(rr)
            t0 = time.perf_counter()
            values: dict[str, list[float]] = {m: [] for m in METRICS}
            for fact in facts[: args.rrome_n]:
                res = rr.edit([fact])
                rep = evaluate(model, tok, [fact], pre=pre, suites=("knowedit",))
                res.revert()
                for m in METRICS:
                    values[m] += per_fact(rep, m, 1)
            row["r-rome"] = {"layer": list(rr.layers), "seconds": time.perf_counter() - t0, "per_fact": values}
            em = Editor(model, tok, "emmet", hparams=dict(over, **({"layers": args.layers} if args.layers else {})),
                        progress=False)
            row["stats_seconds_emmet"] = _load_stats(em)
            t0 = time.perf_counter()
            batch = facts[: args.emmet_n]
            res = em.edit(batch, mode="batch")
            rep = evaluate(model, tok, batch, pre=pre, suites=("knowedit",))
            res.revert()
            row["emmet"] = {"layers": list(em.layers), "seconds": time.perf_counter() - t0,
                            "per_fact": {m: per_fact(rep, m, len(batch)) for m in METRICS}}
            out["corpora"][corpus] = row
            print(summary_lines({"corpora": {corpus: row}}), flush=True)
    if cache.misses:
        cache.save(store)
    return out


def _mean(xs: list[float]) -> float:
    a = np.asarray(xs, dtype=float)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


def summary_lines(res: dict[str, Any]) -> str:
    lines = []
    for corpus, row in res["corpora"].items():
        for editor in ("r-rome", "emmet"):
            if editor in row:
                pf = row[editor]["per_fact"]
                lines.append(f"{corpus} {editor}: " + ", ".join(f"{m} {_mean(pf[m]):.3f}" for m in METRICS))
    return "\n".join(lines)


def markdown_table(res: dict[str, Any]) -> str:
    corpora = list(res["corpora"])
    out = ["| editor | facts | corpus of C | rewrite | rephrase | locality | statistics pass, s |",
           "|---|---|---|---|---|---|---|"]
    for editor in ("r-rome", "emmet"):
        for corpus in corpora:
            row = res["corpora"][corpus]
            pf = row[editor]["per_fact"]
            cells = " | ".join(f"{_mean(pf[m]):.3f}" for m in METRICS)
            secs = row[f"stats_seconds_{editor}"]
            out.append(f"| {editor} | {len(pf['rewrite_acc'])} | {corpus} | {cells} | {secs:.0f} |")
        if len(corpora) == 2:
            a, b = (res["corpora"][c][editor]["per_fact"] for c in corpora)
            diffs = [paired_difference(a[m], b[m]) for m in METRICS]
            out.append(f"| {editor} | | {corpora[1]} − {corpora[0]} | "
                       + " | ".join(f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" for d in diffs) + " | |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _common.add_fact_args(p)
    p.add_argument("--corpora", type=lambda s: [w.strip() for w in s.split(",") if w.strip()],
                   default=["model-sampled", "wikitext-2"])
    p.add_argument("--texts", type=int, default=320, help="texts per corpus (mom2_n_samples)")
    p.add_argument("--rrome-n", type=int, default=50)
    p.add_argument("--emmet-n", type=int, default=100)
    p.add_argument("--layer", type=int, default=None, help="R-ROME's layer (default: its preset)")
    p.add_argument("--layers", type=lambda s: [int(w) for w in s.split(",")], default=None,
                   help="EMMET's layers (default: its preset)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    p.add_argument("--table", action="store_true", help="print the saved comparison as markdown and stop")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else _common.RESULTS / "stats_corpus" / f"{args.model}.json"
    return _common.run_or_table(out, args.table, lambda: run(args), markdown_table, args.threads)

if __name__ == "__main__":
    raise SystemExit(main())
