"""How large the accumulated update of a lifelong run grows, from its saved journals.

    python bench/lifelong_norms.py                     # smollm2-135m, CounterFact: every lifelong-* run
    python bench/lifelong_norms.py --table             # print the saved rows as markdown

A lifelong run (`bench/mass_edit.py lifelong`) saves a journal after every chunk: the rank-one
factors U Vᵀ of each update. Their running sum is the accumulated change ΔW of each edited
down-projection. Perplexity after many edits tracks how far the weights have moved, so beside the
curve's metrics this reports, every --step edits and per edited layer:

- `rel_fro`: ||ΔW||_F / ||W||_F (W the unedited weight);
- `rel_spec`: ||ΔW||_2 / ||W||_2, the largest stretch the update adds against the weight's own;
- `stable_rank`: ||ΔW||_F² / ||ΔW||_2², how many directions the update spreads over.

The table shows the layer that moved most (largest rel_fro).

The sums are float64 over the journals' factors, so the figures are those of the updates as
recorded (the weights themselves carry one rounding per applied entry). Results:
bench/results/mass/<model>-<data>/lifelong-norms.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common  # noqa: E402
import mass_edit  # noqa: E402

from golden_fast.edit import EditJournal  # noqa: E402
from golden_fast.fileio import read_json  # noqa: E402
from golden_fast.models import get_adapter, load_model  # noqa: E402


def weight_norms(W: torch.Tensor) -> tuple[float, float]:
    """(||W||_F, ||W||_2) in float64."""
    W = W.to(torch.float64)
    return float(torch.linalg.matrix_norm(W)), float(torch.linalg.matrix_norm(W, ord=2))


def update_norms(dW: torch.Tensor, W: torch.Tensor | tuple[float, float]) -> dict[str, float]:
    """rel_fro, rel_spec and stable_rank of the update dW against the weight W (both (d, m)), or
    against W's `weight_norms` computed once."""
    w_fro, w_spec = weight_norms(W) if isinstance(W, torch.Tensor) else W
    dW = dW.to(torch.float64)
    fro, spec = float(torch.linalg.matrix_norm(dW)), float(torch.linalg.matrix_norm(dW, ord=2))
    return {"rel_fro": fro / w_fro, "rel_spec": spec / w_spec,
            "stable_rank": fro**2 / spec**2 if spec > 0 else 0.0}


def journal_points(folder: Path) -> list[tuple[int, Path]]:
    """(facts edited, journal folder) of each saved chunk, ascending."""
    return [(n, folder / f"journal-{n:05d}") for n in mass_edit._saved_chunks(folder)]


def run_folder(folder: Path, weights: dict[int, torch.Tensor], step: int) -> list[dict[str, Any]]:
    """The norms of the accumulated update after every `step` facts (and the run's curve points)."""
    curve = {p["edits"]: p for p in (read_json(folder / "curve.json") or [])}
    acc: dict[int, torch.Tensor] = {}
    w_norms: dict[int, tuple[float, float]] = {}  # each edited weight's norms, once (an SVD each)
    rows = []
    points = journal_points(folder)
    for edits, path in tqdm(points, desc=folder.name, unit="journal"):
        for e in EditJournal.load(path).entries:
            W = weights[e.layer]
            term = e.u.to(torch.float64) @ e.v.to(torch.float64).T
            if term.shape != W.shape:
                term = term.T
            if e.layer not in acc:
                acc[e.layer] = torch.zeros_like(W, dtype=torch.float64)
                w_norms[e.layer] = weight_norms(W)
            acc[e.layer] += term
        if edits % step and edits not in curve and edits != points[-1][0]:
            continue
        row: dict[str, Any] = {"edits": edits,
                               "layers": {str(l): update_norms(acc[l], w_norms[l]) for l in sorted(acc)}}
        if edits in curve:
            p = curve[edits]
            row["perplexity_ratio"] = p["perplexity_after"] / p["perplexity_before"]
            row["summary"] = {k: v["mean"] for k, v in p["summary"].items()}
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    folders = sorted(p for p in args.runs.glob("lifelong-*") if p.is_dir() and journal_points(p))
    if not folders:
        raise SystemExit(f"{args.runs}: no lifelong run with saved journals")
    model, _ = load_model(args.model)
    adapter = get_adapter(model)
    weights = {l: adapter.down_weight(l).detach().to(torch.float64).clone() for l in range(adapter.n_layers)}
    del model
    return {"model": args.model, "runs": {f.name: run_folder(f, weights, args.step) for f in folders},
            "provenance": _common.provenance()}


def markdown_table(res: dict[str, Any]) -> str:
    lines = ["| run | edits | rel. ‖ΔW‖_F | rel. ‖ΔW‖_2 | stable rank | rewrite | locality | ppl ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rows in (res or {}).get("runs", {}).items():
        for r in rows:
            top = max(r["layers"].values(), key=lambda x: x["rel_fro"])  # the layer that moved most
            s = r.get("summary", {})
            lines.append(
                f"| {name.removeprefix('lifelong-')} | {r['edits']:,} | {top['rel_fro']:.3f} | "
                f"{top['rel_spec']:.3f} | {top['stable_rank']:.1f} | "
                + (f"{s['rewrite_acc']:.3f} | {s['locality']:.3f} | {r['perplexity_ratio']:.2f} |"
                   if s else "| | |"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _common.add_fact_args(p)
    p.add_argument("--step", type=int, default=100, help="report every this many facts (and at the curve points)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--table", action="store_true", help="print the saved rows as markdown and stop")
    args = p.parse_args(argv)
    args.runs = _common.mass_results_dir(args.model, args.data)
    return _common.run_or_table(args.runs / "lifelong-norms.json", args.table, lambda: run(args), markdown_table,
                                args.threads)


if __name__ == "__main__":
    raise SystemExit(main())
