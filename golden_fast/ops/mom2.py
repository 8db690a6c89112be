"""mom2_update(acc, keys, mask=None) -> acc

Accumulate the uncentred second moment of keys (SPEC §2, C_l = E[k kᵀ] with the sum kept
separately from the token count), in place::

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

Backends: "torch" (below, the spec: one GEMM, both triangles) and "cpp" on the CPU: the upper
triangle only, as one GEMM per row panel acc[i:i+s, i:] += k[:, i:i+s]ᵀ k[:, i:] (3 panels for
m = 1536: 67% of the flops). Each element is the same T-long dot product as in the reference, and
with MKL (torch's CPU BLAS) the result is bitwise equal to it. Panels are at least 512 rows wide
(narrower GEMMs lose more to overhead than they save), so for m < 1024 it is the reference's
single GEMM. Measured on 2 shared CPU cores (m = 1536 / 2048, T = 1024..4096, the sizes of a
stats batch): 1.2-1.5x faster than one addmm_. In bench/bench_stats.py (SmolLM2, 30 layers, 1,883
tokens, runs interleaved) the whole one pass took 13.6 s with it and 15.1 s with the reference
(p50; on that shared machine the p20-p80 spread is as large as the gain).

BLAS ?syrk through scipy (one triangle, half the flops) was tried and rejected: OpenBLAS's syrk
accumulates with 2-3x the float32 error of MKL's GEMM (it fails the 2x-the-reference rule of
tests/_reference_check.py for T >= 300), and its own thread pool fights torch's for the cores
(8x slower than addmm_ at m = 128 under load).
"""

from __future__ import annotations

import torch

from golden_fast.ops import declare

__all__ = ["mom2_update", "mom2_update_cpp", "mom2_update_torch", "symmetrize_upper"]

mom2_update = declare("mom2_update", mutates=("acc",))

_ACC_DTYPES = (torch.float32, torch.float64)


def _rows(acc: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Check shapes and return the kept rows as a contiguous (T, m) tensor in acc's dtype."""
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
    k = keys.reshape(-1, keys.shape[-1])  # (T, m)
    if mask is not None:
        if tuple(mask.shape) != tuple(keys.shape[:-1]):
            raise ValueError(
                f"mom2_update: mask must have the keys' leading shape {list(keys.shape[:-1])}; "
                f"got {list(mask.shape)}"
            )
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
_CPP_REASON = "upper triangle only, as GEMMs on row panels (torch's BLAS; no native build needed)"


def _panels(m: int) -> int:
    return max(1, min(_MAX_PANELS, m // _PANEL_MIN_ROWS))


@mom2_update.impl("cpp", devices=("cpu",), available=lambda: (True, _CPP_REASON))
@torch.no_grad()
def mom2_update_cpp(
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

