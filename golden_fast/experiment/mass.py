"""The mass-editing curve: quality, time and peak memory as the number of edited facts grows.

- batch (MEMIT, EMMET): for each size n, the first n facts of the pool edited as one batch at the
  method's layers, evaluated (all n), reverted. One JSON file per (method, n): a resumed run
  computes only the missing points.
- sequential (ROME, R-ROME): up to N facts edited one after another at one layer; at every
  checkpoint (every k edits and at N) the edits of the segment are saved as a journal and every fact
  edited so far is evaluated. A resumed run replays the saved journals (bitwise the same weights)
  and continues after the last checkpoint; the model is restored to its unedited layer afterwards,
  whether the part finishes or not.

Time is the editing alone (evaluation timed apart); peak memory is the process's resident
high-water mark during the editing (`memory.measure_peak`), absolute and above what it held before.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from golden_fast import distributed
from golden_fast.edit import EditJournal, Editor
from golden_fast.edit.editor import SharedOverrides
from golden_fast.evaluate import EvalReport, evaluate
from golden_fast.experiment.memory import measure_peak
from golden_fast.fileio import check_meta, read_json, write_json
from golden_fast.models import get_adapter

__all__ = ["run_batch_curve", "run_sequential_curve", "summary_of"]


def summary_of(report: EvalReport) -> dict[str, dict[str, float]]:
    """{metric: {mean, lo, hi, n}} of an EvalReport."""
    return {m: {"mean": s.mean, "lo": s.lo, "hi": s.hi, "n": s.n} for m, s in report.summary().items()}


def run_batch_curve(
    model: nn.Module,
    tok: Any,
    pool: Sequence[Any],
    methods: Sequence[str],
    sizes: Sequence[int],
    folder: str | Path,
    pre: EvalReport,
    *,
    layers: Sequence[int] | None = None,
    hparams: Mapping[str, Any] | None = None,
    moments: Any = None,
    suites: Sequence[str] = ("knowedit",),
    meta: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """method -> points (ascending n) of the batch curve; each point computed once and kept on disk.

    layers: the edited layers (None: each method's preset).
    """
    folder = Path(folder)
    check_meta(folder, dict(meta or {}) | {"hparams": dict(hparams or {}), "suites": list(suites),
                                           "layers": None if layers is None else list(layers)},
               "batch mass-editing curve", adopt=("editor_hparams",))
    curves: dict[str, list[dict[str, Any]]] = {}
    for method in methods:
        points = []
        for n in sorted(sizes):
            path = folder / f"batch-{method}-n{n:05d}.json"
            point = read_json(path)
            if point is None:
                reqs = list(pool[:n])
                over = SharedOverrides(dict(hparams or {}) | ({"layers": list(layers)} if layers is not None else {}))
                try:
                    ed = Editor(model, tok, method, hparams=over, stats=moments, progress=progress)
                except ValueError as exc:  # a preset written for another model: say which setting to give
                    raise ValueError(f"mass editing with {method}: {exc}; give its layers (mass_layers / "
                                     "--mass-layers)") from None
                if progress:
                    print(f"  {method}: batch of {n} fact(s) at layers {ed.layers}", flush=True)
                t0 = time.perf_counter()
                with measure_peak() as mem:
                    res = ed.edit(reqs, mode="batch")
                edit_s = time.perf_counter() - t0
                try:
                    t1 = time.perf_counter()
                    post = evaluate(model, tok, reqs, pre=pre, suites=suites)
                    eval_s = time.perf_counter() - t1
                finally:
                    res.revert()
                # targets served by the study's cache (a smaller batch's, the other method's) count at
                # what they cost when optimised, so each point is the time of editing its batch alone
                reused_s = float(res.traces[0].extras.get("targets_reused_seconds", 0.0)) if res.traces else 0.0
                point = {"method": method, "n": n, "layers": list(ed.layers), "edit_seconds": edit_s + reused_s,
                         "targets_reused_seconds": reused_s,
                         "eval_seconds": eval_s, "peak": mem.to_dict(), "summary": summary_of(post),
                         "warnings": sorted({w for t in res.traces for w in getattr(t, "warnings", []) or []})}
                if distributed.is_main():  # every rank made the same shared edit: one writes it
                    write_json(path, point)
                distributed.barrier()
            points.append(point)
        curves[method] = points
    return curves


def _journals(folder: Path) -> dict[int, Path]:
    return {int(p.name.split("-")[1]): p for p in folder.glob("journal-*") if p.is_dir()}


def run_sequential_curve(
    model: nn.Module,
    tok: Any,
    pool: Sequence[Any],
    method: str,
    layer: int,
    checkpoints: Sequence[int],
    folder: str | Path,
    pre: EvalReport,
    *,
    hparams: Mapping[str, Any] | None = None,
    moments: Any = None,
    suites: Sequence[str] = ("knowedit",),
    meta: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """The sequential curve of `method` at `layer`: one point per checkpoint (edits so far)."""
    folder = Path(folder)
    checkpoints = sorted(int(c) for c in checkpoints)
    if checkpoints[-1] > len(pool):
        raise ValueError(f"sequential {method}: {checkpoints[-1]} edits asked, the pool has {len(pool)} facts")
    every = checkpoints[0]
    check_meta(folder, dict(meta or {}) | {"method": method, "layer": int(layer), "every": every,
                                           "hparams": dict(hparams or {}), "suites": list(suites)},
               f"sequential {method} curve", adopt=("editor_hparams",))
    curve: list[dict[str, Any]] = read_json(folder / "curve.json") or []
    done = curve[-1]["edits"] if curve else 0
    if done >= checkpoints[-1] and all(c in {p["edits"] for p in curve} for c in checkpoints):
        return [p for p in curve if p["edits"] in set(checkpoints)]
    journals = _journals(folder)
    for stop, path in journals.items():
        if stop > done:  # saved, but the process stopped before its point was recorded: redo that segment
            shutil.rmtree(path)
    kept = sorted(s for s in journals if s <= done)
    if kept != [p["edits"] for p in curve]:
        raise ValueError(
            f"{folder}: the saved journals ({kept}) do not match the recorded checkpoints "
            f"({[p['edits'] for p in curve]}); delete the folder to recompute this curve"
        )
    adapter = get_adapter(model)
    W0 = adapter.down_weight(layer).detach().clone()
    bar = None
    try:
        ed = Editor(model, tok, method, layers=[layer], hparams=SharedOverrides(hparams or {}), stats=moments,
                    progress=False, revert_each=False)
        ed.resume(EditJournal.load(journals[stop]) for stop in kept)  # C taken before the replay
        todo = [c for c in checkpoints if c > done]
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=checkpoints[-1], initial=done, desc=f"sequential {method} @ layer {layer}", unit="edit")
        cum = curve[-1]["cum_edit_seconds"] if curve else 0.0
        for stop in todo:
            segment = list(pool[done:stop])
            t0 = time.perf_counter()
            with measure_peak() as mem:
                res = ed.edit(segment, mode="sequential")
            edit_s = time.perf_counter() - t0
            if distributed.is_main():
                res.journal.save(folder / f"journal-{stop:05d}", overwrite=True)
            t1 = time.perf_counter()
            post = evaluate(model, tok, list(pool[:stop]), pre=pre, suites=suites)
            eval_s = time.perf_counter() - t1
            cum += edit_s
            norm = float((adapter.down_weight(layer).detach() - W0).double().norm())
            curve.append({"method": method, "layer": int(layer), "edits": stop, "edit_seconds": edit_s,
                          "cum_edit_seconds": cum, "eval_seconds": eval_s, "peak": mem.to_dict(),
                          "update_norm": norm, "summary": summary_of(post),
                          "warnings": sorted({w for t in res.traces for w in getattr(t, "warnings", []) or []})})
            if distributed.is_main():
                write_json(folder / "curve.json", curve)  # the point is recorded: its journal is now kept
            distributed.barrier()
            if bar is not None:
                bar.update(stop - done)
                rw = curve[-1]["summary"].get("rewrite_acc", {}).get("mean")
                bar.set_postfix_str(f"rewrite {rw:.2f}" if rw is not None else "")
            done = stop
    finally:
        if bar is not None:
            bar.close()
        with torch.no_grad():  # back to the unedited layer, bitwise, whatever happened
            adapter.write_down_weight(layer, W0)
    return [p for p in curve if p["edits"] in set(checkpoints)]
