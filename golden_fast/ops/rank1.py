"""rank1_apply(weight, u, v, transposed=False, alpha=1.0) -> weight

Apply a sum of rank-one terms to a weight, in place (SPEC §3, "Applying": every ROME, R-ROME,
MEMIT and EMMET update is U Vᵀ; the edit journal stores U and V and applies them with this op)::

    weight (d, m) += alpha * u @ v.T            u (d, n), v (m, n): term j is u[:, j] v[:, j]ᵀ
    transposed=True: weight is stored (m, d) (GPT-2 Conv1D) and gets alpha * v @ u.T

Contract, met by every backend:
- weight: float32, float16, bfloat16 or float64, any strides (written through views: the caller's
  storage changes, the returned tensor *is* `weight`); u, v: any floating dtype, any strides.
- Numerics: per element, s = sum_j u[i, j] v[k, j] is accumulated in float32 (float64 when the
  weight is float64), then w_new = round(float(w) + alpha * s) is formed in that precision and
  converted to the weight's dtype ONCE (round to nearest even). The update is never rounded to a
  16-bit dtype before it meets the weight, so small edits are not lost to bf16's 8-bit mantissa.
  With exactly representable inputs (e.g. dyadic values of few bits) the result is therefore the
  float64 truth rounded once, bit for bit; tests/ops/test_rank1.py checks that.
- Memory: no float32 copy of the whole weight; a 16-bit weight is converted a bounded block of rows
  at a time (the reference) or element by element (C++).
- n = 0 (or an empty weight) leaves the weight untouched. Bad shapes or dtypes raise ValueError
  naming the shapes; a weight whose elements overlap in memory (expand()) raises RuntimeError.
- Runs under torch.no_grad(): a model's nn.Parameter is edited directly, and never differentiated.

Backends: "torch" (below, the spec) and "cpp": `torch.ops.golden_fast.rank1_apply` from
csrc/rank1.cpp, whose fake kernel is registered here (torch.library.opcheck, torch.compile). For
16-bit weights it fuses load, convert, add and round into one SIMD pass over the rows (OpenMP,
AVX-512/AVX2/SSE2 chosen at run time), 2-3x the reference for n <= 16 on a bf16 2048 x 8192 weight;
float32/float64 weights take the same in-place GEMM as the reference.
"""

from __future__ import annotations

import torch

from golden_fast import native
from golden_fast.ops import declare

__all__ = ["rank1_apply", "rank1_apply_cpp", "rank1_apply_torch"]

rank1_apply = declare("rank1_apply", mutates=("weight",))

_WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# Rows of a 16-bit weight converted to float32 at a time by the reference: bounded memory (~16 MiB).
_CHUNK_BYTES = 16 << 20


def _check(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, transposed: bool) -> None:
    """Same checks and messages as csrc/rank1.cpp; works on fake tensors (no data access)."""
    shapes = (
        f"weight {list(weight.shape)}, u {list(u.shape)}, v {list(v.shape)} (transposed={bool(transposed)})"
    )
    if weight.dim() != 2 or u.dim() != 2 or v.dim() != 2:
        raise ValueError(f"rank1_apply: weight, u and v must be 2-D; got {shapes}")
    d, m = u.shape[0], v.shape[0]
    if u.shape[1] != v.shape[1]:
        raise ValueError(f"rank1_apply: u (d, n) and v (m, n) need the same n; got {shapes}")
    if transposed and tuple(weight.shape) != (m, d):
        raise ValueError(f"rank1_apply: a transposed weight is (m, d) for u (d, n), v (m, n); got {shapes}")
    if not transposed and tuple(weight.shape) != (d, m):
        raise ValueError(f"rank1_apply: weight is (d, m) for u (d, n), v (m, n); got {shapes}")
    if weight.dtype not in _WEIGHT_DTYPES:
        raise ValueError(
            f"rank1_apply: weight must be float32, float16, bfloat16 or float64; got {weight.dtype}"
        )
    if not (u.is_floating_point() and v.is_floating_point()):
        raise ValueError(f"rank1_apply: u and v must be floating point; got {u.dtype} and {v.dtype}")


def _acc_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if weight_dtype == torch.float64 else torch.float32


@rank1_apply.reference
@torch.no_grad()
def rank1_apply_torch(
    weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, transposed: bool = False, alpha: float = 1.0
) -> torch.Tensor:
    _check(weight, u, v, transposed)
    a, b = (v, u) if transposed else (u, v)  # stored weight (R, C) += alpha * a @ b.T
    if a.shape[1] == 0 or weight.numel() == 0:
        return weight
    acc = _acc_dtype(weight.dtype)
    a = a.to(acc)  # (R, n)
    bt = b.to(acc).T  # (n, C)
    if weight.dtype == acc:
        # One GEMM with beta=1: the sum meets w in acc precision and is rounded once into w.
        return weight.addmm_(a, bt, alpha=alpha)
    rows = max(1, _CHUNK_BYTES // (4 * weight.shape[1]))
    for r0 in range(0, weight.shape[0], rows):
        w = weight[r0 : r0 + rows]  # a view: copy_ writes the caller's storage
        w.copy_(w.to(acc).addmm_(a[r0 : r0 + rows], bt, alpha=alpha))  # one rounding, in copy_
    return weight


def _cpp_status() -> tuple[bool, str]:
    return native.op_status("rank1_apply", "CPU")


@rank1_apply.impl("cpp", devices=("cpu",), available=_cpp_status)
@torch.no_grad()
def rank1_apply_cpp(
    weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, transposed: bool = False, alpha: float = 1.0
) -> torch.Tensor:
    torch.ops.golden_fast.rank1_apply(weight, u, v, bool(transposed), float(alpha))
    return weight


if native.has_op("rank1_apply"):
    # The C++ schema names this module (set_python_module), so torch imports it when it needs
    # the fake kernel: shape checks only, nothing returned, the weight is mutated in place.
    @torch.library.register_fake("golden_fast::rank1_apply")
    def _rank1_apply_fake(
        weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, transposed: bool = False, alpha: float = 1.0
    ) -> None:
        _check(weight, u, v, transposed)
