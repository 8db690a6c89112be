"""`golden-fast experiment`: the paper's study at this machine's scale, resumable, with a report.

    golden-fast experiment --model smollm2-135m --data counterfact-edit.json \\
        --quick --out runs/exp-quick
    golden-fast experiment --model gemma3-270m --data zsre_mend_train-1k.json \\
        --skip-invalid --out runs/exp-gemma

(--data: a local copy of a benchmark file such as CounterFact or zsRE; `--data builtin` uses the
small fact set shipped with the package.)

Parts, in order (--parts picks some; a rerun with the same --out skips finished work and resumes
brute force pair by pair, single edits fact by fact and the sequential curve at its last checkpoint):
  lga, cma          the layer LGA (signed / cosine / new_norm) and causal tracing choose on the proxy facts
  hybrid            LGA's shortlist (its lga-down result), then trial edits of the proxy facts by the
                    brute-force editor, cut by successive halving: its choice and its cost in edits
  brute-proxy       brute force on proxy facts: its choice
  brute-test        brute force on test facts: the golden layer and band, sample-wise optima and their gap
  editors           R-ROME / ROME (each fact alone, reverted) and EMMET (one batch) on the test facts
                    at every chosen layer
  mass-batch        EMMET and MEMIT on 10, 100, 1,000 facts: metrics, time, peak memory
  mass-sequential   R-ROME and ROME one fact after another up to 500, a checkpoint every 50
  report            report.html (self-contained), report.md, results.json

--quick: tiny sizes (6 proxy / 4 test facts, 4 layers, C = I, 3 v* steps, curves to 8 facts): a
pipeline check in minutes, not a result.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from golden_fast.cli import CLIError, add_threads_argument
from golden_fast.cli.locate import shortlist_arg


def _ints(text: str) -> list[int]:
    from golden_fast.cli.edit import _parse_layers

    return _parse_layers(text)


def _words(text: str) -> list[str]:
    out = [w.strip() for w in text.split(",") if w.strip()]
    if not out:
        raise argparse.ArgumentTypeError("give at least one comma-separated name")
    return out


def _sizes(text: str) -> list[int]:
    try:
        out = [int(w.replace("_", "")) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 10,100,1000; got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("give at least one size")
    return out


def _templates(text: str) -> list[list[int]]:
    try:
        v = json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"expected JSON like [[5,10],[10,10]]; got {text!r}") from None
    if not isinstance(v, list) or not all(isinstance(p, list) and len(p) == 2 for p in v):
        raise argparse.ArgumentTypeError(f"expected [[length, count], ...]; got {text!r}")
    return v


# flag -> (type, help); every default is None so that --quick's sizes apply unless a flag is given
_OPTIONS = {
    "--format": (str, "data format (default: detected from the records)"),
    "--offset": (int, "skip the first N records"),
    "--seed": (int, "seed of the proxy / test split (default 0)"),
    "--proxy-n": (int, "proxy facts, where layers are chosen (default 50)"),
    "--test-n": (int, "test facts, where choices are judged (default 100)"),
    "--brute-proxy-n": (int, "proxy facts brute force searches (default 20)"),
    "--test-brute-n": (int, "test facts brute force searches: the ground truth (default 30)"),
    "--editors-n": (int, "test facts the editors are judged on at each chosen layer (default: all test facts)"),
    "--layers": (_ints, "candidate layers: 3,4,5 or 0-29 (default: all)"),
    "--layer-sample": (int, "without --layers: this many evenly spread layers (default: all)"),
    "--thetas": (_words, "LGA parameter sets: down,mlp,block (default down)"),
    "--lga-batch-size": (int, "LGA requests per pass (default 16)"),
    "--lga-old-answer": (str, "LGA's old answer: data, greedy or auto (default data)"),
    "--cma-samples": (int, "CMA noisy copies (default 10)"),
    "--cma-answer": (str, "CMA's answer: data (skip facts the model gets wrong) or greedy (its own top token)"),
    "--cma-window": (int, "CMA restored window (default 10)"),
    "--brute-editor": (str, "brute force's editor (default r-rome)"),
    "--hybrid-shortlist": (shortlist_arg, "the hybrid's shortlist: LGA's C best layers (default 8) or 'all' (every "
                                       "candidate layer, no LGA)"),
    "--hybrid-eta": (int, "the hybrid keeps 1/K of the layers a round, the facts multiplied by K (default 2)"),
    "--hybrid-trial-score": (str, "what the hybrid's trial edits are scored by: accuracies (default), probabilities "
                                  "or mixed"),
    "--hybrid-paraphrases": (int, "template paraphrases of its relation each proxy fact's rephrase is also scored "
                                  "on (default 0)"),
    "--editors": (_words, "editors judged at each chosen layer (default r-rome,rome,emmet)"),
    "--group-size": (int, "ROME/R-ROME facts per batched v* pass (default 16)"),
    "--stats": (str, "C: preset (statistics cache) or identity (C = I)"),
    "--mom2-n-samples": (int, "corpus texts for C (default: the preset's)"),
    "--v-steps": (int, "v* optimisation steps (default: the preset's)"),
    "--templates": (_templates, "context templates as JSON [[length, count], ...] (default: the preset's)"),
    "--suites": (_words, "evaluation suites: knowedit,counterfact (default knowedit)"),
    "--batch-methods": (_words, "batch editors of the mass-editing curve (default emmet,memit)"),
    "--batch-sizes": (_sizes, "batch sizes (default 10,100,1000)"),
    "--sequential-methods": (_words, "sequential editors of the curve (default r-rome,rome)"),
    "--sequential-n": (int, "facts edited one after another (default 500)"),
    "--sequential-every": (int, "checkpoint every k edits (default 50)"),
    "--mass-layer": (int, "layer of the sequential editors (default: LGA's choice)"),
    "--mass-layers": (_ints, "layers of the batch editors (default: their preset's)"),
    "--n-boot": (int, "bootstrap draws (default 2000)"),
    "--parts": (_words, "parts to run (default: all)"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="the paper's study: locate, judge on test facts, mass editing, report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="zoo name, tiny-* name, local folder or Hugging Face id")
    p.add_argument("--data", required=True, help="a CounterFact/zsRE/KnowEdit/golden-fast file, or 'builtin'")
    p.add_argument("--out", default=None, help="results folder (default ./golden-fast-experiment-<model>); "
                                               "rerun with the same folder to resume")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a pipeline check in minutes")
    p.add_argument("--skip-invalid", action="store_true",
                   help="keep the valid records of a file with malformed ones (the count skipped is reported)")
    for flag, (typ, text) in _OPTIONS.items():
        p.add_argument(flag, type=typ, default=None, help=text)
    add_threads_argument(p)
    p.add_argument("--no-portability", action="store_true",
                   help="editors part: no two-hop portability probes on the judged facts")
    p.add_argument("--no-fluency", action="store_true",
                   help="editors part: no sampled continuation (n-gram entropy) per judged fact")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def config_from(args: argparse.Namespace):
    """The ExperimentConfig of parsed arguments (--quick's preset under the flags given)."""
    from golden_fast.experiment import ExperimentConfig, quick_config

    given = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_")) for flag in _OPTIONS}
    given = {k: v for k, v in given.items() if v is not None}
    given.update(model=args.model, data=args.data, skip_invalid=args.skip_invalid, progress=not args.no_progress,
                 portability=not args.no_portability, fluency=not args.no_fluency,
                 out=args.out or f"golden-fast-experiment-{args.model.replace('/', '_')}"
                 + ("-quick" if args.quick else ""))
    try:
        return quick_config(**given) if args.quick else ExperimentConfig(**given)
    except ValueError as exc:
        raise CLIError(f"bad settings: {exc}", code=2) from None


def _run(args: argparse.Namespace) -> int:
    from golden_fast import distributed
    from golden_fast.experiment import run_experiment

    config = config_from(args)
    res = run_experiment(config)
    if not distributed.is_main():  # rank 0 prints the summary
        return 0
    if res["report"]:
        md = (res["report"][: -len(".html")] + ".md") if res["report"].endswith(".html") else None
        if md:
            from pathlib import Path

            text = Path(md).read_text(encoding="utf-8")
            body = text.split("## Metric conventions")[0]
            print("\n" + "\n".join(line for line in body.splitlines() if not line.startswith("![")).rstrip())
        print(f"\nreport: {res['report']}")
    print(json.dumps({"experiment": dataclasses.asdict(config)["model"], "out": res["out"], "parts": res["parts"]}))
    return 0
