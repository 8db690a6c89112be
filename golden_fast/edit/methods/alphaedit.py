"""AlphaEdit (Fang et al., ICLR 2025, arXiv 2410.02355): MEMIT's batch update confined to the null
space of the preserved knowledge, lifelong.

MEMIT's setting: targets z at the last edited layer, and per layer in order, keys K (m x n,
template-averaged, on the current weights) and the residual R = (Z - H) / (layers left). Then

    ΔW = R Kᵀ P (Kp Kpᵀ P + K Kᵀ P + α I)⁻¹

P = U0 U0ᵀ projects onto the eigenvectors of C (the keys' uncentred second moment) whose
eigenvalues lie below `nullspace_rel_threshold` x C's largest eigenvalue: directions the corpus
keys barely use, so ΔW k ≈ 0 for the keys the edit must leave alone. Kp Kpᵀ is the sum of the
keys of earlier batches of a lifelong run (the editor's state), each batch's keys recomputed on
the edited model after its update. α is the original code's L2 (10).

The solve: the solution V of (P M + α I) V = P K (M = Kp Kpᵀ + K Kᵀ, the transpose of the formula)
lies in P's range, so it is also the solution of the symmetric positive definite system
(P M P + α I) V = P K, factorised by Cholesky in float64; ΔW = R Vᵀ is applied as the factors
(R, V). The threshold is relative, not the original code's absolute 2e-2, because C's scale
differs across models and corpora (on smollm2-135m's model-sampled C, layers 4-6, 3e-2 x λ_max
leaves 1,168-1,272 of 1,536 directions, about what 2e-2 absolute does). See FORMULAS.md, section
"AlphaEdit".

Under torchrun (a collective edit) the targets are sharded and each layer's update is solved on
rank 0 and broadcast, as for MEMIT; every rank then adds the batch's keys to its own state.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from golden_fast import distributed
from golden_fast.edit.common import ApplyFn, EditError, RequestTrace, on_main, shared_object
from golden_fast.edit.config import MEMITConfig
from golden_fast.edit.context import context_templates
from golden_fast.edit.keys import keys_at_subject
from golden_fast.edit.methods.memit import (
    keys_and_share,
    moments_on_every_rank,
    through_post_norm,
)
from golden_fast.edit.moments import ILL_CONDITIONED, Moments
from golden_fast.edit.registry import EditorSpec, register
from golden_fast.edit.values import optimise_targets
from golden_fast.models import get_adapter

__all__ = ["AlphaEditConfig", "alphaedit_updates", "null_space_projection", "preserved_key"]


@dataclasses.dataclass(frozen=True)
class AlphaEditConfig(MEMITConfig):
    """Args (beyond MEMITConfig's; mom2_update_weight is not used: P replaces λ C):
    nullspace_rel_threshold: eigenvectors of C with eigenvalue <= this x the largest span the null
        space P projects onto.
    L2: α, the ridge of the solve (the original code's name and value).
    """

    nullspace_rel_threshold: float = 3e-2
    L2: float = 10.0

    method = "alphaedit"

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.nullspace_rel_threshold <= 1:
            raise ValueError(f"nullspace_rel_threshold must be in (0, 1], got {self.nullspace_rel_threshold}")
        if not self.L2 > 0:
            raise ValueError(f"L2 must be > 0, got {self.L2}")


def preserved_key(layer: int) -> str:
    """The state entry of one layer's accumulated Kp Kpᵀ."""
    return f"alphaedit.kp.layer{layer}"


def null_space_projection(C: torch.Tensor, rel_threshold: float) -> tuple[torch.Tensor, int]:
    """(P, rank): the projector onto the eigenvectors of the symmetric C whose eigenvalues are at
    most rel_threshold x the largest, in float64, and the dimension of that space."""
    C = C.to(torch.float64)
    ev, U = torch.linalg.eigh(0.5 * (C + C.T))
    keep = ev <= rel_threshold * ev[-1].clamp_min(0)
    U0 = U[:, keep]
    return U0 @ U0.T, int(keep.sum())


def _projection(moments: Moments, layer: int, dim: int, rel_threshold: float) -> tuple[torch.Tensor, int]:
    """P of one layer, cached on the Moments object (it depends only on C and the threshold)."""
    cache = moments.__dict__.setdefault("_null_space", {})
    key = (layer, rel_threshold)
    if key not in cache:
        if moments.source is None:  # C = I (mom2_adjustment off): no preserved knowledge to protect
            cache[key] = (torch.eye(dim, dtype=torch.float64), dim)
        else:
            cache[key] = null_space_projection(moments.C(layer, dim), rel_threshold)
    return cache[key]


def _layer_update(model, tok, requests, hparams, moments, state, templates, layers, i, Z, adapter):
    """((U (d, n), V (m, n)), info) of layer `layers[i]` on the current weights; info holds the
    condition, warnings, null-space rank and seconds (for the ranks that did not compute it)."""
    n, layer = len(requests), layers[i]
    warnings: list[str] = []
    t0 = time.perf_counter()
    K, X, R, norm = keys_and_share(model, tok, requests, templates, layers, i, Z, adapter)  # K (m, n), R (d, n)
    m = K.shape[0]
    t1 = time.perf_counter()
    try:
        if norm is not None:  # Gemma: the residual change R must be made through the post-MLP norm
            R = through_post_norm(norm, X, R.T).T
        P, rank = _projection(moments, layer, m, hparams.nullspace_rel_threshold)
        Kp = state.get(preserved_key(layer))
        M = K @ K.T if Kp is None else Kp.to(torch.float64) + K @ K.T
        A = P @ M @ P + hparams.L2 * torch.eye(m, dtype=torch.float64)
        A = 0.5 * (A + A.T)
        ev = torch.linalg.eigvalsh(A)
        cond = float(ev[-1] / ev[0]) if ev[0] > 0 else math.inf
        if cond > ILL_CONDITIONED or not math.isfinite(cond):
            warnings.append(f"layer {layer}: P (Kp Kpᵀ + K Kᵀ) P + αI ill-conditioned (condition {cond:.3g})")
        L, info = torch.linalg.cholesky_ex(A)
        PK = P @ K
        V = torch.cholesky_solve(PK, L) if int(info) == 0 else torch.linalg.pinv(A, hermitian=True) @ PK
        U = R
    except FloatingPointError as exc:
        raise EditError(f"alphaedit batch of {n} ({requests[0].ref}, ...): {exc}") from exc
    if not (torch.isfinite(U).all() and torch.isfinite(V).all()):
        raise EditError(f"alphaedit batch of {n} ({requests[0].ref}, ...): non-finite update at layer {layer}")
    info = {"conds": [cond], "warnings": warnings, "rank": rank, "keys": t1 - t0,
            "solve": time.perf_counter() - t1}
    return (U, V), info


def alphaedit_updates(
    model, tok, requests: Sequence, hparams: AlphaEditConfig, stats, apply: ApplyFn, progress: bool = True,
    state: dict | None = None,
) -> list[RequestTrace]:
    """Compute and apply one AlphaEdit batch; `state` holds Kp Kpᵀ per layer and is updated with this
    batch's keys (recomputed on the edited model) when the batch is done."""
    state = {} if state is None else state
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
    total_sq, conds, per_layer, ranks = 0.0, [], {}, {}
    clock = {"keys": 0.0, "solve": 0.0, "apply": 0.0}  # seconds, for the time split benchmarks report
    bar = tqdm(layers, desc="alphaedit layers", disable=not distributed.progress_enabled(progress))
    for i, layer in enumerate(bar):
        (U, V), info = on_main(lambda i=i: _layer_update(model, tok, requests, hparams, moments, state, templates,
                                                         layers, i, Z, adapter))
        conds += info["conds"]
        warnings += info["warnings"]
        ranks[layer] = info["rank"]
        clock["keys"] += info["keys"]
        clock["solve"] += info["solve"]
        total_sq += float(((U.T @ U) * (V.T @ V)).sum())
        per_layer[layer] = (U, V)
        t2 = time.perf_counter()
        apply(layer, U, V)
        clock["apply"] += time.perf_counter() - t2
    # the batch's keys on the edited model join the preserved keys of the next batches
    t0 = time.perf_counter()
    after = keys_at_subject(model, tok, requests, layers, templates)
    clock["keys"] += time.perf_counter() - t0
    for layer in layers:
        K = after[layer][0].to(torch.float64).T  # (m, n)
        old = state.get(preserved_key(layer))
        state[preserved_key(layer)] = K @ K.T if old is None else old.to(torch.float64) + K @ K.T
    for tr in traces:
        tr.update_norm = math.sqrt(max(total_sq, 0.0))
        tr.condition = max(conds) if conds else None
        tr.warnings = list(warnings)
        tr.extras.update(z=Z[tr.index], nll=tgt.nll_final[tr.index])
    traces[0].extras["layer_updates"] = per_layer
    traces[0].extras["null_space_rank"] = ranks
    traces[0].extras["targets_seconds"] = tgt.setup_seconds + tgt.loop_seconds
    traces[0].extras["targets_reused_seconds"] = tgt.reused_seconds
    traces[0].extras.update({f"{k}_seconds": v for k, v in clock.items()})
    return traces


register(EditorSpec(name="alphaedit", config=AlphaEditConfig, run=alphaedit_updates, default_mode="batch",
                    native_batch=True, targets="z", stateful=True, order=30,
                    description="AlphaEdit: MEMIT's update projected onto the null space of the preserved keys"))
