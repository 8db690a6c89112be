"""How much of the every-layer halving's hit rate comes from its tie rule.

Token accuracies tie often (two layers both score 1.0 on a fact), and the halving breaks ties by
shortlist order; with shortlist "all" that is layer order, so ties go to the lower layer. This runs the
same halving (every layer, a quarter kept a round, 2 trial edits per layer) on the study's pool by
look-up twice: with the layers in ascending order (the library's rule) and in descending order (ties to
the higher layer), on the same proxy sets, and counts how often two layers tie on a fact.

    .venv/bin/python bench/tie_order.py --model gemma3-270m
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import STUDIES  # noqa: E402
from locator_resample import _commit, pairs_files  # noqa: E402

from golden_fast.fileio import write_json  # noqa: E402
from golden_fast.locate.resample import Pool, hybrid_lookup, resample_locators  # noqa: E402

OUT = ROOT / "bench/results/locate"
SIZES = (5, 10, 20)


def tied_share(values: np.ndarray) -> float:
    """Over facts and pairs of layers: the share where the two layers score the same."""
    n_layers = values.shape[1]
    same = [(values[:, a] == values[:, b]).mean() for a in range(n_layers) for b in range(a + 1, n_layers)]
    return float(np.mean(same))


def run(model: str, draws: int, seed: int) -> dict[str, Any]:
    pool = Pool.from_pairs(pairs_files(STUDIES[model]))
    band = pool.band()
    layers = list(pool.layers)
    locs = {
        "every layer, eta 4, ties to the lower layer": hybrid_lookup(c="all", eta=4),
        "every layer, eta 4, ties to the higher layer": hybrid_lookup(shortlist=layers[::-1], eta=4),
    }
    rep = resample_locators(pool, locs, band, sizes=[s for s in SIZES if s <= pool.n], draws=draws, seed=seed)
    return {
        "model": model,
        "band": {"golden": band.golden, "band": band.band, "pool": pool.n},
        "tied_share": tied_share(pool.values),
        "rows": [{k: r[k] for k in ("locator", "size", "draws", "hits", "hit_rate", "mean_edits")} for r in rep.rows],
        "settings": {"draws": draws, "seed": seed, "metric": pool.metric},
        "provenance": {"commit": _commit(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       "files": [str(f.relative_to(ROOT)) for f in pairs_files(STUDIES[model])]},
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, choices=sorted(STUDIES))
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    result = run(args.model, args.draws, args.seed)
    write_json(OUT / args.model / "tie-order.json", result)
    print(f"{args.model}: band {result['band']['band']}; two layers tie on a fact in {result['tied_share']:.0%} "
          "of (fact, layer pair)s")
    for r in result["rows"]:
        print(f"  {r['locator']:<46} {r['size']:>3} facts: {r['hit_rate']:.0%} ({r['mean_edits']:.0f} edits)")


if __name__ == "__main__":
    main()
