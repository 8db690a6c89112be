"""The study's brute-force grid again, scored with suite "soft" beside suite "knowedit", so that the
hybrid locator's trial edits can be scored with probabilities instead of token accuracies and the
two be compared by look-up (`bench/trial_score_resample.py`).

Same facts (the pool: the study's proxy and test grids, in that order), same editor and settings, same
layers; each edit evaluated with both suites, so its knowedit metrics repeat the study's rows (checked
by `trial_score_resample.py`) and its soft metrics are new. K processes (one per core) take facts I, I+K, ...
each, into their own folder bench/results/locate/<model>/soft-grid/shard-I-of-K/ (a brute-force results
folder: pair by pair, resumable); `--reverse` lets a freed core take a shard's facts from its end.

    OMP_NUM_THREADS=1 .venv/bin/python bench/soft_grid.py --model gemma3-270m --shard 0/2
    OMP_NUM_THREADS=1 .venv/bin/python bench/soft_grid.py --model gemma3-270m --shard 1/2
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import STUDIES  # noqa: E402

OUT = ROOT / "bench/results/locate"
SUITES = ("knowedit", "soft")


def shard_dir(model: str, index: int, count: int) -> Path:
    return OUT / model / "soft-grid" / f"shard-{index}-of-{count}"


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, k = (int(x) for x in text.split("/"))
    except ValueError:
        raise SystemExit(f"--shard must be I/K (e.g. 0/2), got {text!r}") from None
    if not (k >= 1 and 0 <= i < k):
        raise SystemExit(f"--shard I/K needs 0 <= I < K, got {text!r}")
    return i, k


def pool_requests(study: Path) -> list:
    """The requests of the pool (the facts the study's grids hold at every layer), in the pool's order."""
    from locator_resample import grid_facts, pairs_files

    from golden_fast.locate.resample import Pool

    keyed, _ = grid_facts(study)
    return [keyed[k] for k in Pool.from_pairs(pairs_files(study)).keys]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, choices=sorted(STUDIES))
    ap.add_argument("--shard", default="0/1", help="I/K: facts I, I+K, ... of the pool")
    ap.add_argument("--facts", type=int, default=None, help="only the first so many pool facts")
    ap.add_argument("--reverse", action="store_true",
                    help="the shard's facts last first, into the same folder: a second process finishing a shard "
                         "from its end (pairs already in the folder are skipped when it starts)")
    args = ap.parse_args(argv)
    index, count = parse_shard(args.shard)

    import torch

    from golden_fast.experiment import ExperimentConfig
    from golden_fast.fileio import read_json
    from golden_fast.locate.brute_force import brute_force
    from golden_fast.models import load_model

    torch.set_num_threads(1)
    study = STUDIES[args.model]
    cfg = ExperimentConfig.from_dict(read_json(study / "config.json"))
    reqs = pool_requests(study)[: args.facts]
    mine = reqs[index::count][:: -1 if args.reverse else 1]
    model, tok = load_model(json.loads((study / "config.json").read_text())["model"])
    editor = {"method": cfg.brute_editor, "hparams": cfg.hparam_overrides() or None}
    out = shard_dir(args.model, index, count)
    print(f"{args.model}: {len(mine)} of {len(reqs)} pool facts x every layer -> {out}", flush=True)
    brute_force(model, tok, mine, cfg.layers, editor, out=out, suites=SUITES, progress=True)


if __name__ == "__main__":
    main()
