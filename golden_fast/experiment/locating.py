"""The locating comparison (the paper's central one): LGA (each variant), the hybrid locator, causal
tracing (CMA) and brute force choose a layer on the proxy facts; brute force on test facts gives the
ground truth.

Files, under one folder (bench/locate_compare.py uses the same layout):
  lga-<theta>.json         LayerScores of LGA (every variant inside; reselected, never recomputed)
  hybrid-pairs/            the hybrid's trial edits (brute-force pairs, resumable pair by pair)
  hybrid.json              LayerScores of the hybrid locator: LGA's shortlist, then successive halving
  cma.json                 LayerScores of causal tracing, or cma-error.txt when every fact was skipped
                           (its CMA options in cma-error.settings.json)
  brute-proxy/             brute-force pairs on the proxy facts (resumable pair by pair)
  brute-proxy.json         their LayerScores: the brute-force choice
  <test pairs>/            brute-force pairs on the test facts (the caller names the folder)
  brute-test.json          their LayerScores: the test golden layer, sample-wise optima, gap

Every run function skips work already on disk (LGA and CMA: unless it was made with other options; then
that method alone is recomputed, so --cma-answer greedy can follow a run that skipped every fact). Wall
times are the methods' own compute (LGA and CMA on the whole proxy split, brute force summed over its
(fact, layer) pairs across resumed runs, the hybrid LGA's plus its trial edits').
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from golden_fast.locate import LayerScores
from golden_fast.locate.brute_force import BruteForceResult, brute_force, brute_scores
from golden_fast.locate.causal_trace import CMAConfig, causal_trace
from golden_fast.locate.golden import layer_comparison, overall
from golden_fast.locate.hybrid import (
    EditScorer,
    HybridConfig,
    hybrid_scores,
    lga_shortlist,
    paraphrase_count,
    successive_halving,
    trial_requests,
)
from golden_fast.locate.lga import VARIANTS, LGAConfig, lga

__all__ = [
    "PAPER",
    "chosen_layers",
    "judge",
    "mean_ci",
    "run_brute",
    "run_cma",
    "run_hybrid",
    "run_lga",
]

#: the label of the paper's LGA: down-projection gradient, signed score, Tukey k = 1
PAPER = "lga-down-signed (paper)"


def _scores(path: Path) -> LayerScores | None:
    return LayerScores.from_json(path) if path.exists() else None


def _save(scores: LayerScores, path: Path) -> None:
    from golden_fast import distributed
    from golden_fast.fileio import write_json

    if distributed.is_main():  # every rank holds the same scores: one writes them
        write_json(path, scores.to_dict())
    distributed.barrier()


def run_lga(
    model: nn.Module,
    tok: Any,
    proxy: Sequence[Any],
    layers: Sequence[int],
    out: str | Path,
    thetas: Sequence[str] = ("down",),
    batch_size: int = 16,
    old_answer: str = "data",
    progress: bool = True,
) -> dict[str, LayerScores]:
    """LGA once per theta on the proxy facts (skipping those already in out/lga-<theta>.json)."""
    out = Path(out)
    found = {}
    for theta in thetas:
        path = out / f"lga-{theta}.json"
        config = LGAConfig(theta=theta, batch_size=batch_size, old_answer=old_answer)
        s = _scores(path)
        if s is not None and not _same(s.settings, dataclasses.asdict(config)):
            print(f"LGA ({theta}): {path} was made with other settings; recomputing", flush=True)
            s = None
        if s is None:
            s = lga(model, tok, proxy, layers, config, progress=progress)
            _save(s, path)
            print(
                f"LGA ({theta}) done in {s.wall_time:.1f} s: "
                + ", ".join(f"{v} -> layer {s.reselect(v).chosen}" for v in VARIANTS),
                flush=True,
            )
        found[theta] = s
    return found


def run_cma(
    model: nn.Module,
    tok: Any,
    proxy: Sequence[Any],
    layers: Sequence[int],
    out: str | Path,
    config: CMAConfig | None = None,
    progress: bool = True,
) -> LayerScores | None:
    """Causal tracing on the proxy facts (skipped when out/cma.json or out/cma-error.txt exists).

    Returns None when every proxy fact was skipped (the clean model never gives the answer): CMA then
    chooses no layer, and the reason is kept in out/cma-error.txt for the report.
    """
    out = Path(out)
    config = config or CMAConfig()
    want = dataclasses.asdict(config)
    path, err, err_settings = out / "cma.json", out / "cma-error.txt", out / "cma-error.settings.json"
    s = _scores(path)
    if s is not None and _same(s.settings, want):
        return s
    if s is None and err.exists():
        from golden_fast.fileio import read_json

        made = read_json(err_settings)
        if made is not None and _same(made, want):  # (none recorded, older layout: traced again once)
            return None
    if s is not None or err.exists():
        print("CMA: the results there were made with other settings; recomputing", flush=True)
    try:
        s = causal_trace(model, tok, proxy, layers, config, progress=progress)
    except ValueError as exc:  # every proxy fact skipped: say so in the report rather than stop the study
        if "skipped" not in str(exc):
            raise
        from golden_fast import distributed
        from golden_fast.fileio import write_json

        if distributed.is_main():
            out.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            err.write_text(str(exc))
            write_json(err_settings, want)
        distributed.barrier()
        print(f"CMA chose no layer: {exc}", flush=True)
        return None
    err.unlink(missing_ok=True)
    err_settings.unlink(missing_ok=True)
    _save(s, path)
    print(f"CMA done in {s.wall_time:.1f} s: layer {s.chosen} ({s.extra['n_skipped']} of {s.n_requests} skipped)",
          flush=True)
    return s


def run_brute(
    model: nn.Module,
    tok: Any,
    requests: Sequence[Any],
    layers: Sequence[int],
    editor: Any,
    pairs: str | Path,
    scores_path: str | Path,
    n_boot: int = 2000,
    progress: bool = True,
) -> tuple[BruteForceResult, LayerScores]:
    """Brute force over (fact, layer) pairs, resuming from the pairs folder; its LayerScores (golden
    analysis inside) are rewritten to `scores_path` from all the pairs each time (cheap)."""
    res = brute_force(model, tok, requests, layers, editor, out=pairs, progress=progress)
    s = brute_scores(res, n_boot=n_boot)
    _save(s, Path(scores_path))
    return res, s


def run_hybrid(
    model: nn.Module,
    tok: Any,
    proxy: Sequence[Any],
    lga_scores: LayerScores | None,
    editor: Any,
    pairs: str | Path,
    scores_path: str | Path,
    config: HybridConfig | None = None,
    progress: bool = True,
    layers: Sequence[int] | None = None,
    suites: Sequence[str] = ("knowedit",),
    paraphrase_source: Sequence[Any] | None = None,
) -> LayerScores:
    """The hybrid locator on a finished LGA run: the shortlist of its paper variant (signed, Tukey k=1),
    or, with `config.shortlist` "all" (`lga_scores` None), every one of `layers`; then successive
    halving with trial edits of the proxy facts by `editor`, evaluated by `suites` and scored by
    `config.metric`, with `config.paraphrases` template paraphrases (grouped over
    `paraphrase_source`) added to each fact's rephrase (pairs kept in `pairs`, so an interrupted
    run resumes pair by pair). Skipped when `scores_path` holds a result of the same settings
    made from the same LGA scores.

    The result has the layout of `golden_fast.locate.hybrid.hybrid` (LGA is not run again here); its
    wall time is LGA's plus the trial edits' own compute, read from the pairs file so that a resumed run
    counts each pair once."""
    config = config or HybridConfig()
    if (config.shortlist == "all") != (lga_scores is None):
        raise ValueError("run_hybrid: shortlist 'all' takes no LGA scores; any other shortlist needs them")
    if lga_scores is None:
        if not layers or len(layers) < 2:
            raise ValueError(f"run_hybrid: shortlist 'all' over {layers}: give at least two candidate layers")
        ls, candidates = None, [int(x) for x in layers]
        short = list(candidates)
    else:
        ls = lga_scores.reselect("signed", tukey_k=1.0)
        candidates = list(ls.layers)
        short = lga_shortlist(ls.layers, ls.scores, 1.0, config.shortlist)
    budget = config.budget(len(candidates))
    config = config.resolved(len(short), len(candidates), len(proxy))
    settings = {"hybrid": dataclasses.asdict(config) | {"budget_edits": budget},
                "lga": None if ls is None else ls.settings, "editor": _plain(editor), "suites": list(suites)}
    path = Path(scores_path)
    s = _scores(path)
    if (s is not None and _same(s.settings, settings) and s.extra.get("shortlist") == short
            and (s.extra.get("lga") or {}).get("scores") == (None if ls is None else ls.scores)):
        return s
    trial = trial_requests(proxy, config.paraphrases, paraphrase_source)
    scorer = EditScorer(model, tok, trial, editor, out=pairs, suites=suites, metric=config.metric, progress=progress)
    hv = successive_halving(scorer, short, len(proxy), n0=config.n0, confidence=config.confidence,
                            n_boot=config.n_boot, seed=config.seed, early_stop=config.early_stop,
                            min_stop_facts=config.min_stop_facts, eta=config.eta, budget=budget)
    lga_seconds = 0.0 if ls is None else ls.wall_time
    s = hybrid_scores(ls, hv, config, settings, n_requests=len(proxy), lga_seconds=lga_seconds,
                      wall_time=lga_seconds + scorer.pair_seconds, pair_seconds=scorer.pair_seconds,
                      paraphrases=paraphrase_count(proxy, trial))
    _save(s, path)
    cost = s.extra["cost"]
    where = "every layer" if ls is None else f"shortlist {short}"
    print(f"hybrid done: layer {s.chosen} from {where}, {cost['edits']} trial edit(s) in {len(hv.rounds)} round(s), "
          f"{s.wall_time:.1f} s", flush=True)
    return s


def _plain(x: Any) -> Any:
    """JSON-ready copy (editor overrides are a dict subclass)."""
    return json.loads(json.dumps(x, default=str))


def _same(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether a stored result was made with `wanted` (its settings may hold more keys)."""
    # tuples vs lists after a JSON round trip
    return all(_plain(stored.get(k)) == _plain(v) for k, v in wanted.items())


