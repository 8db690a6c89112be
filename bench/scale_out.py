"""1 process against N under torchrun (gloo, one thread each): statistics, LGA, evaluation, brute force.

    python bench/scale_out.py                       # smollm2-135m, 1 and 2 processes, every stage
    python bench/scale_out.py --stages lga,eval --nprocs 1,2

For each stage and process count, `torchrun --standalone --nproc-per-node N bench/scale_out.py
--worker ...` loads the model on every rank, waits for all ranks, times the stage alone (between two
barriers: loading is not counted) and rank 0 writes the time and a digest of the result. The
throughput ratio is t(1 process) / t(N processes), measured in the same run; the result of every
process count must be the one of a single process (chosen layer, metrics, sums within float32
reduction order), or the row says it differs. Rows are appended to
bench/results/scale_out/<model>.jsonl. Run it on a quiet machine: N processes need N free cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

STAGES = ("stats", "lga", "eval", "brute")


# ---- the worker (one rank) ----------------------------------------------------------------------


def _requests(args: argparse.Namespace, n: int) -> list:
    from golden_fast.data import validate

    reqs, _ = validate(args.data)
    return list(reqs[:n])


def _stage(args: argparse.Namespace, model, tok, scratch: Path) -> tuple[Any, dict[str, Any]]:
    """Run one stage; (a summary comparable across process counts, the work done)."""
    import torch

    if args.stage == "stats":
        from golden_fast.stats import StatsConfig, second_moments

        layers = list(range(model.config.num_hidden_layers))
        cfg = StatsConfig(corpus=args.corpus, n_samples=args.stats_n, cache=False, checkpoint_every=0)
        got = second_moments(model, tok, layers, cfg, progress=False)
        return ({"count": [got[layer].count for layer in layers],
                 "trace": [float(torch.trace(got[layer].mean(torch.float64))) for layer in layers]},
                {"texts": args.stats_n, "layers": len(layers)})
    if args.stage == "lga":
        from golden_fast.locate.lga import lga

        res = lga(model, tok, _requests(args, args.lga_n))
        return {"chosen": res.chosen, "scores": [float(x) for x in res.scores]}, {"facts": args.lga_n}
    if args.stage == "eval":
        from golden_fast.evaluate import evaluate

        rep = evaluate(model, tok, _requests(args, args.eval_n), suites=("knowedit",))
        return {"summary": {k: float(v.mean) for k, v in rep.summary().items()}}, {"records": args.eval_n}
    if args.stage == "brute":
        from golden_fast.locate.brute_force import brute_force

        layers = list(range(args.brute_layers[0], args.brute_layers[1] + 1))
        editor = {"method": "r-rome", "hparams": {"v_num_grad_steps": args.brute_steps}}
        res = brute_force(model, tok, _requests(args, args.brute_n), layers, editor, out=scratch / "brute",
                          progress=False)
        return ({"metrics": res.metrics,
                 "M": [[[None if v != v else float(v) for v in cell] for cell in row] for row in res.M.tolist()]},
                {"edits": args.brute_n * len(layers)})
    raise SystemExit(f"unknown stage {args.stage!r}")


def worker(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)
    from golden_fast import distributed as D
    from golden_fast.models import load_model

    D.init("gloo")
    model, tok = load_model(args.model)
    scratch = Path(args.scratch)
    D.barrier()
    t0 = time.perf_counter()
    summary, work = _stage(args, model, tok, scratch)
    D.barrier()
    seconds = time.perf_counter() - t0
    if D.is_main():
        Path(args.result).write_text(json.dumps({"seconds": seconds, "summary": summary, "work": work,
                                                 "world": D.world_size()}))
    return 0


# ---- the driver ----------------------------------------------------------------------------------


def _close(a: Any, b: Any, rtol: float) -> bool:
    """Equal results; a vector of floats within rtol of its largest entry (float32 sums in another
    order, other batch shapes), a lone float within rtol of itself."""
    floats = isinstance(a, list) and isinstance(b, list) and a and all(isinstance(x, float) for x in a + b)
    if floats and len(a) == len(b):
        scale = max(max(abs(x) for x in a), 1e-12)
        return max(abs(x - y) for x, y in zip(a, b)) <= rtol * scale
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rtol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, rtol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-12)
    return a == b


def _launch(args: argparse.Namespace, stage: str, n: int, scratch: Path) -> dict[str, Any]:
    result = scratch / f"{stage}-{n}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
           str(Path(__file__).resolve()), "--worker", "--stage", stage, "--result", str(result),
           "--scratch", str(scratch / f"{stage}-{n}")]
    cmd += _pass_through(args)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    out = json.loads(result.read_text())
    out["wall_with_startup"] = time.perf_counter() - t0
    return out


def _pass_through(args: argparse.Namespace) -> list[str]:
    return ["--model", args.model, "--data", args.data, "--corpus", args.corpus, "--stats-n", str(args.stats_n),
            "--lga-n", str(args.lga_n), "--eval-n", str(args.eval_n), "--brute-n", str(args.brute_n),
            "--brute-layers", f"{args.brute_layers[0]}-{args.brute_layers[1]}", "--brute-steps",
            str(args.brute_steps)]


def driver(args: argparse.Namespace) -> int:
    import _common

    from golden_fast.fileio import append_jsonl

    prov = _common.provenance("cpu")
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    out = _common.RESULTS / "scale_out" / f"{args.model}.jsonl"
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for stage in args.stages:
            base = None
            for n in args.nprocs:
                got = _launch(args, stage, n, Path(d))
                base = base or got
                same = _close(base["summary"], got["summary"], args.rtol)
                row = {"bench": "scale_out", "run": run_id, "stage": stage, "processes": n,
                       "seconds": round(got["seconds"], 3),
                       "speedup_vs_1": round(base["seconds"] / got["seconds"], 3), "work": got["work"],
                       "same_result_as_1": same, "wall_with_startup": round(got["wall_with_startup"], 2),
                       "threads_per_process": 1, **prov, "load_average": round(os.getloadavg()[0], 2)}
                rows.append(row)
                print(f"{stage:6s} {n} process(es): {got['seconds']:8.2f} s  x{row['speedup_vs_1']:.2f}  "
                      f"{'same result' if same else 'RESULT DIFFERS'}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    for row in rows:
        append_jsonl(out, row)
    print(f"rows appended to {out}")
    return 0


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table of one run: per stage, seconds per process count and the ratio to 1 process."""
    counts = sorted({r["processes"] for r in rows})
    head = "| stage | work | " + " | ".join(f"{n} process{'es' if n > 1 else ''}, s" for n in counts)
    head += " | " + " | ".join(f"{n} vs 1" for n in counts if n > 1) + " | same result |"
    lines = [head, "|---|---|" + "---:|" * (2 * len(counts) - 1) + "---|"]
    for stage in dict.fromkeys(r["stage"] for r in rows):
        by = {r["processes"]: r for r in rows if r["stage"] == stage}
        work = ", ".join(f"{v} {k}" for k, v in by[counts[0]]["work"].items())
        secs = " | ".join(f"{by[n]['seconds']:.1f}" for n in counts)
        ratios = " | ".join(f"{by[n]['speedup_vs_1']:.2f}x" for n in counts if n > 1)
        same = "yes" if all(by[n]["same_result_as_1"] for n in counts) else "NO"
        lines.append(f"| {stage} | {work} | {secs} | {ratios} | {same} |")
    r0 = rows[0]
    return "\n".join(lines) + f"\n\n{r0['device']}, commit {r0['commit']}, load average at the start " \
        f"{r0['load_average']:.2f}."


