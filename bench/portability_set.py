"""The two-hop portability set built from CounterFact, and whether a model can answer it.

    python bench/portability_set.py --model smollm2-135m --n-eval 100

Builds the set (`golden_fast.data.portability.add_portability`) on the first 1,000 records and on
the whole file and records its counts; with --model, evaluates the unedited model on the first
--n-eval probed records: the two-hop probes (through the new object, so low before the edit) and
the same second hop asked directly of the new object (one hop: does the model know it at all?).
Writes bench/results/portability/counterfact.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from golden_fast.data import Probe, load  # noqa: E402
from golden_fast.data.location import data_dir  # noqa: E402
from golden_fast.data.portability import add_portability  # noqa: E402
from golden_fast.fileio import write_json  # noqa: E402

#: the second hop asked directly of the new object, per probe attribute
DIRECT = {"capital": "The capital of {} is", "language": "The official language of {} is",
          "continent": "{} is located on the continent of", "country": "{} is a city in the country of"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str((data_dir() or Path("data")) / "counterfact" / "counterfact-edit.json"))
    p.add_argument("--model", default=None)
    p.add_argument("--n-eval", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    records = load(args.data)
    result: dict = {"data": Path(args.data).name, "sets": {}}
    for name, reqs in (("first-1000", records[:1000]), ("all", records)):
        _, report = add_portability(reqs)
        result["sets"][name] = report.to_dict()
        print(f"{name}: {report.summary()}", flush=True)
    if args.model:
        from golden_fast.evaluate import evaluate
        from golden_fast.models import load_model

        out, _ = add_portability(records[:1000])
        probed = [r for r in out if r.portability][: args.n_eval]
        model, tok = load_model(args.model)
        t0 = time.perf_counter()
        rows = {}
        for attr, template in DIRECT.items():
            two_hop = [dataclasses.replace(r, portability=ps) for r in probed
                       if (ps := tuple(q for q in r.portability if q.name.endswith(":" + attr)))]
            if not two_hop:
                continue
            direct = [dataclasses.replace(r, portability=(Probe(template.format(r.target_new), r.portability[0].answers,
                                                                "direct"),)) for r in two_hop]
            a = evaluate(model, tok, two_hop, suites=("knowedit",)).summary()["portability"]
            b = evaluate(model, tok, direct, suites=("knowedit",)).summary()["portability"]
            rows[attr] = {"n": a.n, "two_hop": [a.mean, a.lo, a.hi], "direct": [b.mean, b.lo, b.hi]}
            print(f"{attr}: n={a.n} two-hop {a.mean:.3f}  direct {b.mean:.3f}", flush=True)
        overall = evaluate(model, tok, probed, suites=("knowedit",)).summary()["portability"]
        result["pre_edit"] = {"model": args.model, "records": len(probed), "overall": [overall.mean, overall.lo,
                                                                                       overall.hi],
                              "by_attribute": rows, "seconds": time.perf_counter() - t0,
                              "threads": torch.get_num_threads(), "machine": _common.device_name()}
    path = _common.RESULTS / "portability" / "counterfact.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    print(json.dumps({"bench": "portability_set", "out": str(path)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
