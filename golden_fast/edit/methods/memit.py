"""MEMIT (Meng et al. 2023) and EMMET (Gupta et al. 2024): a batch of n edits spread
over layers l_1 < ... < l_L.

Targets z_i are optimised at the residual output of the last layer. Then, per layer in
order, with keys K (m x n, template-averaged, recomputed on the current weights) and
R = (Z - H_current) / (number of layers left, this one included):
    MEMIT:  Delta = R K^T (lambda C + update_norm_lambda I + K K^T)^-1   (update_norm_lambda: norm control)
    EMMET:  C0 = lambda C (+ update_norm_lambda I);  D = K^T C0^-1 K (+ emmet_lambda I if n > 1)
            Delta = R D^-1 K^T C0^-1
Every Delta is applied as factors U V^T (U = R or R D^-1, V = the solved keys), float64
solves, ill-conditioning reported and a pseudo-inverse fallback for a singular D. Where a
post-MLP norm sits before the residual (Gemma), R is first mapped through it (`through_post_norm`).
Under torchrun (a collective edit) the targets are sharded across the ranks and each layer's update
is solved on rank 0 and broadcast (`common.on_main`), so every rank applies the same update.
See FORMULAS.md, sections "MEMIT" and "EMMET".
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from golden_fast import distributed
from golden_fast.edit.common import ApplyFn, EditError, RequestTrace, collective, on_main, shared_object
from golden_fast.edit.config import MEMITConfig
from golden_fast.edit.context import context_templates
from golden_fast.edit.keys import keys_at_subject
from golden_fast.edit.moments import ILL_CONDITIONED, Moments
from golden_fast.edit.registry import EditorSpec, register
from golden_fast.edit.values import optimise_targets
from golden_fast.models import get_adapter
from golden_fast.models.placement import execution_device


def residual_at(model, tok, requests, layer) -> torch.Tensor:
    """Residual stream after `layer` at the subject's last token of the bare prompts (n, d)."""
    return keys_at_subject(model, tok, requests, [layer], ["{}"], site="out")[layer][0].to(torch.float64)


def keys_and_bare_output(model, tok, requests, layer, templates, want_output: bool, bare: int | None):
    """(K (m, n) template-averaged keys, the down-projection's output at the bare prompts (n, d) or None).

    The bare output comes from the same forward when the bare prompt is one of the templates."""
    if not want_output:
        return keys_at_subject(model, tok, requests, [layer], templates)[layer][0].to(torch.float64).T, None
    if bare is None:
        K = keys_at_subject(model, tok, requests, [layer], templates)[layer][0]
        X = keys_at_subject(model, tok, requests, [layer], ["{}"])[layer][1]
        return K.to(torch.float64).T, X.to(torch.float64)
    Kt, Ot = keys_at_subject(model, tok, requests, [layer], templates, per_template=True)[layer]  # (n, T, .)
    return Kt.mean(1).to(torch.float64).T, Ot[:, bare].to(torch.float64)


def keys_and_share(model, tok, requests, templates, layers, i, Z, adapter):
    """(K (m, n), X (n, d) or None, R (d, n), the post-MLP norm or None) of layer `layers[i]` on the
    current weights: the requests' keys, the down-projection's bare output when a post-MLP norm needs
    it, and this layer's share of the residual change still to make at the last layer."""
    layer, z_layer = layers[i], layers[-1]
    norm = adapter.post_mlp_norm(layer)
    bare = templates.index("{}") if norm is not None and "{}" in templates else None
    K, X = keys_and_bare_output(model, tok, requests, layer, templates, norm is not None, bare)
    H = residual_at(model, tok, requests, z_layer)  # (n, d), current weights
    return K, X, (Z - H).T / (len(layers) - i), norm


