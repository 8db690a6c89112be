"""Brute force: for each candidate layer and each proxy request, edit the request alone with
the chosen editor, evaluate, revert; the result is the tensor M[request, layer, metric], from which
golden_fast/locate/golden.py takes the golden layer G = argmax_l mean_i M(i, l) and the sample-wise
optima (FORMULAS.md, section "Brute force and the golden layer").

Resumable: with `out=DIR`, each (request, layer) result is appended to DIR/pairs.jsonl as soon as
it is measured (one JSON line, on disk before the next pair starts), and a later call with the
same settings skips the pairs already there, so a long run can finish in parts and runs over
different request or layer sets share their pairs. DIR/meta.json holds the settings (model
identity, method, hyperparameters but the layer, statistics, suites); once a result is there, a
call with other settings refuses the directory rather than mixing results.

Locality is measured against the unedited model's predictions, computed once per call (a batched
pass over the proxy requests, seconds).

Under torchrun the pairs still to do are split across ranks (`distributed.shard` over the list of
missing pairs, in request-then-layer order). Each rank appends to its own part file,
DIR/pairs.rank<r>-of-<w>.jsonl, so no two processes append to one file; reading merges
pairs.jsonl with every part file (a pair is kept once), so a rerun with any number of processes
skips every pair any rank finished. At the end, rank 0 folds the part files into pairs.jsonl
(written whole, then the parts removed), and every rank returns the same result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from golden_fast import distributed
from golden_fast.edit.config import hparams_record
from golden_fast.fileio import append_jsonl, atomic_write, atomic_write_json, check_meta, read_jsonl
from golden_fast.models import get_adapter

__all__ = ["BruteForceResult", "brute_force", "request_key"]

_PAIRS = "pairs.jsonl"
_PARTS = "pairs.rank*-of-*.jsonl"  # one per rank of a data-parallel run
_PRE = "pre_seconds.json"


def request_key(req: Any) -> str:
    """A stable key of a request for the results file: its case_id, else a hash of its content."""
    if getattr(req, "case_id", None) is not None:
        return f"case:{req.case_id}"
    blob = json.dumps(req.to_dict() | {"index": None}, sort_keys=True, default=str)
    return "sha:" + hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass
class BruteForceResult:
    """M[request, layer, metric] (NaN where a metric is absent for a request) and the run's details.

    seconds[i, j]: wall time of edit + evaluate + revert of request i at layer j (from the results
    file, so a resumed run reports the total compute, not just its last part).
    """

    M: np.ndarray
    layers: list[int]
    metrics: list[str]
    refs: list[str]
    keys: list[str]
    seconds: np.ndarray
    settings: dict[str, Any]
    pre_seconds: float

    @property
    def wall_time(self) -> float:
        """Compute time of the whole search: every pair, plus the pre-edit evaluation."""
        return float(self.seconds.sum() + self.pre_seconds)

    def golden(self, **kwargs: Any):
        """`golden_analysis` of M (golden layers, sample-wise optima, gaps)."""
        from golden_fast.locate.golden import golden_analysis

        return golden_analysis(self.M, self.layers, self.metrics, refs=self.refs, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "metrics": self.metrics,
            "refs": self.refs,
            "keys": self.keys,
            "M": [[[None if np.isnan(v) else float(v) for v in row] for row in mat] for mat in self.M],
            "seconds": self.seconds.tolist(),
            "settings": self.settings,
            "pre_seconds": self.pre_seconds,
        }


def _editor_spec(editor: Any) -> tuple[str, Any, Any]:
    """(method, hparams, stats) from None | a method name | a mapping of Editor arguments."""
    if editor is None:
        return "r-rome", None, None
    if isinstance(editor, str):
        return editor, None, None
    if isinstance(editor, Mapping):
        unknown = sorted(set(editor) - {"method", "hparams", "stats"})
        if unknown:
            raise ValueError(f"brute force: unknown editor key(s) {unknown}; known: method, hparams, stats")
        return editor.get("method", "r-rome"), editor.get("hparams"), editor.get("stats")
    raise TypeError(f"brute force: editor must be None, a method name or a mapping, got {type(editor).__name__}")


def _stats_fingerprint(stats: Any, hp: Any) -> str:
    if not getattr(hp, "mom2_adjustment", True):
        return "identity (mom2_adjustment off)"
    if stats is None and not hasattr(hp, "mom2_adjustment"):
        return "none given (custom method)"
    if stats is None:
        return f"statistics cache ({hp.mom2_dataset}, {hp.mom2_n_samples} samples, {hp.mom2_dtype})"
    if isinstance(stats, Mapping):
        return "given: " + ",".join(
            f"{k}:{hashlib.sha256(torch.as_tensor(v).double().numpy().tobytes()).hexdigest()[:12]}"
            for k, v in sorted(stats.items())
        )
    source = getattr(stats, "source", stats)
    return "identity" if source is None else f"given {type(stats).__name__}"


def _part_path(out: Path, rank: int, world: int) -> Path:
    return out / f"pairs.rank{rank}-of-{world}.jsonl"


def _read_pairs(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """The pairs of `path` and of the part files beside it (a pair found twice is kept once)."""
    # a torn last line (an interrupted write) is cut off, and that pair runs again
    done = {(row["key"], int(row["layer"])): row for row in read_jsonl(path)}
    for part in sorted(path.parent.glob(_PARTS)):
        for row in read_jsonl(part):
            done.setdefault((row["key"], int(row["layer"])), row)
    return done


def _merge_parts(path: Path) -> None:
    """Fold the part files into `path`: the merged file replaces it whole, then the parts go (a
    crash in between leaves pairs in both, which reading keeps once)."""
    parts = sorted(path.parent.glob(_PARTS))
    if not parts:
        return
    rows = _read_pairs(path).values()
    atomic_write(path, "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows), fsync=True)
    for part in parts:
        part.unlink()


def _open_results(out: Path, meta: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    check_meta(out, meta, "brute-force search")
    return _read_pairs(out / _PAIRS)


def _pre_seconds(out: Path | None, measured: float, evaluated: bool) -> float:
    """The pre-edit evaluation time, counted once per directory so a resumed run reports the same total."""
    if out is None:
        return measured
    pre_path = out / _PRE
    if pre_path.exists():
        return float(json.loads(pre_path.read_text())["seconds"])
    if evaluated:
        atomic_write_json(pre_path, {"seconds": measured})
    return measured


def brute_force(
    model: nn.Module,
    tok: Any,
    requests: Sequence[Any],
    layers: Sequence[int] | None = None,
    editor: Any = None,
    *,
    out: str | os.PathLike | None = None,
    suites: Sequence[str] = ("knowedit",),
    progress: bool = True,
    data_parallel: bool = True,
) -> BruteForceResult:
    """Edit each request alone at each candidate layer, evaluate, revert; M[request, layer, metric].

    Args:
        editor: None (R-ROME with the model's preset), a method name, or a mapping with "method",
            "hparams" (as `Editor` takes them: None, a config, overrides or a file) and "stats"
            (as `Editor` takes them; None: the statistics cache, computed for every candidate layer
            in one pass).
        out: directory for the resumable results (None: nothing saved).
        suites: evaluation suites (`golden_fast.evaluate`); metrics are whatever they report.
        data_parallel: under torchrun, split the pairs across ranks (every rank must call).
    """
    from golden_fast.data import EditRequest
    from golden_fast.edit import Editor
    from golden_fast.edit.moments import Moments
    from golden_fast.evaluate import evaluate
    from golden_fast.evaluate.api import on_first_rank, shard_map
    from golden_fast.models.identity import model_identity

    adapter = get_adapter(model)
    layers = list(range(adapter.n_layers)) if layers is None else [int(x) for x in layers]
    if not layers or len(set(layers)) != len(layers):
        raise ValueError(f"brute force: need distinct candidate layers, got {layers}")
    requests = list(requests)
    if not requests:
        raise ValueError("brute force: no proxy request")
    for r in requests:
        if not isinstance(r, EditRequest):
            raise TypeError(f"brute force: requests must be EditRequests, got {type(r).__name__}")
        if r.target_new is None:
            raise ValueError(f"{r.ref}: field 'target_new' is missing; brute force edits it in")
    keys = [request_key(r) for r in requests]
    seen: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k in seen:
            raise ValueError(f"{requests[i].ref}: the same request as position {seen[k]} ({k})")
        seen[k] = i

    method, hparams, stats = _editor_spec(editor)
    # resolves the method's hyperparameters (preset, overrides, file) once, for every layer
    first = Editor(model, tok, method, layers=[layers[0]], hparams=hparams, stats=stats, progress=False)
    hp_all = dataclasses.replace(first.hparams, layers=tuple(layers))
    # one Moments for every layer: from the cache, all candidate layers are computed in one pass
    # (a custom method without mom2_adjustment gets `stats` as given)
    moments = Moments.resolve(stats, model, tok, hp_all) if hasattr(hp_all, "mom2_adjustment") else stats
    meta = {
        "model": model_identity(model),
        "method": first.method,
        "hparams": hparams_record(first.hparams),
        "stats": _stats_fingerprint(stats, first.hparams),
        "suites": list(suites),
    }
    split = data_parallel and distributed.active()
    done: dict[tuple[str, int], dict[str, Any]] = {}
    pairs_path = None
    if out is not None:
        out = Path(out)
        pairs_path = _part_path(out, distributed.rank(), distributed.world_size()) if split else out / _PAIRS
        # rank 0 alone reads (and may repair) the files, so every rank starts from the same pairs
        done = on_first_rank(lambda: _open_results(out, meta), split)

    todo = [(i, layer) for i in range(len(requests)) for layer in layers if (keys[i], layer) not in done]
    t0 = time.perf_counter()
    pre = evaluate(model, tok, requests, suites=suites, data_parallel=data_parallel) if todo else None
    measured = time.perf_counter() - t0
    pre_seconds = on_first_rank(lambda: _pre_seconds(out, measured, pre is not None), split)

    editors: dict[int, Any] = {}

    def measure(i: int, layer: int) -> dict[str, Any]:
        req = requests[i]
        ed = editors.get(layer)
        if ed is None:
            # split: each rank edits its own pairs, so the edit is not one shared by the ranks
            ed = editors[layer] = Editor(
                model, tok, method, layers=[layer], hparams=hparams, stats=moments, progress=False, rank_local=split
            )
        t1 = time.perf_counter()
        res = ed.edit([req])
        try:
            # this rank's own pair: its single request is not split again
            post = evaluate(model, tok, [req], pre=pre, suites=suites, data_parallel=False)
        finally:
            res.revert()
        return {
            "key": keys[i],
            "layer": layer,
            "ref": req.ref,
            "metrics": post.by_request().get(0, {}),
            "seconds": time.perf_counter() - t1,
            "update_norm": res.traces[0].update_norm if res.traces else None,
            "warnings": sorted({w for t in res.traces for w in getattr(t, "warnings", [])}),
        }

    def run_pairs(indices: list[int]) -> list[dict[str, Any]]:
        desc = f"brute force ({first.method})"
        return _run_pairs([todo[k] for k in indices], measure, pairs_path, distributed.progress_enabled(progress), desc)

    for row in shard_map(len(todo), run_pairs, split):
        done[(row["key"], int(row["layer"]))] = row
    if out is not None:
        on_first_rank(lambda: _merge_parts(out / _PAIRS), split)

    metrics: list[str] = []
    for i in range(len(requests)):
        for layer in layers:
            for m in done[(keys[i], layer)]["metrics"]:
                if m not in metrics:
                    metrics.append(m)
    if not metrics:
        raise ValueError("brute force: the evaluation reported no metric for any request")
    M = np.full((len(requests), len(layers), len(metrics)), np.nan)
    seconds = np.zeros((len(requests), len(layers)))
    for i in range(len(requests)):
        for j, layer in enumerate(layers):
            row = done[(keys[i], layer)]
            seconds[i, j] = float(row["seconds"])
            for k, m in enumerate(metrics):
                v = row["metrics"].get(m)
                if v is not None:
                    M[i, j, k] = float(v)
    settings = meta | {"layers": layers, "n_requests": len(requests)}
    return BruteForceResult(M, layers, metrics, [r.ref for r in requests], keys, seconds, settings, pre_seconds)


def _run_pairs(
    pairs: Sequence[tuple[int, int]],
    measure: Callable[[int, int], dict[str, Any]],
    pairs_path: Path | None,
    progress: bool,
    desc: str,
) -> list[dict[str, Any]]:
    """The row of each (request index, layer) of `pairs`, each appended to `pairs_path` (when given)
    as soon as it is measured: the unit a resumed run skips."""
    bar = None
    if progress and pairs:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), desc=desc, unit="edit")
    rows = []
    try:
        for i, layer in pairs:
            row = measure(i, layer)
            rows.append(row)
            if pairs_path is not None:
                append_jsonl(pairs_path, row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{row['ref']} @ {layer}")
    finally:
        if bar is not None:
            bar.close()
    return rows


def brute_scores(result: BruteForceResult, top_k: int = 1, n_boot: int = 2000, seed: int = 0):
    """`LayerScores` of a brute-force run: scores = mean "overall" per layer (its golden layer)."""
    from golden_fast.locate.scores import LayerScores

    rep = result.golden(n_boot=n_boot, seed=seed)
    variants = {m: rep.mean_by_layer[m] for m in rep.metrics}
    return LayerScores.build(
        "brute",
        result.layers,
        variants,
        "overall",
        tukey_k=None,
        top_k=top_k,
        wall_time=result.wall_time,
        settings=result.settings,
        n_requests=len(result.keys),
        n_used=len(result.keys),
        extra={"golden": rep.to_dict(), "brute_force": result.to_dict()},
    )
