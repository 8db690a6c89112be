"""The paper's central comparison (issue 5): the layer chosen by LGA (each variant), by causal tracing
(CMA) and by brute force on a proxy split, judged on a disjoint test split against that split's own
brute-force golden layer; R-ROME's test metrics at each chosen layer; each method's wall time.

Parts, run in this order (each saves its results under --out as it goes; a rerun skips what is
finished and resumes brute force pair by pair, so a long run can finish in parts):
  lga          LGA on the proxy split (--proxy-n facts); one run yields every variant
               (signed = the paper's, cosine, new_norm) from the same Gram products
  cma          causal tracing on the proxy split (ROME's settings; wrong facts skipped and counted)
  brute-proxy  R-ROME at every layer on the first --brute-proxy-n proxy facts: the brute-force choice
  brute-test   R-ROME at every layer on the first --test-brute-n test facts: the ground truth
  test-eval    R-ROME on --test-n test facts at each chosen layer and at the test golden layer
  report       report.json and report.md: chosen layers, distance to the test golden layer, test
               metrics (knowedit suite, mean with 95% bootstrap intervals), wall times, speedups

    python bench/locate_compare.py                       # the full comparison (hours on a CPU)
    python bench/locate_compare.py --parts lga,cma       # only some parts
    python bench/locate_compare.py --quick               # tiny sizes, to check the pipeline

Golden layers use the "overall" metric: per request, the mean of the metrics present (rewrite,
rephrase, locality for CounterFact). Wall times are the methods' own compute: LGA and CMA on the
whole proxy split, brute force summed over its (fact, layer) pairs across resumed parts.

A thin wrapper: the parts and the judging live in golden_fast.experiment.locating (shared with
`golden-fast experiment`, which adds ROME / EMMET at the chosen layers, mass-editing curves and an
HTML report). The results layout is unchanged; split.json now also lists the facts' "pool" (here the
test facts), and report.json's rows carry a "family" key (lga / cma / brute).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance  # noqa: E402

from golden_fast.data.location import data_dir  # noqa: E402
from golden_fast.experiment import ExperimentConfig  # noqa: E402
from golden_fast.experiment.facts import load_facts  # noqa: E402
from golden_fast.experiment.locating import chosen_layers, judge, run_brute, run_cma, run_lga  # noqa: E402
from golden_fast.fileio import write_json  # noqa: E402
from golden_fast.locate import LayerScores  # noqa: E402
from golden_fast.locate.brute_force import brute_force  # noqa: E402
from golden_fast.locate.causal_trace import CMAConfig  # noqa: E402
from golden_fast.models import get_adapter, load_model  # noqa: E402

DATA = (data_dir() or Path("data")) / "counterfact" / "counterfact-edit.json"  # $GOLDEN_FAST_DATA
PARTS = ("lga", "cma", "brute-proxy", "brute-test", "test-eval", "report")


def _splits(args, out: Path):
    """proxy / test facts, recorded in (or checked against) out/split.json (golden_fast.experiment.facts)."""
    cfg = ExperimentConfig(
        data=args.data, offset=args.offset, seed=args.seed, proxy_n=args.proxy_n, test_n=args.test_n,
        brute_proxy_n=args.brute_proxy_n, test_brute_n=args.test_brute_n, skip_invalid=args.skip_invalid,
        batch_methods=(), sequential_methods=(),
    )
    try:
        facts = load_facts(cfg, out)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if args.skip_invalid:
        print(f"{args.data}: skipped {facts.n_invalid} invalid record(s) of {facts.n_read} read", flush=True)
    return facts.proxy, facts.test


def _editor(args) -> dict:
    hp: dict = {}
    if args.identity_c:
        hp["mom2_adjustment"] = False
    if args.v_steps is not None:
        hp["v_num_grad_steps"] = args.v_steps
    if args.templates is not None:
        hp["context_template_length_params"] = args.templates
    return {"method": "r-rome", "hparams": hp or None}


def report(args, out: Path, test_res, truth: LayerScores, methods: dict) -> dict:
    """Judge every chosen layer on the test facts against the test golden layer."""
    rows = judge(test_res.M, test_res.layers, test_res.metrics, truth.chosen, methods, n_boot=args.n_boot)
    M, metrics, G = test_res.M, test_res.metrics, truth.chosen
    golden_rep = truth.extra["golden"]
    result = {
        "test_golden_layer": G,
        "test_golden_n": truth.n_used,
        "test_golden_gap": golden_rep["gap"]["overall"],
        "test_eval_n": int(M.shape[0]),
        "metrics": metrics,
        "rows": rows,
        "test_golden_mean_by_layer": truth.variants["overall"],
        "provenance": provenance(),
        "settings": {k: v for k, v in vars(args).items() if k != "parts"},
    }
    err = out / "cma-error.txt"
    result["cma_error"] = err.read_text() if err.exists() else None
    paper = next((r for r in rows if r["method"].endswith("(paper)")), None)
    if paper is not None:
        result["goal"] = {
            "lga_within_one_layer": paper["distance_to_test_golden"] <= 1,
            "lga_speedup_vs_brute": paper["speedup_vs_brute"],
            "lga_50x_faster": bool(paper["speedup_vs_brute"] and paper["speedup_vs_brute"] >= 50),
        }
    write_json(out / "report.json", result)
    (out / "report.md").write_text(_markdown(result))
    return result


def _markdown(r: dict) -> str:
    g = r["test_golden_gap"]
    lines = [
        f"# Locating the layer: {r['settings']['model']}",
        "",
        f"Ground truth: the test split's own brute-force golden layer (R-ROME at every layer, "
        f"{r['test_golden_n']} test facts, overall metric) = **layer {r['test_golden_layer']}**; "
        f"sample-wise optimum beats it by {g['gap']:.3f} [{g['lo']:.3f}, {g['hi']:.3f}] (Wilcoxon p "
        f"{g['p_value']:.3g}).",
        f"Test metrics: R-ROME, each of {r['test_eval_n']} test facts edited alone at the chosen layer "
        "(knowedit suite; mean [95% bootstrap CI]).",
        "",
        "| method | layer | dist. | overall | " + " | ".join(r["metrics"]) + " | vs golden | wall s | speedup | note |",
        "|---" * (8 + len(r["metrics"])) + "|",
    ]
    for row in r["rows"]:
        cell = lambda d: f"{d['mean']:.3f} [{d['lo']:.3f}, {d['hi']:.3f}]"  # noqa: E731
        vs = row["vs_golden"]
        sp = f"{row['speedup_vs_brute']:.1f}x" if row["speedup_vs_brute"] else "-"
        lines.append(
            f"| {row['method']} | {row['layer']} | {row['distance_to_test_golden']} | {cell(row['overall'])} | "
            + " | ".join(cell(row[m]) for m in r["metrics"])
            + f" | {vs['diff']:+.3f} [{vs['lo']:+.3f}, {vs['hi']:+.3f}] | {row['wall_time']:.1f} | {sp} | "
            f"{row['note']} |"
        )
    if r.get("cma_error"):
        lines += ["", f"CMA chose no layer: {r['cma_error']}"]
    if "goal" in r:
        goal = r["goal"]
        lines += [
            "",
            f"Goal: LGA (paper variant) within one layer of the test golden layer: "
            f"{'yes' if goal['lga_within_one_layer'] else 'NO'}; at least 50x faster than brute force: "
            f"{'yes' if goal['lga_50x_faster'] else 'NO'} "
            f"({goal['lga_speedup_vs_brute']:.1f}x)"
            if goal["lga_speedup_vs_brute"]
            else "",
        ]
    p = r["provenance"]
    lines += ["", f"Device: {p['device']}, torch {p['torch']}, commit {p['commit']}, load average {p['load_average']}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--offset", type=int, default=0, help="skip the first records of --data")
    ap.add_argument("--seed", type=int, default=0, help="proxy / test split")
    ap.add_argument("--skip-invalid", action="store_true", help="keep the valid records of a file with bad ones")
    ap.add_argument("--proxy-n", type=int, default=50)
    ap.add_argument("--brute-proxy-n", type=int, default=20)
    ap.add_argument("--test-n", type=int, default=100)
    ap.add_argument("--test-brute-n", type=int, default=30)
    ap.add_argument(
        "--layers", type=lambda s: [int(x) for x in s.split(",")], default=None, help="candidate layers (default: all)"
    )
    ap.add_argument("--thetas", type=lambda s: s.split(","), default=["down"], help="LGA theta options to run")
    ap.add_argument("--batch-size", type=int, default=16, help="LGA requests per pass (CPU: larger is faster)")
    ap.add_argument("--cma-samples", type=int, default=10)
    ap.add_argument(
        "--cma-answer",
        default="data",
        choices=("data", "greedy"),
        help="CMA traces the ground truth's first token (skipping facts the model gets wrong) or "
        "the model's own top token",
    )
    ap.add_argument("--identity-c", action="store_true", help="R-ROME with C = I (no statistics)")
    ap.add_argument("--v-steps", type=int, default=None, help="R-ROME v* steps (default: the preset's)")
    ap.add_argument(
        "--templates",
        type=json.loads,
        default=None,
        help="R-ROME context templates [[length, count], ...] (default: the preset's)",
    )
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--parts", type=lambda s: s.split(","), default=list(PARTS))
    ap.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (6 proxy / 2 brute / 4 test / 2 test-brute facts, 4 layers, C = I, 3 v* steps)",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.proxy_n, args.brute_proxy_n, args.test_n, args.test_brute_n = 6, 2, 4, 2
        args.identity_c, args.v_steps, args.templates, args.cma_samples, args.n_boot = True, 3, [[3, 2]], 3, 200
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown part(s) {unknown}; known: {', '.join(PARTS)}")
    if args.brute_proxy_n > args.proxy_n or args.test_brute_n > args.test_n:
        raise SystemExit("--brute-proxy-n / --test-brute-n cannot exceed --proxy-n / --test-n")
    out = Path(
        args.out
        or Path(__file__).resolve().parent
        / "results"
        / "locate_compare"
        / (args.model + ("-quick" if args.quick else ""))
    )
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    model, tok = load_model(args.model)
    if args.quick and args.layers is None:
        L = get_adapter(model).n_layers
        args.layers = sorted({0, L // 3, (2 * L) // 3, L - 1})
    layers = args.layers or list(range(get_adapter(model).n_layers))
    print(f"{args.model} loaded in {time.perf_counter() - t0:.1f} s; results in {out}", flush=True)
    proxy, test = _splits(args, out)

    if "lga" in args.parts:
        run_lga(model, tok, proxy, layers, out, args.thetas, args.batch_size)
    if "cma" in args.parts:
        run_cma(model, tok, proxy, layers, out, CMAConfig(samples=args.cma_samples, answer=args.cma_answer))
    if "brute-proxy" in args.parts:
        _, s = run_brute(model, tok, proxy[: args.brute_proxy_n], layers, _editor(args), out / "brute-proxy",
                         out / "brute-proxy.json", n_boot=args.n_boot)
        print(f"brute force (proxy): layer {s.chosen} in {s.wall_time:.1f} s", flush=True)
    truth = None
    if "brute-test" in args.parts or "test-eval" in args.parts or "report" in args.parts:
        # the test pairs share one directory: test-eval reuses the brute-test pairs of its layers
        truth_path = out / "brute-test.json"
        if "brute-test" in args.parts or not truth_path.exists():
            run_brute(model, tok, test[: args.test_brute_n], layers, _editor(args), out / "test-pairs", truth_path,
                      n_boot=args.n_boot)
        truth = LayerScores.from_json(truth_path)
        print(f"test golden layer: {truth.chosen} ({truth.n_used} test facts)", flush=True)
    if "test-eval" in args.parts or "report" in args.parts:
        methods = chosen_layers(out, args.thetas)
        eval_layers = sorted({m["layer"] for m in methods.values()} | {truth.chosen})
        test_res = brute_force(
            model, tok, test[: args.test_n], eval_layers, _editor(args), out=out / "test-pairs", progress=True
        )
        if "report" in args.parts:
            r = report(args, out, test_res, truth, methods)
            print((out / "report.md").read_text())
            print(
                json.dumps(
                    {
                        "bench": "locate_compare",
                        "out": str(out),
                        "test_golden_layer": r["test_golden_layer"],
                        "chosen": {row["method"]: row["layer"] for row in r["rows"]},
                        **r.get("goal", {}),
                    }
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