def through_post_norm(norm: torch.nn.Module, X: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """The change of the down-projection's output that moves norm(X) by R, as nearly as an RMSNorm allows.

    X: (n, d) outputs of the down-projection, R: (n, d) residual-space changes. An RMSNorm
    N(x) = g * x / rms(x) sees only x's direction: its outputs lie on the surface rms(y / g) = 1,
    whose normal at Y = N(X) is Y / g^2. The target Y + R is moved back onto the surface along that
    normal (the root of a quadratic), so the change made is R less its normal component, the part no
    x can reach, to first order; then x' = (y / g) * rms(X). Adding R to the output instead is off by
    the norm's gain over rms(X): 5.7x in length, cosine 0.31, on gemma3-270m's layer 6. g is read as
    N(1), whatever the norm's weight convention (w or 1 + w).
    """
    p, dev = next(norm.parameters()), execution_device(norm)  # an offloaded norm's weight sits on "meta"
    with torch.no_grad():
        g = norm(torch.ones(1, X.shape[1], dtype=p.dtype, device=dev))[0].to(torch.float64).cpu()
        Y = norm(X.to(p.dtype).to(dev)).to(torch.float64).cpu()
    X = X.to(torch.float64).cpu()
    # a zero gain (gemma3-270m has some) makes its output coordinate unreachable; there the
    # normalised x keeps its value and the normal has no component
    live = g.abs() > 1e-6 * float(g.abs().max())
    if not bool(live.any()):
        raise FloatingPointError("the post-MLP norm has no non-zero gain: no residual target can be made through it")
    gs = torch.where(live, g, torch.ones_like(g))
    rms = lambda v: v.pow(2).mean(-1, keepdim=True).sqrt()  # noqa: E731
    a = torch.where(live, (Y + R.cpu()) / gs, X / rms(X))  # the target, divided by g
    b = torch.where(live, Y / gs**3, torch.zeros_like(Y))  # the surface normal, divided by g
    # mean((a - t b)^2) = 1: t^2 mean(b^2) - 2 t mean(ab) + mean(a^2) - 1 = 0, the root nearer 0
    qa, qb, qc = b.pow(2).mean(-1), (a * b).mean(-1), a.pow(2).mean(-1) - 1
    disc = qb.pow(2) - qa * qc
    root = qc / (qb + torch.sign(qb) * disc.clamp_min(0).sqrt())  # the stable form of the smaller root
    # no real root (the target is far off the surface): the point of the normal line nearest to it
    t = torch.where(disc >= 0, root, qb / qa)
    U = a - t[:, None] * b
    return U * (rms(X) / rms(U)) - X


def _solve_small(D: torch.Tensor, B: torch.Tensor, warnings: list[str], layer: int) -> tuple[torch.Tensor, float]:
    """D^-1 B for the n x n EMMET system; pinv fallback when singular, reported."""
    ev = torch.linalg.eigvalsh(0.5 * (D + D.T))
    cond = float(ev[-1].abs() / ev[0].abs()) if ev[0] != 0 else math.inf
    if cond > ILL_CONDITIONED or not math.isfinite(cond):
        warnings.append(f"layer {layer}: D = K^T C0^-1 K ill-conditioned (condition {cond:.3g}); pseudo-inverse used")
        return torch.linalg.pinv(D) @ B, cond
    return torch.linalg.solve(D, B), cond


def moments_on_every_rank(moments: Moments, layers: Sequence[int], adapter) -> None:
    """In a collective edit, load C of every edited layer on every rank now: only rank 0 solves, but
    computing the statistics may itself be a collective every rank must join."""
    if collective() and moments.source is not None:
        for layer in layers:
            moments.C(layer, adapter.down_weight(layer).shape[1])


def _layer_update(model, tok, requests, hparams, moments, method, templates, layers, i, Z, adapter):
    """((U (d, n), V (m, n)), info) of layer `layers[i]` on the current weights; info holds the
    conditions, warnings and seconds it took (so the ranks that did not compute it can report them)."""
    n, layer = len(requests), layers[i]
    warnings: list[str] = []
    conds: list[float] = []
    t0 = time.perf_counter()
    K, X, R, norm = keys_and_share(model, tok, requests, templates, layers, i, Z, adapter)
    t1 = time.perf_counter()
    try:
        if norm is not None:  # Gemma: the residual change R must be made through the post-MLP norm
            R = through_post_norm(norm, X, R.T).T
        if method == "memit":
            V = moments.solve(layer, K, scale=hparams.mom2_update_weight, ridge=hparams.update_norm_lambda,
                              extra=K @ K.T, warnings=warnings)
            U = R
        else:
            C0inv_K = moments.solve(layer, K, scale=hparams.mom2_update_weight, ridge=hparams.update_norm_lambda,
                                    warnings=warnings)  # (m, n)
            D = K.T @ C0inv_K  # (n, n)
            if n > 1:
                D = D + hparams.emmet_lambda * torch.eye(n, dtype=torch.float64)
            DinvT_Rt, cond_d = _solve_small(D.T, R.T, warnings, layer)  # D^-T R^T = (R D^-1)^T
            U, V = DinvT_Rt.T, C0inv_K
            conds.append(cond_d)
    except FloatingPointError as exc:
        raise EditError(f"{method} batch of {n} ({requests[0].ref}, ...): {exc}") from exc
    conds.append(moments.last_condition)
    if not (torch.isfinite(U).all() and torch.isfinite(V).all()):
        raise EditError(f"{method} batch of {n} ({requests[0].ref}, ...): non-finite update at layer {layer}")
    info = {"conds": conds, "warnings": warnings, "keys": t1 - t0, "solve": time.perf_counter() - t1}
    return (U, V), info


def mass_edit(
    model, tok, requests: Sequence, hparams, stats, apply: ApplyFn, method: str = "memit", progress: bool = True
) -> list[RequestTrace]:
    """One MEMIT / EMMET batch. In a collective edit (torchrun, `common.collective`) the targets are
    sharded across the ranks, each layer's update is solved on rank 0 and broadcast, and every rank
    applies it: the same weights everywhere."""
    layers = sorted(hparams.layers)
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must be distinct, got {list(hparams.layers)}")
    moments = Moments.resolve(stats, model, tok, hparams)
    adapter = get_adapter(model)
    moments_on_every_rank(moments, layers, adapter)
    n = len(requests)
    z_layer = layers[-1]
    templates = shared_object(context_templates(model, tok, hparams.context_template_length_params))
    tgt = optimise_targets(model, tok, requests, z_layer, "out", templates, hparams, shard=True)
    Z = tgt.init.to(torch.float64) + tgt.delta.to(torch.float64)  # (n, d)
    traces = [RequestTrace(index=i, loss_curve=tgt.loss_curves[i]) for i in range(n)]
    warnings: list[str] = []
    total_sq, conds, per_layer = 0.0, [], {}
    clock = {"keys": 0.0, "solve": 0.0, "apply": 0.0}  # seconds, for the time split benchmarks report
    bar = tqdm(layers, desc=f"{method} layers", disable=not distributed.progress_enabled(progress))
    for i, layer in enumerate(bar):
        (U, V), info = on_main(lambda i=i: _layer_update(model, tok, requests, hparams, moments, method, templates,
                                                         layers, i, Z, adapter))
        conds += info["conds"]
        warnings += info["warnings"]
        clock["keys"] += info["keys"]
        clock["solve"] += info["solve"]
        # ||U V^T||_F^2 = trace((U^T U)(V^T V)), without forming the d x m matrix
        total_sq += float(((U.T @ U) * (V.T @ V)).sum())
        per_layer[layer] = (U, V)
        t2 = time.perf_counter()
        apply(layer, U, V)
        clock["apply"] += time.perf_counter() - t2
    for tr in traces:
        tr.update_norm = math.sqrt(max(total_sq, 0.0))
        tr.condition = max(conds) if conds else None
        tr.warnings = list(warnings)
        tr.extras.update(z=Z[tr.index], nll=tgt.nll_final[tr.index])
    traces[0].extras["layer_updates"] = per_layer
    traces[0].extras["targets_seconds"] = tgt.setup_seconds + tgt.loop_seconds  # z optimisation, whole batch
    traces[0].extras["targets_reused_seconds"] = tgt.reused_seconds  # what cached z cost when first made
    traces[0].extras.update({f"{k}_seconds": v for k, v in clock.items()})
    return traces


def _run_memit(model, tok, requests: Sequence, hparams, stats, apply: ApplyFn, progress: bool = True):
    return mass_edit(model, tok, requests, hparams, stats, apply, method="memit", progress=progress)


register(EditorSpec(name="memit", config=MEMITConfig, run=_run_memit, default_mode="batch", native_batch=True,
                    targets="z", order=20, description="MEMIT: a batch spread over several layers, least squares"))