def chosen_layers(out: str | Path, thetas: Sequence[str] = ("down",)) -> dict[str, dict[str, Any]]:
    """Method label -> {"layer", "wall_time", "n", "family", "edits", "note", ...} for every finished locating
    part ("edits": the trial edits it made, the cost brute force is counted in: LGA and CMA make none)."""
    out = Path(out)
    found: dict[str, dict[str, Any]] = {}
    for theta in thetas:
        s = _scores(out / f"lga-{theta}.json")
        if s is None:
            continue
        for v in VARIANTS:
            r = s.reselect(v, tukey_k=1.0)
            dropped = [layer for layer, k in zip(r.layers, r.kept) if not k]
            label = f"lga-{theta}-{v}" + (" (paper)" if (theta, v) == ("down", "signed") else "")
            found[label] = {
                "layer": r.chosen,
                "wall_time": s.wall_time,
                "n": s.n_used,
                "family": "lga",
                "edits": 0,
                "note": f"Tukey k=1 dropped {dropped}" if dropped else "Tukey k=1 dropped none",
            }
        raw = s.reselect("signed", tukey_k=None)
        found[f"lga-{theta}-signed-nofilter"] = {
            "layer": raw.chosen,
            "wall_time": s.wall_time,
            "n": s.n_used,
            "family": "lga",
            "edits": 0,
            "note": "signed score, no Tukey filter",
        }
    s = _scores(out / "hybrid.json")
    if s is not None:
        found["hybrid"] = _hybrid_entry(s)
    s = _scores(out / "cma.json")
    if s is not None:
        found["cma"] = {
            "layer": s.chosen,
            "wall_time": s.wall_time,
            "n": s.n_used,
            "family": "cma",
            "edits": 0,
            "n_skipped": s.extra["n_skipped"],
            "note": f"{s.extra['n_skipped']} of {s.n_requests} proxy facts skipped (clean model wrong); "
            f"answer={s.settings.get('answer')}",
        }
    s = _scores(out / "brute-proxy.json")
    if s is not None:
        found["brute-force"] = {
            "layer": s.chosen,
            "wall_time": s.wall_time,
            "n": s.n_used,
            "family": "brute",
            "edits": s.n_used * len(s.layers),
            "note": f"{s.n_used} proxy facts x {len(s.layers)} layers",
        }
    return found


