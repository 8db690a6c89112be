"""mom2_update(acc, keys, mask=None) -> acc

Accumulate the uncentred second moment of keys (C_l = E[k kᵀ], kept as a sum next to its token
count; golden_fast/FORMULAS.md, section "Second-moment statistics C_l"), in place::

    acc (m, m) += keys[mask]ᵀ @ keys[mask]          keys (..., m), mask keys.shape[:-1] or None

Contract, met by every backend:
- acc: float32 or float64, contiguous, on the keys' device; it is written in place and returned
  (the returned tensor *is* `acc`). keys: any floating dtype, any leading shape (e.g. (B, T, m)
  straight from a hook); mask: bool or integer (an attention mask: nonzero keeps the row), same
  leading shape as keys; None keeps every row.
- Numerics: keys are converted to acc's dtype first (bf16 keys are widened exactly), products and
  sums are formed in acc's dtype. No rounding to a 16-bit dtype anywhere.
- Only the upper triangle (i <= j) of acc is guaranteed. C is symmetric, so a backend may compute
  one triangle only (half the flops, BLAS syrk) and leave the strict lower triangle as it found it;
  callers symmetrise once at the end with `symmetrize_upper`.
- No rows (T = 0, or every row masked out) leaves acc bitwise unchanged. Bad shapes or dtypes raise
  ValueError naming them.
- Runs under torch.no_grad(); acc never enters an autograd graph.

Backends: "torch" (below, the spec: one GEMM, both triangles) and "panels" on the CPU (torch
GEMMs, no C++): the upper triangle only, as one GEMM per row panel acc[i:i+s, i:] += k[:, i:i+s]ᵀ k[:, i:] (3 panels for
m = 1536: 67% of the flops). Each element is the same T-long dot product as in the reference, and
with MKL (torch's CPU BLAS) the result is bitwise equal to it. Panels are at least 512 rows wide
(narrower GEMMs lose more to overhead than they save), so for m < 1024 it is the reference's
single GEMM. Why: fewer flops than the full square, with the reference's numerics. Measurements
(CPU and GPU): bench/README.md, "Op-level measurements quoted from the ops' design notes".

BLAS ?syrk through scipy (one triangle, half the flops) was tried and rejected: OpenBLAS's syrk
accumulates with more float32 error than MKL's GEMM (it fails the 2x-the-reference rule of
tests/_reference_check.py for long T), and its own thread pool fights torch's for the cores.

"triton" (kernels/mom2.py, CUDA): one program per tile of the upper triangle, masked rows never read,
16-bit keys multiplied exactly on the tensor cores with float32 sums, Kahan-compensated chunk sums;
TF32 is never used. Why: one triangle halves the flops, exact 16-bit products keep the
contract's numerics, and chunk sums with Kahan compensation stay closer to the float64 truth than
one dot chain over all of T.

mom2_update_many(accs, keys, mask=None) -> accs is the same update for every layer of one batch,
stacked: accs (L, m, m), keys (L, ..., m), one mask. The Triton backend does all layers in one
launch (a single layer's tiles fill a GPU poorly: 78 tiles for m = 1536); on the CPU it loops.
"""

from __future__ import annotations

import torch

from golden_fast.ops import declare

__all__ = [
    "check_mom2_args",
    "check_mom2_many_args",
    "mom2_update",
    "mom2_update_many",
    "mom2_update_many_panels",
    "mom2_update_many_torch",
    "mom2_update_panels",
    "mom2_update_torch",
    "symmetrize_upper",
]

mom2_update = declare("mom2_update", mutates=("acc",))
mom2_update_many = declare("mom2_update_many", mutates=("accs",))

_ACC_DTYPES = (torch.float32, torch.float64)


def check_mom2_args(acc: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None) -> None:
    """Validate one (acc, keys, mask) per the contract (shared by every backend); raises ValueError."""
    if acc.dim() != 2 or acc.shape[0] != acc.shape[1]:
        raise ValueError(f"mom2_update: acc must be square (m, m); got {list(acc.shape)}")
    if acc.dtype not in _ACC_DTYPES:
        raise ValueError(f"mom2_update: acc must be float32 or float64; got {acc.dtype}")
    if not acc.is_contiguous():
        raise ValueError("mom2_update: acc must be contiguous (it is written in place)")
    if keys.dim() < 1 or keys.shape[-1] != acc.shape[0]:
        raise ValueError(
            f"mom2_update: keys (..., m) must end in m = {acc.shape[0]}; got keys {list(keys.shape)}"
        )
    if not keys.is_floating_point():
        raise ValueError(f"mom2_update: keys must be floating point; got {keys.dtype}")
    if mask is not None and tuple(mask.shape) != tuple(keys.shape[:-1]):
        raise ValueError(
            f"mom2_update: mask must have the keys' leading shape {list(keys.shape[:-1])}; "
            f"got {list(mask.shape)}"
        )


