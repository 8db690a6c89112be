"""ROME (Meng et al. 2022) and R-ROME (Gupta et al. 2024): one rank-one update per fact.

    W' = W + Lambda (C^-1 k*)^T,   Lambda = (v* - W k - b) / ((C^-1 k*)^T k)

rome:   k is the key of the bare prompt (the original implementation's choice, kept for
        faithfulness), W k + b its output.
r-rome: k = k*, the template-averaged key, in both places (and W k* + b its output):
        this removes the "disabling edits" that make sequential ROME collapse.

C is the keys' second moment (identity when mom2_adjustment is off), v* the optimised value;
see FORMULAS.md, sections "ROME" and "R-ROME".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from golden_fast.edit.common import ApplyFn, EditError, RequestTrace
from golden_fast.edit.config import ROMEConfig, RROMEConfig
from golden_fast.edit.context import context_templates
from golden_fast.edit.keys import keys_at_subject
from golden_fast.edit.moments import Moments
from golden_fast.edit.registry import EditorSpec, register
from golden_fast.edit.values import optimise_targets
from golden_fast.models import get_adapter


def rome_updates(
    model, tok, requests: Sequence, hparams, stats, apply: ApplyFn, method: str = "r-rome", progress: bool = True
) -> list[RequestTrace]:
    """Compute every request's update on the current weights, then apply them all."""
    if len(hparams.layers) != 1:
        raise ValueError(f"{method} edits one layer; got layers={list(hparams.layers)}")
    layer = hparams.layers[0]
    adapter = get_adapter(model)
    moments = Moments.resolve(stats, model, tok, hparams)
    templates = context_templates(model, tok, hparams.context_template_length_params)
    W = adapter.down_weight(layer).detach().to(torch.float64)  # (d, m)
    b = adapter.down_bias(layer)
    b = None if b is None else b.detach().to(torch.float64)

    traces, updates = [], []
    it = tqdm(range(len(requests)), desc=f"{method} L{layer}", disable=not progress or len(requests) < 2)
    # keys and targets of all requests in batched passes, on the unedited weights
    # one pass gives k* (template mean) and, for rome, the bare prompt's key (template "{}")
    keys = keys_at_subject(model, tok, requests, [layer], templates, per_template=True)[layer][0]  # (n, T, m)
    k_star = keys.mean(1)  # (n, m) float64
    k_bare = keys[:, templates.index("{}")] if method == "rome" else None
    tgt = optimise_targets(model, tok, requests, layer, "mlp.down.out", templates, hparams)
    for i in it:
        req = requests[i]
        tr = RequestTrace(index=i, loss_curve=tgt.loss_curves[i])
        v_star = tgt.init[i].to(torch.float64) + tgt.delta[i].to(torch.float64)  # (d,)
        k = k_star[i] if method == "r-rome" else k_bare[i]
        try:
            u = moments.solve(layer, k_star[i][:, None], warnings=tr.warnings)[:, 0]  # C^-1 k*  (m,)
        except FloatingPointError as exc:
            raise EditError(f"{req.ref}: {exc}") from exc
        tr.condition = moments.last_condition
        denom = float(u @ k)
        if not abs(denom) > 1e-12:
            raise EditError(f"{req.ref}: (C^-1 k*)^T k = {denom:.3g}; the key is degenerate")
        out = W @ k + (0 if b is None else b)
        lam = (v_star - out) / denom  # (d,)
        if not (torch.isfinite(lam).all() and torch.isfinite(u).all()):
            raise EditError(f"{req.ref}: non-finite update")
        tr.update_norm = float(lam.norm() * u.norm())
        tr.extras.update(k_star=k_star[i], k=k, v_star=v_star, U=lam[:, None], V=u[:, None],
                         nll=tgt.nll_final[i], v_setup_seconds=tgt.setup_seconds / len(requests),
                         v_loop_seconds=tgt.loop_seconds / len(requests),
                         targets_reused_seconds=tgt.reused_seconds / len(requests))
        traces.append(tr)
        updates.append((lam, u))
    for lam, u in updates:
        apply(layer, lam[:, None], u[:, None])
    return traces


def _run_rome(model, tok, requests: Sequence, hparams, stats, apply: ApplyFn, progress: bool = True):
    return rome_updates(model, tok, requests, hparams, stats, apply, method="rome", progress=progress)


def _run_r_rome(model, tok, requests: Sequence, hparams, stats, apply: ApplyFn, progress: bool = True):
    return rome_updates(model, tok, requests, hparams, stats, apply, method="r-rome", progress=progress)


register(EditorSpec(name="rome", config=ROMEConfig, run=_run_rome, default_mode="sequential", targets="v*",
                    single=True, order=10, description="ROME: one rank-one update per fact, bare-prompt key"))
register(EditorSpec(name="r-rome", config=RROMEConfig, run=_run_r_rome, default_mode="sequential", targets="v*",
                    single=True, aliases=("rrome",), order=11,
                    description="R-ROME: ROME with the template-averaged key in both places"))
