"""Does scoring a trial edit's rephrase on several paraphrases let the hybrid find gemma's golden band at a
tenth of brute force's cost? A look-up comparison on the paraphrase grid (`bench/paraphrase_grid.py`).

Ground truth: the study's pool and its golden band (knowedit accuracies, one paraphrase a fact), as in
`bench/locator_resample.py`. Trial scores, per fact and layer, from the paraphrase grid's facts finished
at every layer:

  accuracies      rewrite_acc, rephrase_acc, locality (the study's "overall")
  paraphrases     rewrite_acc, rephrase over all paraphrases, locality; the rephrase is the mean over the
                  fact's own paraphrase and its extra ones (knowedit's rephrase_acc of a request carrying
                  them all); a fact with no extra paraphrase keeps its one
  probabilities, one paraphrase   rewrite_prob, rephrase_prob (suite soft), locality: the control for
  paraphrases, probabilities      the same with the rephrase's probability over all paraphrases

Proxy sets of 5, 10 and 20 facts (200 draws, the same for every score); a hit is a choice inside the
pool's band. Locators: the hybrid over every layer (a quarter kept a round, 2 trial edits a layer) with
ties to the lower and to the higher layer, the hybrid on LGA's shortlist (library defaults), brute
force on the first 2 facts (the same budget). Also: the rephrase's fact x layer interaction with one
paraphrase and with all, on the facts that have extra ones.

    .venv/bin/python bench/paraphrase_resample.py
    .venv/bin/python bench/paraphrase_resample.py --table
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import STUDIES  # noqa: E402
from locator_resample import STUDY_PROXY_FACTS, _commit, pairs_files, seconds_per_edit  # noqa: E402
from paraphrase_grid import MODEL, OUT, source_requests, with_paraphrases  # noqa: E402
from soft_grid import pool_requests  # noqa: E402
from trial_score_resample import agreement, interaction, read_grid  # noqa: E402

from golden_fast.fileio import read_json, write_json  # noqa: E402
from golden_fast.locate.resample import Pool, hybrid_lookup, lga_matrix, proxy_brute, resample_locators  # noqa: E402

SIZES = (5, 10, 20)
RESULT = OUT.parent / "paraphrase-score.json"
Rows = dict[str, dict[int, dict[str, float]]]


def grid_files() -> list[Path]:
    return sorted(OUT.glob("shard-*/pairs.jsonl"))


def rekey(grid: Rows, keys: Mapping[str, str]) -> Rows:
    """The grid's rows under the study's keys (`keys`: grid key -> study key; the grid's requests carry
    the extra paraphrases, so their keys differ from the study's)."""
    unknown = [k for k in grid if k not in keys]
    if unknown:
        raise SystemExit(f"paraphrase grid facts not among the pool's requests: {unknown[:3]}")
    return {keys[k]: v for k, v in grid.items()}


def matrix(rows: Rows, keys: Sequence[str], layers: Sequence[int], metric: str, optional: bool = False) -> np.ndarray:
    """values[fact, layer] of one metric; `optional`: NaN where a row lacks it (the portability metrics, present
    only for facts with extra paraphrases), else a missing value is an error."""
    return np.array([[rows[k][layer].get(metric, np.nan) if optional else rows[k][layer][metric] for layer in layers]
                     for k in keys], dtype=np.float64)


def all_paraphrases(single: np.ndarray, extra: np.ndarray | None, n_extra: np.ndarray) -> np.ndarray:
    """The mean over a fact's own paraphrase and its n extra ones: (single + n x extra) / (1 + n); facts
    with none (n = 0, extra absent) keep the single value."""
    n = n_extra[:, None].astype(np.float64)
    extra = np.where(n > 0, extra, 0.0) if extra is not None else np.zeros_like(single)
    return (single + n * extra) / (1 + n)


def scores(rows: Rows, keys: Sequence[str], layers: Sequence[int], n_extra: np.ndarray) -> dict[str, np.ndarray]:
    m = {name: matrix(rows, keys, layers, name)
         for name in ("rewrite_acc", "rephrase_acc", "locality", "rewrite_prob", "rephrase_prob")}
    reph = all_paraphrases(m["rephrase_acc"], matrix(rows, keys, layers, "portability", True), n_extra)
    reph_p = all_paraphrases(m["rephrase_prob"], matrix(rows, keys, layers, "portability_prob", True), n_extra)
    return {
        "accuracies": (m["rewrite_acc"] + m["rephrase_acc"] + m["locality"]) / 3,
        "paraphrases": (m["rewrite_acc"] + reph + m["locality"]) / 3,
        "probabilities, one paraphrase": (m["rewrite_prob"] + m["rephrase_prob"] + m["locality"]) / 3,
        "paraphrases, probabilities": (m["rewrite_prob"] + reph_p + m["locality"]) / 3,
        "_rephrase_one": m["rephrase_acc"],
        "_rephrase_all": reph,
    }


def locators(lga: np.ndarray, layers: Sequence[int]) -> dict[str, Any]:
    return {
        "every layer, eta 4, ties to the lower layer": hybrid_lookup(c="all", eta=4),
        "every layer, eta 4, ties to the higher layer": hybrid_lookup(shortlist=list(layers)[::-1], eta=4),
        "hybrid (LGA shortlist)": hybrid_lookup(lga=lga),
        "brute force on 2 facts": proxy_brute(first=2),
    }


def run(draws: int, seed: int) -> dict[str, Any]:
    study = STUDIES[MODEL]
    truth = Pool.from_pairs(pairs_files(study))
    band = truth.band()
    from golden_fast.experiment import ExperimentConfig
    from golden_fast.locate.brute_force import request_key

    cfg = ExperimentConfig.from_dict(read_json(study / "config.json"))
    plain = pool_requests(study)
    rich = with_paraphrases(plain, source_requests(cfg.data), int(read_json(OUT / "settings.json")["extra"]))
    to_study = {request_key(r): request_key(p) for r, p in zip(rich, plain)}
    n_extra_of = {request_key(p): len(r.portability) for r, p in zip(rich, plain)}
    files = grid_files()
    if not files:
        raise SystemExit(f"no paraphrase grid under {OUT}: run bench/paraphrase_grid.py first")
    grid = rekey(read_grid(files), to_study)
    keys = [k for k in truth.keys if k in grid and all(layer in grid[k] for layer in truth.layers)]
    if len(keys) < min(SIZES):
        raise SystemExit(f"only {len(keys)} facts finished at every layer")
    n_extra = np.array([n_extra_of[k] for k in keys])
    mats = scores(grid, keys, truth.layers, n_extra)
    agree = agreement(read_grid(pairs_files(study)), grid, keys)
    lga = lga_matrix(OUT.parent / "lga-pool.json", truth.subset(keys))
    sizes = [s for s in SIZES if s <= len(keys)]
    rows = []
    for name, v in mats.items():
        if name.startswith("_"):
            continue
        rep = resample_locators(Pool(v, truth.layers, keys, name), locators(lga, truth.layers), band, sizes=sizes,
                                draws=draws, seed=seed)
        rows += [{k: r[k] for k in ("locator", "size", "draws", "hits", "hit_rate", "mean_edits")} | {"score": name}
                 for r in rep.rows]
    ref_edits = STUDY_PROXY_FACTS * len(truth.layers)
    for r in rows:
        r["edit_ratio"] = r["mean_edits"] / ref_edits
    has = n_extra > 0
    spe, _ = seconds_per_edit(files, list(grid_keys_of(to_study, keys)))
    return {
        "model": MODEL,
        "band": {"golden": band.golden, "band": band.band, "pool": truth.n},
        "facts": len(keys),
        "facts_with_extra": int(has.sum()),
        "extra_paraphrases": int(n_extra.sum()),
        "agreement": agree,
        "rephrase_interaction": {"one paraphrase": float(interaction(mats["_rephrase_one"][has]).var()),
                                 "all paraphrases": float(interaction(mats["_rephrase_all"][has]).var()),
                                 "facts": int(has.sum())},
        "layer_means": {name: v.mean(0).tolist() for name, v in mats.items() if not name.startswith("_")},
        "rows": rows,
        "settings": {"sizes": sizes, "draws": draws, "seed": seed, "reference_edits": ref_edits,
                     "seconds_per_edit": spe,
                     "sampling": "proxy sets drawn from the paraphrase grid's finished facts; hits against the "
                                 "band of the study's whole pool"},
        "provenance": {"commit": _commit(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       "files": [str(f.relative_to(ROOT)) for f in files]},
    }


def grid_keys_of(to_study: Mapping[str, str], keys: Sequence[str]) -> list[str]:
    want = set(keys)
    return [g for g, s in to_study.items() if s in want]


def markdown(res: Mapping[str, Any]) -> str:
    sizes = res["settings"]["sizes"]
    ri = res["rephrase_interaction"]
    lines = [f"{res['model']}: band {res['band']['band']} (golden {res['band']['golden']}) of the study's "
             f"{res['band']['pool']}-fact pool; proxy sets from the {res['facts']} facts the paraphrase grid has "
             f"at every layer ({res['facts_with_extra']} with extra paraphrases, {res['extra_paraphrases']} in all)",
             "", "| locator | trial score | " + " | ".join(f"{s} facts" for s in sizes) + " | edits / brute |",
             "|---|---|" + "---:|" * len(sizes) + "---:|"]
    by: dict[tuple[str, str], dict[int, Mapping[str, Any]]] = {}
    for r in res["rows"]:
        by.setdefault((r["locator"], r["score"]), {})[r["size"]] = r
    for (loc, score), per in sorted(by.items()):
        cells = [f"{per[s]['hit_rate']:.0%}" for s in sizes]
        ratio = max(p["edit_ratio"] for p in per.values())
        lines.append(f"| {loc} | {score} | " + " | ".join(cells) + f" | {ratio:.3f} |")
    a = res["agreement"]
    lines += ["", f"knowedit values equal to the study's: {a['values'] - a['differ']} of {a['values']}",
              f"rephrase fact x layer interaction on the {ri['facts']} facts with extra paraphrases: "
              f"{ri['one paraphrase']:.4f} with one, {ri['all paraphrases']:.4f} with all"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", action="store_true", help="print the saved result's table")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown(read_json(RESULT)))
        return
    res = run(args.draws, args.seed)
    write_json(RESULT, res)
    print(markdown(res))


if __name__ == "__main__":
    main()