def last_run(path: Path) -> list[dict[str, Any]]:
    """The rows of the last run (its start time; rows written without one: its commit)."""
    from golden_fast.fileio import read_jsonl

    rows = list(read_jsonl(path))
    if not rows:
        raise SystemExit(f"{path}: no rows")
    key = "run" if "run" in rows[-1] else "commit"
    return [r for r in rows if r.get(key) == rows[-1][key]]


def parse_args(argv=None) -> argparse.Namespace:
    from golden_fast.data.location import data_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default=str((data_dir() or Path("data")) / "counterfact" / "counterfact-edit.json"))
    p.add_argument("--stages", type=lambda s: [w.strip() for w in s.split(",") if w.strip()], default=list(STAGES))
    p.add_argument("--nprocs", type=lambda s: [int(w) for w in s.split(",")], default=[1, 2])
    p.add_argument("--corpus", default="model-sampled")
    p.add_argument("--stats-n", type=int, default=96, help="statistics: texts (all layers, one pass)")
    p.add_argument("--lga-n", type=int, default=160, help="LGA: facts")
    p.add_argument("--eval-n", type=int, default=200, help="evaluation: records (knowedit suite)")
    p.add_argument("--brute-n", type=int, default=2, help="brute force: facts")
    p.add_argument("--brute-layers", type=lambda s: [int(w) for w in s.split("-")], default=[3, 10])
    p.add_argument("--brute-steps", type=int, default=10, help="brute force: R-ROME v* steps")
    p.add_argument("--rtol", type=float, default=1e-3,
                   help="results equal within this, relative to a vector's largest entry")
    p.add_argument("--table", action="store_true", help="print the last run's table as Markdown")
    p.add_argument("--write", action="store_true", help="with --table: fill the README's scale-out section")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    p.add_argument("--scratch", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = [s for s in args.stages if s not in STAGES]
    if unknown:
        p.error(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.table:
        import _common

        text = markdown(last_run(_common.RESULTS / "scale_out" / f"{args.model}.jsonl"))
        print(text)
        if args.write:
            _common.replace_section(HERE.parent / "README.md", "scale-out-table", text)
        return 0
    return worker(args) if args.worker else driver(args)


if __name__ == "__main__":
    sys.exit(main())