def _rows(acc: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Check shapes and return the kept rows as a contiguous (T, m) tensor in acc's dtype."""
    check_mom2_args(acc, keys, mask)
    k = keys.reshape(-1, keys.shape[-1])  # (T, m)
    if mask is not None:
        keep = mask.reshape(-1)
        k = k[keep if keep.dtype == torch.bool else keep != 0]  # gather: a copy of the kept rows only
    return k.to(acc.dtype).contiguous()


@mom2_update.reference
@torch.no_grad()
def mom2_update_torch(
    acc: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    k = _rows(acc, keys, mask)  # (T, m)
    if k.shape[0] == 0:
        return acc
    return acc.addmm_(k.T, k)  # beta = 1: the batch sum meets the running sum once, in acc's dtype


def symmetrize_upper(acc: torch.Tensor) -> torch.Tensor:
    """A new full symmetric matrix from acc's upper triangle (what every backend guarantees)."""
    upper = acc.triu()
    return upper + upper.triu(1).T


# -- CPU fast path: only the upper triangle, as GEMMs on row panels ------------------------------
# Panels of at least this many rows: narrower GEMMs lose more to overhead than they save in flops
# (measured: 512 beats 256 and 768 for m = 1536 and 2048 at T = 512..4096).
_PANEL_MIN_ROWS = 512
_MAX_PANELS = 8
_PANELS_REASON = "upper triangle only, as GEMMs on row panels (torch's BLAS; no native build needed)"


def _panels(m: int) -> int:
    return max(1, min(_MAX_PANELS, m // _PANEL_MIN_ROWS))


@mom2_update.impl("panels", devices=("cpu",), available=lambda: (True, _PANELS_REASON))
@torch.no_grad()
def mom2_update_panels(
    acc: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    k = _rows(acc, keys, mask)  # (T, m)
    if k.shape[0] == 0:
        return acc
    m = acc.shape[0]
    step = -(-m // _panels(m))
    kt = k.T  # (m, T)
    for i in range(0, m, step):
        # rows i..i+step of the upper triangle and everything right of them: acc[i:i+s, i:] is a
        # strided view of acc, written in place by one GEMM with beta = 1.
        acc[i : i + step, i:].addmm_(kt[i : i + step], k[:, i:])  # (s, m - i)
    return acc


# -- several layers at once ------------------------------------------------------------------------
def check_mom2_many_args(accs: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None) -> None:
    """Validate mom2_update_many's stacked arguments (shared by every backend); raises ValueError."""
    if accs.dim() != 3 or accs.shape[1] != accs.shape[2]:
        raise ValueError(f"mom2_update_many: accs must be stacked (L, m, m); got {list(accs.shape)}")
    if keys.dim() < 2 or keys.shape[0] != accs.shape[0]:
        raise ValueError(
            f"mom2_update_many: keys must be (L, ..., m) with L = {accs.shape[0]}; got keys {list(keys.shape)}"
        )
    if not accs.is_contiguous():
        raise ValueError("mom2_update_many: accs must be contiguous (it is written in place)")
    # one layer checks them all (stacked: same shapes and dtypes); with L = 0, shapes on the meta device
    L = accs.shape[0]
    acc = accs[0] if L else torch.empty(accs.shape[1:], dtype=accs.dtype, device="meta")
    check_mom2_args(acc, keys[0] if L else torch.empty(keys.shape[1:], dtype=keys.dtype, device="meta"), mask)


@mom2_update_many.reference
@torch.no_grad()
def mom2_update_many_torch(accs: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """mom2_update_many(accs, keys, mask=None) -> accs

    mom2_update on every layer of one batch: accs[l] += keys[l][mask]ᵀ keys[l][mask] for each l, with
    mom2_update's contract per layer (upper triangle only, acc's dtype, in place, returns accs).
    accs (L, m, m) float32/float64 contiguous -- e.g. one buffer whose accs[l] are the per-layer sums;
    keys (L, ..., m) any floating dtype and strides; mask the keys' shape without L and m (the
    batch's tokens are the same at every layer) or None. The Triton backend updates all L layers in
    one launch (the grid's third axis); elsewhere it is a loop over mom2_update.
    """
    check_mom2_many_args(accs, keys, mask)
    for layer in range(accs.shape[0]):
        mom2_update_torch(accs[layer], keys[layer], mask)  # accs[layer] is a contiguous view: in place
    return accs


@mom2_update_many.impl("panels", devices=("cpu",), available=lambda: (True, _PANELS_REASON))
@torch.no_grad()
def mom2_update_many_panels(
    accs: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    check_mom2_many_args(accs, keys, mask)
    for layer in range(accs.shape[0]):
        mom2_update_panels(accs[layer], keys[layer], mask)
    return accs
