"""The gemma study's brute-force grid again, with each edit's rephrase also scored on more paraphrases of
the fact, built from zsRE's own question templates, to test whether a trial edit scored on several
paraphrases lets the hybrid separate the golden band (bench/schedule_bound.py: the rephrase's fact x
layer interaction is what 2 trial edits a layer cannot average).

zsRE gives one paraphrase a fact, but its questions come from per-relation templates: a fact's extra
paraphrases are the other templates of its relation, filled with its subject (`golden_fast.data.
paraphrases`, templates grouped over every valid record of the data file; at most --extra a fact);
facts whose group holds no other template get none.

The extra paraphrases ride in the requests' portability probes, answered by the new target, so suite
knowedit's "portability" is the token accuracy on them and suite soft's "portability_prob" their
probability (everything else as the study: same facts, editor, settings, layers, so rewrite, rephrase
and locality repeat bench/soft_grid.py's). K processes (one per core) take pool facts I, I+K, ... into
bench/results/locate/<model>/paraphrase-grid/shard-I-of-K/ (resumable, pair by pair).

    OMP_NUM_THREADS=1 .venv/bin/python bench/paraphrase_grid.py --shard 0/2
    OMP_NUM_THREADS=1 .venv/bin/python bench/paraphrase_grid.py --shard 1/2
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import STUDIES  # noqa: E402
from soft_grid import SUITES, parse_shard, pool_requests  # noqa: E402

MODEL = "gemma3-270m"
OUT = ROOT / "bench/results/locate" / MODEL / "paraphrase-grid"
PROBE_NAME = "template_paraphrase"


def with_paraphrases(reqs: Sequence[Any], source: Sequence[Any], limit: int) -> list[Any]:
    """The requests with their template paraphrases (`golden_fast.data.paraphrases`, groups from `source`
    and the requests) as portability probes answered by the new target."""
    from golden_fast.data.paraphrases import relation_groups, template_paraphrases
    from golden_fast.data.request import Probe

    groups = relation_groups([*source, *reqs])
    return [dataclasses.replace(r, portability=tuple(Probe(p, (r.target_new,), PROBE_NAME)
                                                     for p in template_paraphrases(r, groups, limit)))
            for r in reqs]


def source_requests(data: str) -> list[Any]:
    """Every valid edit of the study's data file: the records whose templates are grouped."""
    from golden_fast.data import validate

    return validate(data)[0]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shard", default="0/1", help="I/K: facts I, I+K, ... of the pool")
    ap.add_argument("--extra", type=int, default=4, help="extra paraphrases a fact, at most")
    ap.add_argument("--facts", type=int, default=None, help="only the first so many pool facts")
    ap.add_argument("--reverse", action="store_true",
                    help="the shard's facts last first, into the same folder: a freed core finishing a shard from its "
                         "end (pairs already in the folder are skipped when it starts)")
    ap.add_argument("--list", action="store_true", help="print each fact's extra paraphrases and stop")
    args = ap.parse_args(argv)
    index, count = parse_shard(args.shard)

    from golden_fast.experiment import ExperimentConfig
    from golden_fast.fileio import read_json, write_json

    study = STUDIES[MODEL]
    cfg = ExperimentConfig.from_dict(read_json(study / "config.json"))
    reqs = with_paraphrases(pool_requests(study)[: args.facts], source_requests(cfg.data), args.extra)
    if args.list:
        for r in reqs:
            print(f"{r.ref}: {r.prompt!r} | {r.rephrase_prompts[0]!r} | +{[p.prompt for p in r.portability]}")
        print(f"{sum(bool(r.portability) for r in reqs)} of {len(reqs)} facts have extra paraphrases, "
              f"{sum(len(r.portability) for r in reqs)} in all")
        return

    settings = {"extra": args.extra}
    stored = read_json(OUT / "settings.json")
    if stored is None:
        write_json(OUT / "settings.json", settings)
    elif stored["extra"] != args.extra:
        raise SystemExit(f"{OUT} was built with --extra {stored['extra']}; give the same, or another folder")

    import torch

    from golden_fast.locate.brute_force import brute_force
    from golden_fast.models import load_model

    torch.set_num_threads(1)
    mine = reqs[index::count][:: -1 if args.reverse else 1]
    model, tok = load_model(cfg.model)
    editor = {"method": cfg.brute_editor, "hparams": cfg.hparam_overrides() or None}
    out = OUT / f"shard-{index}-of-{count}"
    print(f"{MODEL}: {len(mine)} of {len(reqs)} pool facts x every layer -> {out}", flush=True)
    brute_force(model, tok, mine, cfg.layers, editor, out=out, suites=SUITES, progress=True)


if __name__ == "__main__":
    main()
