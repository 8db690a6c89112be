"""UltraEdit (X. Gu et al. 2025, "UltraEdit: Training-, Subject- and Memory-Free Lifelong Editing in
Large Language Models", arXiv 2505.14679): lifelong editing with no per-fact target optimisation,
one gradient pass per group of facts, a running normalisation of the features and a ridge solve.

One call (one "turn" of a lifelong run) edits its requests so:

1. Capture. The requests are cut into groups of `group_size`. For each group, one batched,
   teacher-forced forward of prompt + " " + target_new (left padded; the positions read are those
   whose next-token prediction is a target token: the prompt's last token through the target's
   second-to-last), the loss L = the mean cross-entropy over every target token of the group, one
   backward. At each edited layer l and at exactly those positions t: the down-projection's input
   k_t (width m) and g_t = dL / d(down-projection output)_t (width d). Gemma's post-MLP norm sits
   after the down-projection, so autograd already carries g_t through it. The weights do not change
   during the capture: every group sees the same model.

2. Lifelong normalisation. One running mean / std per down-projection shape (d x m), over the
   feature x = [k, g] (width m + d), shared by every edited layer of that shape and kept across calls
   (the editor's state). Every group's rows of every layer (groups in order, layers ascending within
   a group) update it, before any shift is computed: with n_b rows,

       n' = n + n_b,  δ = mean_b(x) - mean,  mean += n_b δ / n',
       M2 += n_b var_b(x) + n n_b δ² / n',  std = sqrt(M2 / (n' - 1 + ε)),  n = n'

   var_b is the group's *unbiased* per-column variance, so n_b var_b is (n_b / (n_b - 1)) times the
   group's own sum of squares: that is what the authors' code does (exact Welford/Chan would add
   (n_b - 1) var_b), kept here as they have it; a group of one row adds 0. ε = float32's machine
   epsilon.

3. Shifts. Per edited layer, over all N rows of the call: x̂ = (x - mean) / (std + ε) = [k̂, ĝ], the
   pseudo-target change of each row v_t = -lr ||k̂_t||² ĝ_t (d), and the ridge least-squares map
   from the raw keys K (N x m) to V = [v_t] (N x d):

       ΔWᵀ = (KᵀK + ridge I)⁻¹ Kᵀ V,   i.e.   ΔW = Vᵀ K (KᵀK + ridge I)⁻¹   (d x m).

   Solved in float64 by Cholesky. When N <= m, the push-through identity
   (KᵀK + ridge I)⁻¹ Kᵀ = Kᵀ (KKᵀ + ridge I)⁻¹ makes it an N x N system and ΔW = [(KKᵀ + ridge I)⁻¹ V]ᵀ Kᵀ
   goes to `apply` as the factors U = [(KKᵀ + ridge I)⁻¹ V]ᵀ (d x N), V = Kᵀ (m x N); when N > m the
   m x m system is solved and the dense ΔW is passed as U = ΔW (d x m), V = I (m x m). Every layer's
   shift comes from the same captured rows; they are applied together at the end of the call.

The authors' defaults: lr = 1e-6, ridge 1 (an identity hard-coded in their code; `ridge` here),
groups of 10. State entries (float64, CPU): ``ultraedit.norm.{m}x{d}.n`` (a 0-d count),
``.mean`` and ``.m2`` (m + d each); `run` replaces them with new tensors, never writes into them.
A lifelong run is ``Editor.edit(requests, mode="sequential", batch_size=100)``: each chunk a turn.

Under torchrun (a collective edit, `common.collective`) the groups' captures are split across the
ranks and gathered in order (each group's rows are the same whichever rank captures them), and the
statistics and shifts are computed on rank 0 and broadcast (`common.on_main`): every rank applies
the same update and keeps the same state.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import time
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from golden_fast import distributed
from golden_fast.edit.common import ApplyFn, EditError, RequestTrace, collective, on_main, shared_work
from golden_fast.edit.moments import ILL_CONDITIONED
from golden_fast.edit.registry import EditorSpec, register
from golden_fast.gradients import grad_pass, no_param_grads, parts_of, scored_sequence
from golden_fast.models import get_adapter
from golden_fast.models.placement import execution_device
from golden_fast.tokens import target_span

__all__ = ["EPS", "UltraEditConfig", "capture_rows", "norm_keys", "ridge_factors", "ultraedit_updates",
           "update_norm_stats"]

#: ε of the normalisation (the authors' torch.finfo(torch.float32).eps)
EPS = float(torch.finfo(torch.float32).eps)


@dataclasses.dataclass(frozen=True)
class UltraEditConfig:
    """Args:
    layers: the edited layers (distinct). The authors edit the last few layers of 7B models; this
        default (MEMIT's) is a placeholder until presets are measured.
    lr: the step of the pseudo-target change v = -lr ||k̂||² ĝ.
    ridge: the ridge of the least-squares fit (KᵀK + ridge I); the authors' code has 1 (an identity).
    group_size: requests per forward/backward pass (the authors' 10).
    """

    layers: tuple[int, ...] = (3, 4, 5, 6, 7, 8)
    lr: float = 1e-6
    ridge: float = 1.0
    group_size: int = 10

    method = "ultraedit"

    def __post_init__(self):
        layers = self.layers if isinstance(self.layers, (list, tuple)) else [self.layers]
        object.__setattr__(self, "layers", tuple(int(x) for x in layers))
        if not self.layers:
            raise ValueError("layers: at least one layer is needed")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers must be distinct, got {list(self.layers)}")
        for name in ("lr", "ridge"):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        try:
            if isinstance(self.group_size, bool):
                raise TypeError
            object.__setattr__(self, "group_size", operator.index(self.group_size))
        except TypeError:
            raise ValueError(f"group_size must be an int >= 1, got {self.group_size!r}") from None
        if self.group_size < 1:
            raise ValueError(f"group_size must be an int >= 1, got {self.group_size!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["method"] = self.method
        return d


def norm_keys(m: int, d: int) -> tuple[str, str, str]:
    """The state entries (count, mean, M2) of the normalisation of down-projections of width m -> d."""
    base = f"ultraedit.norm.{m}x{d}"
    return f"{base}.n", f"{base}.mean", f"{base}.m2"


def update_norm_stats(
    n: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n', mean', M2') after the rows x (n_b, D): new tensors, the arguments are left alone."""
    nb = x.shape[0]
    n_new = n + nb
    delta = x.mean(0) - mean
    # the authors' code adds n_b x the *unbiased* group variance (not (n_b - 1) x it); one row adds 0
    var_b = x.var(0, correction=1) if nb > 1 else torch.zeros_like(mean)
    return n_new, mean + delta * (nb / n_new), m2 + nb * var_b + delta.pow(2) * (n * nb / n_new)


def capture_rows(
    model, tok, requests: Sequence, layers: Sequence[int], group_size: int, progress: bool = False
) -> tuple[list[dict[int, tuple[torch.Tensor, torch.Tensor]]], list[float]]:
    """Per group, {layer: (K (n_b, m), G (n_b, d))} in float64 at the target-predicting positions, G the
    gradient of the group's mean target cross-entropy; and each request's mean target NLL.

    One forward + backward per group (`golden_fast.gradients.grad_pass`, LGA's pass too), which keeps
    the parameters out of autograd and captures the down-projections' inputs and output gradients."""
    adapter = get_adapter(model)
    seqs = []
    for req in requests:
        if req.target_new is None:
            raise ValueError(f"{req.ref}: field 'target_new' is missing")
        try:
            sp = target_span(tok, req.text, req.target_new)
        except ValueError as exc:
            raise ValueError(f"{req.ref}: field 'target_new': {exc}") from None
        seqs.append(scored_sequence(sp.ids, sp.start, sp.end, "answer"))
    parts = {layer: parts_of(adapter, layer, "down")[0] for layer in layers}
    # the summed loss; its gradient over the group's token count is the mean's (in float64, and no
    # underflow of 16-bit gradients)
    groups, nll = [], []
    starts = range(0, len(seqs), group_size)
    with no_param_grads(model):
        for lo in tqdm(starts, desc="ultraedit groups", disable=not progress):
            group = seqs[lo : lo + group_size]
            cap, sums = grad_pass(model, adapter, tok, group, list(parts.values()), min(layers), loss_reduction="sum")
            T = max(len(s.ids) for s in group)
            rows = [b for b, s in enumerate(group) for _ in s.positions]
            cols = [T - len(s.ids) + p for s in group for p in s.positions]
            device = cap[parts[layers[0]]][0].device
            rows_t, cols_t = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
            out = {}
            for layer in layers:
                k, g, _ = cap[parts[layer]]
                out[layer] = (k[rows_t, cols_t].to(torch.float64), g[rows_t, cols_t].to(torch.float64) / len(rows))
            groups.append(out)
            nll += [s_ / len(s.positions) for s_, s in zip(sums, group)]
            del cap
    return groups, nll


def ridge_factors(K: torch.Tensor, V: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor, float, bool]:
    """(U, W, condition, fell_back) with U Wᵀ = Vᵀ K (KᵀK + ridge I)⁻¹, K (N, m) and V (N, d) float64.

    N <= m: the N x N system (KKᵀ + ridge I), U = [(KKᵀ + ridge I)⁻¹ V]ᵀ (d, N), W = Kᵀ (m, N).
    N > m: the m x m system, U = ΔW (d, m), W = I (m, m). `fell_back`: the Cholesky factorisation failed
    and a pseudo-inverse solved it."""
    N, m = K.shape
    small = N <= m
    A = K @ K.T if small else K.T @ K
    A = 0.5 * (A + A.T) + ridge * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    ev = torch.linalg.eigvalsh(A)
    cond = float(ev[-1] / ev[0]) if ev[0] > 0 else math.inf
    B = V if small else K.T @ V  # (N, d) or (m, d)
    L, info = torch.linalg.cholesky_ex(A)
    fell_back = int(info) != 0
    X = torch.linalg.pinv(A, hermitian=True) @ B if fell_back else torch.cholesky_solve(B, L)
    # contiguous: the journal saves its factors contiguous, and a replay must see the same layout to
    # give the same bits
    if small:
        return X.T.contiguous(), K.T.contiguous(), cond, fell_back
    return X.T.contiguous(), torch.eye(m, dtype=K.dtype, device=K.device), cond, fell_back


def _capture_shared(model, tok, requests: Sequence, layers: list[int], group_size: int, progress: bool):
    """`capture_rows`, its groups split across the ranks of a collective edit and gathered in order."""
    if not collective():
        return capture_rows(model, tok, requests, layers, group_size, progress=progress)
    device = execution_device(model)

    def work(mine: list[int]) -> list[tuple]:
        out = []
        for g in mine:
            chunk = requests[g * group_size : (g + 1) * group_size]
            (rows,), nll = capture_rows(model, tok, chunk, layers, group_size)
            out.append(({layer: (K.cpu(), G.cpu()) for layer, (K, G) in rows.items()}, nll))
        return out

    every = shared_work(math.ceil(len(requests) / group_size), work)
    groups = [{layer: (K.to(device), G.to(device)) for layer, (K, G) in rows.items()} for rows, _ in every]
    return groups, [x for _, nll in every for x in nll]


def _running_norms(groups: list, layers: list[int], state: dict) -> dict:
    """{(m, d): (count, mean, M2)}: the state's running statistics, updated by every group's rows of every
    layer (groups in order, layers ascending within a group)."""
    norms: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    for grp in groups:
        for layer in layers:
            K, G = grp[layer]
            shape = (K.shape[1], G.shape[1])
            if shape not in norms:
                kn, km, k2 = norm_keys(*shape)
                width = shape[0] + shape[1]
                if kn in state:
                    norms[shape] = tuple(state[k].to(K.device, torch.float64) for k in (kn, km, k2))
                else:
                    zero = torch.zeros(width, dtype=torch.float64, device=K.device)
                    norms[shape] = (torch.zeros((), dtype=torch.float64, device=K.device), zero, zero)
                if norms[shape][1].shape != (width,) or norms[shape][2].shape != (width,):
                    raise EditError(f"ultraedit: state {km} has shape {tuple(norms[shape][1].shape)}, "
                                    f"expected ({width},)")
            norms[shape] = update_norm_stats(*norms[shape], torch.cat([K, G], 1))
    return norms


def _shifts(groups: list, layers: list[int], norms: dict, hparams, n: int, first_ref: str):
    """({layer: (U, W)}, conditions, warnings, ||update||²): the ridge fit of every layer's shifts."""
    warnings: list[str] = []
    total_sq, conds, per_layer = 0.0, [], {}
    for layer in layers:
        K = torch.cat([grp[layer][0] for grp in groups])  # (N, m)
        G = torch.cat([grp[layer][1] for grp in groups])  # (N, d)
        m = K.shape[1]
        count, mean, m2 = norms[(m, G.shape[1])]
        std = (m2 / (count - 1 + EPS)).sqrt()
        x = (torch.cat([K, G], 1) - mean) / (std + EPS)
        k_hat, g_hat = x[:, :m], x[:, m:]
        V = -hparams.lr * k_hat.pow(2).sum(1, keepdim=True) * g_hat  # (N, d)
        U, W, cond, fell_back = ridge_factors(K, V, float(hparams.ridge))
        conds.append(cond)
        what = "KKᵀ + ridge I" if K.shape[0] <= m else "KᵀK + ridge I"
        if cond > ILL_CONDITIONED or not math.isfinite(cond):
            warnings.append(f"layer {layer}: {what} ill-conditioned (condition {cond:.3g})")
        if fell_back:
            warnings.append(f"layer {layer}: Cholesky of {what} failed; solved with a pseudo-inverse")
        if not (torch.isfinite(U).all() and torch.isfinite(W).all()):
            raise EditError(f"ultraedit batch of {n} ({first_ref}, ...): non-finite update at layer {layer}")
        total_sq += float(((U.T @ U) * (W.T @ W)).sum())
        per_layer[layer] = (U, W)
    return per_layer, conds, warnings, total_sq


def _solve(groups: list, layers: list[int], state: dict, hparams, n: int, first_ref: str):
    """(tensors, info) for `on_main`: every layer's (U, W) then every shape's (count, mean, M2)."""
    norms = _running_norms(groups, layers, state)
    per_layer, conds, warnings, total_sq = _shifts(groups, layers, norms, hparams, n, first_ref)
    tensors = [t for layer in layers for t in per_layer[layer]] + [t for v in norms.values() for t in v]
    return tensors, {"shapes": list(norms), "conds": conds, "warnings": warnings, "total_sq": total_sq}


def ultraedit_updates(
    model, tok, requests: Sequence, hparams: UltraEditConfig, stats, apply: ApplyFn, progress: bool = True,
    state: dict | None = None,
) -> list[RequestTrace]:
    """Compute and apply one UltraEdit turn; `state` holds the running normalisation of each
    down-projection shape and gets the new statistics (new tensors) when the turn is done."""
    state = {} if state is None else state
    layers = sorted(int(x) for x in hparams.layers)
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must be distinct, got {list(hparams.layers)}")
    adapter = get_adapter(model)
    for layer in layers:
        adapter.block(layer)  # range check with a clear message
    n = len(requests)
    t0 = time.perf_counter()
    groups, nll = _capture_shared(model, tok, requests, layers, int(hparams.group_size),
                                  distributed.progress_enabled(progress))
    targets_seconds = time.perf_counter() - t0

    t1 = time.perf_counter()
    # 1. every group's rows update the running statistics, before any shift is computed;
    # 2. per layer, the shifts of all the call's rows and the ridge fit
    tensors, info = on_main(lambda: _solve(groups, layers, state, hparams, n, requests[0].ref))
    per_layer = {layer: (tensors[2 * i], tensors[2 * i + 1]) for i, layer in enumerate(layers)}
    rest = tensors[2 * len(layers):]
    norms = {shape: tuple(rest[3 * i : 3 * i + 3]) for i, shape in enumerate(info["shapes"])}
    solve_seconds = time.perf_counter() - t1

    for layer in layers:
        apply(layer, *per_layer[layer])
    # new tensors into the dict, never written in place (the Editor restores its snapshot on failure)
    for (m, d), values in norms.items():
        for key, value in zip(norm_keys(m, d), values):
            state[key] = value.detach().to("cpu", torch.float64)

    traces = [RequestTrace(index=i) for i in range(n)]
    for tr in traces:
        tr.update_norm = math.sqrt(max(info["total_sq"], 0.0))
        tr.condition = max(info["conds"]) if info["conds"] else None
        tr.warnings = list(info["warnings"])
        tr.extras["nll"] = nll[tr.index]
    traces[0].extras["layer_updates"] = per_layer
    traces[0].extras["targets_seconds"] = targets_seconds
    traces[0].extras["solve_seconds"] = solve_seconds
    return traces


register(EditorSpec(name="ultraedit", config=UltraEditConfig, run=ultraedit_updates, default_mode="batch",
                    native_batch=False, targets="none", single=False, uses_moments=False, stateful=True, order=40,
                    description="UltraEdit: lifelong and optimisation-free; normalised gradients, a ridge fit"))
