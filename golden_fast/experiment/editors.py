"""Each editor's test metrics at each chosen layer.

- ROME / R-ROME: every test fact edited alone at the layer, evaluated while applied, reverted
  (`Editor.edit_each`, v* batched over `group_size` facts); one JSONL row per fact, so an
  interrupted run resumes at the next fact.
- MEMIT / EMMET: all test facts as one batch at that single layer, evaluated, reverted; one JSON
  file per (editor, layer).

Locality is measured against the unedited model's predictions (`pre`, one report for the whole
evaluation pool). Files: <folder>/<editor>-L<layer>.jsonl or .json, and meta.json (the settings; a
folder made with other settings is refused).

Portability and fluency (`EXTRA_METRICS`) are wanted only for the facts the tables judge (`extra_keys`):
portability comes with the knowedit suite wherever a fact carries probes; fluency samples a continuation
of the fact's prompt (`evaluate(fluency=True)`), and the unedited model's fluency on the same facts is
kept in <folder>/fluency-pre.json as the reference. A ROME-style row that lacks a wanted metric is
edited and judged again (its new row replaces the old one); a batch result is kept as it is.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from golden_fast import distributed
from golden_fast.edit import Editor
from golden_fast.edit.editor import SharedOverrides
from golden_fast.edit.registry import get_editor
from golden_fast.evaluate import EvalReport, evaluate, fluency_scores
from golden_fast.experiment.memory import measure_peak
from golden_fast.fileio import append_jsonl, check_meta, read_json, read_jsonl, write_json
from golden_fast.locate.brute_force import request_key

__all__ = ["EXTRA_METRICS", "EditorLayerResult", "editor_matrix", "pre_fluency", "run_editors"]

#: reported beside "overall", never inside it: the editors' "overall" stays the golden layer's
EXTRA_METRICS = ("portability", "fluency")


@dataclasses.dataclass
class EditorLayerResult:
    """One editor at one layer: per-fact metrics (in the order of the facts given), time, memory."""

    method: str
    layer: int
    keys: list[str]
    metrics: list[dict[str, float]]
    seconds: float
    peak: dict[str, Any] | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)


def _path(folder: Path, method: str, layer: int) -> Path:
    return folder / f"{method}-L{layer:02d}.{'jsonl' if _single_editor(method) else 'json'}"


def _single_editor(method: str) -> bool:
    """Single editors (ROME-style) are judged fact by fact, each edit alone; the others as a batch."""
    return get_editor(method).single


def _lacks(metrics: Mapping[str, Any], req: Any, fluency: bool) -> bool:
    """Whether a judged fact's row lacks portability (the fact has probes) or fluency (asked for)."""
    return (fluency and "fluency" not in metrics) or (bool(req.portability) and "portability" not in metrics)


def _single(model, tok, facts, keys, pre, suites, method, layer, hp, moments, group_size, path: Path,
            progress: bool, extra: set[str], fluency: bool) -> EditorLayerResult:
    rows = {r["key"]: r for r in read_jsonl(path)}  # a later row of a fact replaces an earlier one
    todo = [i for i, k in enumerate(keys)
            if k not in rows or (k in extra and _lacks(rows[k]["metrics"], facts[i], fluency))]
    if todo:
        ed = Editor(model, tok, method, layers=[layer], hparams=SharedOverrides(hp), stats=moments, progress=False)

        def record(j: int, req: Any, res: Any) -> None:
            # called while this fact's edit is applied; edit_each reverts it afterwards
            post = evaluate(model, tok, [req], pre=pre, suites=suites, fluency=fluency and keys[todo[j]] in extra)
            # a v* from the study's cache (the other ROME variant's, brute force's) counts at its cost
            reused_s = sum(float(t.extras.get("targets_reused_seconds", 0.0)) for t in res.traces)
            row = {"key": keys[todo[j]], "ref": req.ref, "seconds": res.wall_time + reused_s,
                   "targets_reused_seconds": reused_s,
                   "update_norm": res.traces[0].update_norm if res.traces else None,
                   "warnings": sorted({w for t in res.traces for w in getattr(t, "warnings", []) or []}),
                   "metrics": post.by_request().get(0, {})}
            if distributed.is_main():  # the ranks edit and judge the same fact together: one row
                append_jsonl(path, row)
            rows[row["key"]] = row

        if progress:
            print(f"  {method} at layer {layer}: {len(todo)} fact(s) to edit one by one", flush=True)
        ed.edit_each([facts[i] for i in todo], record, group_size=group_size, progress=progress)
    return EditorLayerResult(
        method, layer, list(keys), [rows[k]["metrics"] for k in keys], float(sum(rows[k]["seconds"] for k in keys)),
        warnings=sorted({w for k in keys for w in rows[k].get("warnings", [])}),
    )


