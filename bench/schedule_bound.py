"""What any halving schedule of trial edits can reach within the hybrid's budget, and which metric's noise
stops it.

On the study's pool (by look-up, as bench/locator_resample.py), three measurements:

1. Every halving schedule over all layers within the budget (2 trial edits per layer): rounds of
   (facts per remaining layer, layers kept after the round), two or three rounds, the last keeping one.
   Each is run with ties to the lower and to the higher layer. Schedules are ranked on one set of draws
   (seed) and the best are reported on fresh draws (seed + 1), so the figure is not the maximum of noise.
2. The frontier: brute force on the first k facts at every layer, k = 1 .. 10 (cost k x layers).
3. Which metric limits the trial edits: the library's every-layer halving (eta 4) with one metric's
   fact x layer interaction removed from the pool (that metric replaced by its additive fact + layer fit,
   which leaves every layer's mean, so the golden band, unchanged).

    .venv/bin/python bench/schedule_bound.py --model gemma3-270m
    .venv/bin/python bench/schedule_bound.py --model gemma3-270m --table    # from the saved JSON
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import STUDIES  # noqa: E402
from locator_resample import _commit, pairs_files  # noqa: E402
from trial_score_resample import interaction  # noqa: E402

from golden_fast.fileio import read_json, write_json  # noqa: E402
from golden_fast.locate.resample import Pool, hybrid_lookup, resample_locators  # noqa: E402

OUT = ROOT / "bench/results/locate"
SIZES = (5, 10, 20)
METRICS = ("rewrite_acc", "rephrase_acc", "locality")

Schedule = tuple[tuple[int, int], ...]


def schedule_cost(schedule: Schedule, n_layers: int) -> int:
    """Trial edits of a schedule when every layer enters and each round's facts are available."""
    cost, alive, done = 0, n_layers, 0
    for facts, keep in schedule:
        cost += alive * (facts - done)
        alive, done = keep, facts
    return cost


def schedules(n_layers: int, budget: int, first: Sequence[int] = (1, 2), max_facts: int = 20) -> Iterator[Schedule]:
    """Every two- and three-round schedule ((facts, kept), ...) over `n_layers` within `budget` edits:
    facts grow strictly, the kept layers shrink strictly, the last round keeps one."""
    for n0 in first:
        for k1 in range(2, n_layers):
            for n1 in range(n0 + 1, max_facts + 1):
                two = ((n0, k1), (n1, 1))
                if schedule_cost(two, n_layers) <= budget:
                    yield two
                for k2 in range(2, k1):
                    for n2 in range(n1 + 1, max_facts + 1):
                        three = ((n0, k1), (n1, k2), (n2, 1))
                        if schedule_cost(three, n_layers) <= budget:
                            yield three


def halve(values: np.ndarray, schedule: Schedule, descending: bool = False) -> tuple[int, int]:
    """(chosen column, trial edits) of the halving on values[fact, layer] (facts in proxy order): each
    round scores the remaining layers on the first `facts` facts (capped at the set) and keeps the best
    `kept` by mean; ties go to the lower column, or to the higher one when `descending` (the library's
    `successive_halving` with the layers as its shortlist, in that order)."""
    n_facts, n_layers = values.shape
    alive = list(range(n_layers))[:: -1 if descending else 1]
    asked: set[tuple[int, int]] = set()
    for facts, keep in schedule:
        n = min(facts, n_facts)
        asked.update((i, j) for j in alive for i in range(n))
        means = values[:n, alive].mean(0)
        order = sorted(range(len(alive)), key=lambda a: (-means[a], a))  # list order breaks ties
        kept = set(order[:keep])
        alive = [x for a, x in enumerate(alive) if a in kept]  # in layer order, as the library keeps them
    return alive[0], len(asked)


def draw_sets(n_pool: int, sizes: Sequence[int], draws: int, seed: int) -> dict[int, list[np.ndarray]]:
    """The proxy sets of `resample_locators`: default_rng(seed).choice, in turn for every (size, draw)."""
    rng = np.random.default_rng(seed)
    return {int(s): [rng.choice(n_pool, size=int(s), replace=False) for _ in range(draws)] for s in sizes}


def hit_rates(values: np.ndarray, band: set[int], sets: dict[int, list[np.ndarray]], schedule: Schedule,
              descending: bool = False) -> dict[int, float]:
    return {s: float(np.mean([halve(values[rows], schedule, descending)[0] in band for rows in rs]))
            for s, rs in sets.items()}


def brute_rates(values: np.ndarray, band: set[int], sets: dict[int, list[np.ndarray]], k: int,
                descending: bool = False) -> dict[int, float]:
    """Brute force on the first k facts of each set: argmax of the mean over them (ties as `halve`)."""
    out = {}
    for s, rs in sets.items():
        hits = []
        for rows in rs:
            m = values[rows[:k]].mean(0)
            j = int(np.argmax(m[::-1])) if descending else int(np.argmax(m))
            hits.append((len(m) - 1 - j if descending else j) in band)
        out[s] = float(np.mean(hits))
    return out


def additive(values: np.ndarray) -> np.ndarray:
    """values' additive fit: fact mean + layer mean - grand mean (the fact x layer interaction removed;
    every layer's mean kept)."""
    return values - interaction(values)


