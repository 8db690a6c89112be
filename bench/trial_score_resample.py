"""Which trial-edit score lets the hybrid locator find the golden band at a tenth of brute force's cost:
token accuracies or their probability counterparts (suite "soft"), compared by look-up.

Ground truth: the study's pool (its brute-force grids, knowedit accuracies) and its golden band, as in
`bench/locator_resample.py`. Trial scores: the soft grid (`bench/soft_grid.py`: the same edits,
evaluated with suites knowedit and soft) over the pool facts it has finished; its knowedit metrics are
checked against the study's rows first. Each score below is the per-fact mean of its metrics:

  accuracies    rewrite_acc, rephrase_acc, locality           (the study's "overall", the default)
  probabilities rewrite_prob, rephrase_prob, locality_prob     (suite soft alone)
  mixed         rewrite_prob, rephrase_prob, locality          (probabilities where the answer is the
                                                                new one; locality's argmax agreement)
  accuracies, ties by probabilities: accuracies + 1e-3 x probabilities (the accuracies' order, their
                ties broken by the probabilities instead of the layer order)

Proxy sets of 5, 10 and 20 facts are drawn from the soft grid's facts (200 draws, the same sets for
every score); each locator chooses from its trial scores and a hit is a choice inside the pool's band.
Locators: the hybrid over every layer (a quarter kept a round, 2 trial edits per layer: at most a tenth
of the study's proxy brute force), the hybrid on LGA's shortlist (library defaults), and brute force on
the first 2 facts of each set (the same budget).

    .venv/bin/python bench/trial_score_resample.py --model gemma3-270m
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import STUDIES  # noqa: E402
from locator_resample import STUDY_PROXY_FACTS, _commit, pairs_files, seconds_per_edit  # noqa: E402

from golden_fast.fileio import write_json  # noqa: E402
from golden_fast.locate.resample import (  # noqa: E402
    Pool,
    hybrid_lookup,
    lga_matrix,
    proxy_brute,
    read_pairs,
    resample_locators,
)

OUT = ROOT / "bench/results/locate"
SCORES: dict[str, tuple[str, ...]] = {
    "accuracies": ("rewrite_acc", "rephrase_acc", "locality"),
    "probabilities": ("rewrite_prob", "rephrase_prob", "locality_prob"),
    "mixed": ("rewrite_prob", "rephrase_prob", "locality"),
}
#: accuracies with ties broken by the probabilities: acc + 1e-3 prob (accuracies differ by at least a few
#: hundredths when they differ, so the probabilities only order layers whose accuracies are equal)
TIE_BREAK = 1e-3
DERIVED = {"accuracies, ties by probabilities": ("accuracies", "probabilities")}
SIZES = (5, 10, 20)


def soft_files(model: str) -> list[Path]:
    return sorted((OUT / model / "soft-grid").glob("shard-*/pairs.jsonl"))


def read_grid(files: Sequence[Path]) -> dict[str, dict[int, dict[str, float]]]:
    """key -> layer -> metrics of several results files (`read_pairs`; a shard still appending: its torn
    last line left out)."""
    rows: dict[str, dict[int, dict[str, float]]] = {}
    for f in files:
        for key, by_layer in read_pairs(f).items():
            rows.setdefault(key, {}).update(by_layer)
    return rows


def agreement(study: Mapping[str, Mapping[int, Mapping[str, float]]],
              soft: Mapping[str, Mapping[int, Mapping[str, float]]], keys: Sequence[str]) -> dict[str, Any]:
    """How many knowedit values of the soft grid's pairs differ from the study's (same edit, same evaluation)."""
    n = differ = 0
    worst: list[Any] = []
    for k in keys:
        for layer, got in soft.get(k, {}).items():
            old = study[k][layer]
            for m in SCORES["accuracies"]:
                if m in old:
                    n += 1
                    if abs(float(got[m]) - float(old[m])) > 1e-9:
                        differ += 1
                        worst.append([k, layer, m, old[m], got[m]])
    return {"values": n, "differ": differ, "examples": worst[:10]}


def separation(pool: Pool, golden: int, band: Sequence[int]) -> dict[str, Any]:
    """How far each layer outside the band lies below the golden layer under this score, in units of the
    per-fact spread: d(l) = mean_i [s(i, G) - s(i, l)] / sd_i [s(i, G) - s(i, l)] (a paired effect size;
    the facts a trial edit needs to tell G from l grow as 1 / d(l)^2)."""
    g = pool.layers.index(golden)
    out = {}
    for j, layer in enumerate(pool.layers):
        if layer in band:
            continue
        d = pool.values[:, g] - pool.values[:, j]
        sd = float(d.std(ddof=1))
        out[int(layer)] = float(d.mean()) / sd if sd > 0 else None
    vals = [v for v in out.values() if v is not None]
    return {"effect_size": out, "median": float(np.median(vals)) if vals else None,
            "smallest": float(np.min(vals)) if vals else None}


def interaction(x: np.ndarray) -> np.ndarray:
    """The fact x layer interaction of x[fact, layer]: x less its fact and layer means (plus the grand mean)."""
    return x - x.mean(0, keepdims=True) - x.mean(1, keepdims=True) + x.mean()


def interaction_noise(truth: Pool, rerun: Pool) -> dict[str, float]:
    """The fact x layer interaction of the accuracies (each matrix less its fact and layer means), and the
    part of it a re-run of the same edits does not repeat: var(study - rerun) / 2 is the re-run noise, the
    rest is stable (which facts favour which layers), and no trial score of the same edits can remove it."""
    sub = truth.subset(rerun.keys).values
    total = float(interaction(sub).var())
    noise = float((interaction(sub) - interaction(rerun.values)).var() / 2)
    return {"interaction_var": total, "rerun_noise_var": noise, "stable_share": 1 - noise / total if total else None}


def locators(lga: np.ndarray) -> dict[str, Any]:
    return {
        "hybrid, all+eta=4": hybrid_lookup(c="all", eta=4),
        "hybrid (LGA shortlist)": hybrid_lookup(lga=lga),
        "brute force on 2 facts": proxy_brute(first=2),
    }


def run(model: str, draws: int, seed: int) -> dict[str, Any]:
    study = STUDIES[model]
    truth = Pool.from_pairs(pairs_files(study))
    band = truth.band()
    files = soft_files(model)
    if not files:
        raise SystemExit(f"no soft grid under {OUT / model / 'soft-grid'}: run bench/soft_grid.py first")
    pools = {name: Pool.from_pairs(files, metric=ms, layers=truth.layers) for name, ms in SCORES.items()}
    keys = pools["accuracies"].keys
    for name, p in pools.items():
        if p.keys != keys:
            raise SystemExit(f"score {name}: facts {len(p.keys)} differ from the accuracies' {len(keys)}")
    for name, (first, second) in DERIVED.items():
        a, b = pools[first], pools[second]
        pools[name] = Pool(a.values + TIE_BREAK * b.values, a.layers, a.keys, name)
    outside = [k for k in keys if k not in truth.keys]
    if outside:
        raise SystemExit(f"soft grid facts not in the study's pool: {outside[:3]}")
    agree = agreement(read_grid(pairs_files(study)), read_grid(files), keys)
    lga = lga_matrix(OUT / model / "lga-pool.json", pools["accuracies"])
    sizes = [s for s in SIZES if s <= len(keys)]
    rows = []
    for name, p in pools.items():
        rep = resample_locators(p, locators(lga), band, sizes=sizes, draws=draws, seed=seed)
        rows += [r | {"score": name, "metrics": list(SCORES.get(name, DERIVED.get(name)))} for r in rep.rows]
    sep = {name: separation(p, band.golden, band.band) for name, p in pools.items() if name in SCORES}
    noise = interaction_noise(truth, pools["accuracies"])
    ref_edits = STUDY_PROXY_FACTS * len(truth.layers)
    for r in rows:
        r["edit_ratio"] = r["mean_edits"] / ref_edits
    spe, _ = seconds_per_edit(files, keys)
    return {
        "model": model,
        "band": {"golden": band.golden, "band": band.band, "pool": truth.n},
        "facts": len(keys),
        "agreement": agree,
        "separation": sep,
        "interaction_noise": noise,
        "rows": rows,
        "settings": {
            "scores": {k: list(v) for k, v in SCORES.items()},
            "derived": {k: f"{a} + {TIE_BREAK} x {b}" for k, (a, b) in DERIVED.items()},
            "sizes": sizes,
            "draws": draws,
            "seed": seed,
            "sampling": "proxy sets drawn from the soft grid's facts; hits against the band of the study's whole pool",
            "reference_edits": ref_edits,
            "seconds_per_edit": spe,
        },
        "provenance": {
            "commit": _commit(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "files": [str(f.relative_to(ROOT)) for f in files],
            "truth": [str(f.relative_to(ROOT)) for f in pairs_files(study)],
        },
    }


def markdown(result: Mapping[str, Any]) -> str:
    lines = [
        f"{result['model']}: band {result['band']['band']} (golden {result['band']['golden']}) of the study's "
        f"{result['band']['pool']}-fact pool; proxy sets from the {result['facts']} facts of the soft grid",
        "",
        "| locator | trial score | " + " | ".join(f"{s} facts" for s in result["settings"]["sizes"])
        + " | edits / brute |",
        "|---|---|" + "---:|" * len(result["settings"]["sizes"]) + "---:|",
    ]
    by: dict[tuple[str, str], dict[int, Mapping[str, Any]]] = {}
    for r in result["rows"]:
        by.setdefault((r["locator"], r["score"]), {})[r["size"]] = r
    for (loc, score), per in by.items():
        cells = [f"{per[s]['hit_rate']:.0%}" for s in result["settings"]["sizes"]]
        ratio = max(per[s]["edit_ratio"] for s in per)
        lines.append(f"| {loc} | {score} | " + " | ".join(cells) + f" | {ratio:.3f} |")
    a = result["agreement"]
    same = a["values"] - a["differ"]
    lines += ["", f"knowedit values of the soft grid equal to the study's: {same} of {a['values']}"]
    if "separation" in result:
        lines += ["", "| trial score | median effect size, layers outside the band | smallest |", "|---|---:|---:|"]
        for name, sp in result["separation"].items():
            lines.append(f"| {name} | {sp['median']:.2f} | {sp['smallest']:.2f} |")
        nz = result["interaction_noise"]
        lines += ["", f"fact x layer interaction of the accuracies: variance {nz['interaction_var']:.4f}, of which "
                  f"{nz['rerun_noise_var']:.4f} re-run noise ({nz['stable_share']:.0%} stable)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, choices=sorted(STUDIES))
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", action="store_true", help="print the saved result's table")
    args = ap.parse_args(argv)
    path = OUT / args.model / "trial-score.json"
    if args.table:
        print(markdown(json.loads(path.read_text())))
        return
    result = run(args.model, args.draws, args.seed)
    write_json(path, result)
    (path.with_suffix(".md")).write_text(markdown(result) + "\n", encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