def _hybrid_entry(s: LayerScores) -> dict[str, Any]:
    cost, rounds = s.extra["cost"], s.extra["rounds"]
    return {
        "layer": s.chosen,
        "wall_time": s.wall_time,
        "n": s.n_used,
        "family": "hybrid",
        "edits": int(cost["edits"]),
        "rounds": len(rounds),
        "note": ("every candidate layer (no LGA)" if s.extra.get("lga") is None
                 else f"LGA shortlist {s.extra['shortlist']}")
        + f", then {cost['edits']} trial edits in {len(rounds)} round(s)"
        + (" (stopped early)" if s.extra.get("stopped_early") else ""),
    }


def mean_ci(x: np.ndarray, n_boot: int, seed: int = 0) -> dict[str, Any]:
    """Mean of the non-NaN values with a 95% percentile-bootstrap interval (None when no value)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    lo, hi = np.percentile(x[idx].mean(1), [2.5, 97.5])
    return {"mean": float(x.mean()), "lo": float(lo), "hi": float(hi), "n": int(len(x))}


def judge(
    M: np.ndarray,
    layers: Sequence[int],
    metrics: Sequence[str],
    golden_layer: int,
    methods: Mapping[str, Mapping[str, Any]],
    n_boot: int = 2000,
) -> list[dict[str, Any]]:
    """One row per locating method: its layer's test metrics (mean, 95% CI) from M[fact, layer, metric]
    (which must hold every chosen layer and the golden one), its distance to the test golden layer,
    the paired difference to the golden layer, and its speedup over brute force."""
    layers = [int(x) for x in layers]
    missing = sorted({int(m["layer"]) for m in methods.values()} - set(layers) | ({golden_layer} - set(layers)))
    if missing:
        raise ValueError(f"judge: M lacks layer(s) {missing}; it has {layers}")
    over = overall(np.asarray(M, dtype=np.float64), list(metrics))  # (n, L)
    brute_time = methods.get("brute-force", {}).get("wall_time")
    rows = []
    for label, m in methods.items():
        layer = int(m["layer"])
        j = layers.index(layer)
        row = {
            "method": label,
            **m,
            "distance_to_test_golden": abs(layer - golden_layer),
            "overall": mean_ci(over[:, j], n_boot),
        }
        for k, name in enumerate(metrics):
            row[name] = mean_ci(M[:, j, k], n_boot)
        row["vs_golden"] = layer_comparison(M, layers, metrics, layer, golden_layer, n_boot=n_boot)
        wall = m.get("wall_time")
        row["speedup_vs_brute"] = brute_time / wall if brute_time and wall else None
        rows.append(row)
    return rows