def without_interaction(parts: dict[str, np.ndarray], metric: str) -> np.ndarray:
    """The overall score (mean of `parts`) with `metric`'s fact x layer interaction removed."""
    return np.mean([additive(v) if m == metric else v for m, v in parts.items()], axis=0)


def run(model: str, draws: int, seed: int, top: int) -> dict[str, Any]:
    files = pairs_files(STUDIES[model])
    pool = Pool.from_pairs(files)
    gb = pool.band()
    band = {pool.layers.index(x) for x in gb.band}  # columns
    n_layers = len(pool.layers)
    budget = 2 * n_layers
    sizes = [s for s in SIZES if s <= pool.n]
    rank_sets = draw_sets(pool.n, sizes, draws, seed)
    test_sets = draw_sets(pool.n, sizes, draws, seed + 1)
    found = list(schedules(n_layers, budget))

    best: dict[str, list[dict[str, Any]]] = {}
    for ties, desc in (("lower", False), ("higher", True)):
        ranked = sorted(((min(hit_rates(pool.values, band, rank_sets, s, desc).values()), s) for s in found),
                        key=lambda t: -t[0])[:top]
        best[ties] = [{"schedule": [list(r) for r in s], "edits": schedule_cost(s, n_layers), "ranking_min": rank,
                       "hit_rate": hit_rates(pool.values, band, test_sets, s, desc)} for rank, s in ranked]

    frontier = [{"facts": k, "edits": k * n_layers,
                 "lower": brute_rates(pool.values, band, test_sets, k),
                 "higher": brute_rates(pool.values, band, test_sets, k, True)} for k in range(1, 11)]

    parts = {m: Pool.from_pairs(files, metric=m) for m in METRICS}
    for m, p in parts.items():
        if p.keys != pool.keys:
            raise SystemExit(f"{model}: metric {m} is recorded for other facts than the overall score")
    values = {m: p.values for m, p in parts.items()}
    loc = {"every layer, eta 4": hybrid_lookup(c="all", eta=4)}
    diagnosis = []
    for name, v in [("none (the pool as measured)", pool.values)] + [
            (m, without_interaction(values, m)) for m in METRICS]:
        rep = resample_locators(Pool(v, pool.layers, pool.keys), loc, gb, sizes=sizes, draws=draws, seed=seed + 1)
        diagnosis.append({"removed": name, "interaction_variance": float(interaction(v).var()),
                          "hit_rate": {r["size"]: r["hit_rate"] for r in rep.rows},
                          "mean_edits": float(np.mean([r["mean_edits"] for r in rep.rows]))})

    return {
        "model": model,
        "band": {"golden": gb.golden, "band": gb.band, "pool": pool.n, "layers": n_layers},
        "budget": budget,
        "schedules_searched": len(found),
        "best": best,
        "frontier": frontier,
        "interaction": {m: float(interaction(values[m]).var()) for m in METRICS},
        "diagnosis": diagnosis,
        "settings": {"draws": draws, "rank_seed": seed, "report_seed": seed + 1, "sizes": sizes, "top": top},
        "provenance": {"commit": _commit(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       "files": [str(f.relative_to(ROOT)) for f in files]},
    }


def _pct(rates: dict[Any, float]) -> str:
    return " | ".join(f"{100 * v:.0f}%" for v in rates.values())


def markdown(res: dict[str, Any]) -> str:
    b = res["band"]
    sizes = res["settings"]["sizes"]
    head = " | ".join(str(s) for s in sizes)
    out = [f"{res['model']}: band {b['band']} (golden {b['golden']}) of a {b['pool']}-fact pool; budget "
           f"{res['budget']} trial edits; {res['schedules_searched']} schedules searched, ranked on seed "
           f"{res['settings']['rank_seed']}, reported on seed {res['settings']['report_seed']} "
           f"({res['settings']['draws']} draws a size)", "",
           f"| ties to | schedule (facts, layers kept) | edits | {head} |",
           "|---|---|---:|" + "---:|" * len(sizes)]
    for ties, rows in res["best"].items():
        for r in rows:
            out.append(f"| {ties} | {' -> '.join(f'({f}, {k})' for f, k in r['schedule'])} | {r['edits']} | "
                       f"{_pct(r['hit_rate'])} |")
    out += ["", f"| brute force on k facts | edits | ties lower: {head} | ties higher: {head} |",
            "|---|---:|" + "---:|" * (2 * len(sizes))]
    for r in res["frontier"]:
        out.append(f"| {r['facts']} | {r['edits']} | {_pct(r['lower'])} | {_pct(r['higher'])} |")
    out += ["", f"| interaction removed | its variance | every layer, eta 4: {head} |",
            "|---|---:|" + "---:|" * len(sizes)]
    for r in res["diagnosis"]:
        var = res["interaction"].get(r["removed"])
        out.append(f"| {r['removed']} | {'' if var is None else f'{var:.4f}'} | {_pct(r['hit_rate'])} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=sorted(STUDIES))
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top", type=int, default=5, help="best schedules reported per tie rule")
    ap.add_argument("--table", action="store_true", help="print the saved result's tables only")
    a = ap.parse_args(argv)
    path = OUT / a.model / "schedule-bound.json"
    if a.table:
        print(markdown(read_json(path)))
        return
    res = run(a.model, a.draws, a.seed, a.top)
    write_json(path, res)
    print(markdown(res))
    print(f"\nwritten: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
