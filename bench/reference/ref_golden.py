"""Drive golden-fast on the shared inputs through its public API, and read back the same quantities
EasyEdit's side reports: keys, v* / z, ΔW per layer, losses, per-record metrics, wall time."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from golden_fast.edit import Editor
from golden_fast.edit.config import make_config
from golden_fast.edit.keys import keys_at_subject
from golden_fast.evaluate import evaluate


def config(method: str, gf: dict[str, Any]):
    """The complete config dataclass (fields the translation does not set keep the method's
    defaults, never the model preset's)."""
    return make_config(method, gf)


def run_single(model, tok, requests: Sequence, method: str, cfg, C: dict[int, torch.Tensor]) -> dict[str, Any]:
    """Each request edited alone on the unedited weights (Editor.edit_each: keys and v* of the
    requests batched, each update applied, read, reverted). Per request: ΔW (d, m), k*, the key in
    the denominator, v*, steps and losses. `seconds`: the whole call."""
    layer = cfg.layers[0]
    ed = Editor(model, tok, method, hparams=cfg, stats={layer: C[layer]}, progress=False)
    out: list[dict[str, Any]] = []

    def on_edit(i, req, res):
        tr = res.traces[0]
        x = tr.extras
        out.append({
            "dW": (x["U"].double() @ x["V"].double().T), "k_star": x["k_star"].double(), "k_den": x["k"].double(),
            "v_star": x["v_star"].double(), "loss_curve": list(tr.loss_curve), "steps": len(tr.loss_curve),
            "seconds": res.wall_time,
        })

    t0 = time.perf_counter()
    ed.edit_each(list(requests), on_edit, progress=False)
    return {"records": out, "seconds": time.perf_counter() - t0}


def run_mass(model, tok, requests: Sequence, method: str, cfg, C: dict[int, torch.Tensor],
             templates: Sequence[str]) -> dict[str, Any]:
    """One batch (Editor.edit mode="batch") on the unedited weights, then reverted. {layer: ΔW},
    Z (n, d), K (n, m) at the first layer on the unedited weights (keys_at_subject, the function the
    editor uses; computed before the timed edit), losses, seconds."""
    layers = sorted(cfg.layers)
    K = keys_at_subject(model, tok, list(requests), [layers[0]], list(templates))[layers[0]][0].double()
    ed = Editor(model, tok, method, hparams=cfg, stats={l: C[l] for l in layers}, progress=False)
    t0 = time.perf_counter()
    res = ed.edit(list(requests), mode="batch", progress=False)
    seconds = time.perf_counter() - t0
    try:
        ups = res.traces[0].extras["layer_updates"]
        dW = {l: ups[l][0].double() @ ups[l][1].double().T for l in layers}
        Z = torch.stack([t.extras["z"].double() for t in res.traces])
        curves = [list(t.loss_curve) for t in res.traces]
        ranks = res.traces[0].extras.get("null_space_rank")
    finally:
        res.revert()
    return {"dW": dW, "Z": Z, "K": K, "loss_curves": curves, "steps": [len(c) for c in curves], "seconds": seconds,
            "null_space_rank": ranks}


def evaluate_records(model, tok, requests: Sequence, pre=None):
    """golden-fast's knowedit suite (EasyEdit/KnowEdit's teacher-forced token accuracies)."""
    return evaluate(model, tok, list(requests), pre=pre, suites=("knowedit",), n_boot=10)


def metrics_of(report) -> list[dict[str, float]]:
    """Per request (in order): {metric: value}."""
    per: dict[int, dict[str, float]] = {}
    for row in report.rows:
        per.setdefault(row.position, {})[row.metric] = float(row.value)
    return [per.get(i, {}) for i in range(max(per) + 1 if per else 0)]