def _batch(model, tok, facts, keys, pre, suites, method, layer, hp, moments, path: Path,
           progress: bool, extra: set[str], fluency: bool) -> EditorLayerResult:
    done = read_json(path)
    if done is None or done.get("keys") != list(keys):
        ed = Editor(model, tok, method, layers=[layer], hparams=SharedOverrides(hp), stats=moments, progress=progress)
        t0 = time.perf_counter()
        with measure_peak() as mem:
            res = ed.edit(list(facts), mode="batch")
        reused_s = float(res.traces[0].extras.get("targets_reused_seconds", 0.0)) if res.traces else 0.0
        seconds = time.perf_counter() - t0 + reused_s  # cached targets count at their cost
        try:
            post = evaluate(model, tok, facts, pre=pre, suites=suites)
            sampled = [i for i, k in enumerate(keys) if k in extra] if fluency else []
            flu = fluency_scores(model, tok, [facts[i] for i in sampled]) if sampled else {}
        finally:
            res.revert()
        by = post.by_request()
        for j, i in enumerate(sampled):
            if j in flu:
                by.setdefault(i, {})["fluency"] = flu[j]
        done = {"method": method, "layer": layer, "keys": list(keys), "seconds": seconds, "peak": mem.to_dict(),
                "warnings": sorted({w for t in res.traces for w in getattr(t, "warnings", []) or []}),
                "metrics": [by.get(i, {}) for i in range(len(facts))]}
        if distributed.is_main():
            write_json(path, done)
        distributed.barrier()
    return EditorLayerResult(method, layer, done["keys"], done["metrics"], float(done["seconds"]), done.get("peak"),
                             done.get("warnings", []))


def run_editors(
    model: nn.Module,
    tok: Any,
    facts: Sequence[Any],
    layers: Sequence[int],
    methods: Sequence[str],
    folder: str | Path,
    pre: EvalReport,
    *,
    hparams: Mapping[str, Any] | None = None,
    moments: Any = None,
    suites: Sequence[str] = ("knowedit",),
    group_size: int = 16,
    meta: Mapping[str, Any] | None = None,
    progress: bool = True,
    on_result: Callable[[EditorLayerResult], None] | None = None,
    extra_keys: Sequence[str] | None = None,
    fluency: bool = False,
) -> dict[tuple[str, int], EditorLayerResult]:
    """Every (editor, layer) on `facts`, skipping what `folder` already holds.

    Args:
        extra_keys: the facts (request keys) whose portability and, with `fluency`, fluency are wanted
            (None: every fact); see the module docstring.
        fluency: sample a continuation per wanted fact and report its n-gram entropy.
        hparams: overrides every editor applies on top of its preset.
        moments: the second moments (a `Moments`) shared by every editor (None: each its own).
        meta: settings recorded in folder/meta.json (with the facts' keys and suites); a folder made
            with other settings is refused.
    """
    folder = Path(folder)
    keys = [request_key(r) for r in facts]
    check_meta(folder, dict(meta or {}) | {"hparams": dict(hparams or {}), "suites": list(suites), "facts": keys},
               "editors-at-layers results", adopt=("editor_hparams",))
    extra = set(keys if extra_keys is None else extra_keys)
    if fluency:
        pre_fluency(model, tok, [r for r, k in zip(facts, keys) if k in extra], folder)
    out: dict[tuple[str, int], EditorLayerResult] = {}
    for method in methods:
        for layer in layers:
            path = _path(folder, method, int(layer))
            if _single_editor(method):
                r = _single(model, tok, facts, keys, pre, suites, method, int(layer), hparams or {}, moments,
                            group_size, path, progress, extra, fluency)
            else:
                r = _batch(model, tok, facts, keys, pre, suites, method, int(layer), hparams or {}, moments,
                           path, progress, extra, fluency)
            out[(method, int(layer))] = r
            if on_result is not None:
                on_result(r)
    return out


def pre_fluency(model: nn.Module, tok: Any, facts: Sequence[Any], folder: str | Path) -> dict[str, float]:
    """The unedited model's fluency per fact (request key), kept in folder/fluency-pre.json; only the
    facts missing there are sampled (call before any edit is applied)."""
    path = Path(folder) / "fluency-pre.json"
    stored: dict[str, float] = read_json(path) or {}
    todo = [r for r in facts if request_key(r) not in stored]
    if todo:
        for i, value in fluency_scores(model, tok, todo).items():
            stored[request_key(todo[i])] = float(value)
        if distributed.is_main():
            write_json(path, stored)
    return {request_key(r): stored[request_key(r)] for r in facts if request_key(r) in stored}


def editor_matrix(results: Mapping[tuple[str, int], EditorLayerResult], method: str,
                  layers: Sequence[int]) -> tuple[np.ndarray, list[str]]:
    """(M[fact, layer, metric], metric names) of one editor over `layers`; NaN where a metric is absent."""
    per = [results[(method, int(layer))] for layer in layers]
    metrics: list[str] = []
    for r in per:
        for row in r.metrics:
            metrics += [m for m in row if m not in metrics]
    n = len(per[0].metrics)
    M = np.full((n, len(per), len(metrics)), np.nan)
    for j, r in enumerate(per):
        for i, row in enumerate(r.metrics):
            for k, m in enumerate(metrics):
                if row.get(m) is not None:
                    M[i, j, k] = float(row[m])
    return M, metrics
