"""rank1_apply(weight, u, v, transposed=False, alpha=1.0) -> weight

Apply a sum of rank-one terms to a weight, in place (golden_fast/FORMULAS.md, section "Applying an
update": every ROME, R-ROME, MEMIT and EMMET update is U Vᵀ; the edit journal stores U and V and
applies them with this op)::

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

Backends: "torch" (below, the spec), "cpp" on the CPU and "cuda" on NVIDIA GPUs:
`torch.ops.golden_fast.rank1_apply` from csrc/rank1.cpp and csrc/cuda/rank1.cu, whose fake kernel is
registered here (torch.library.opcheck, torch.compile). The C++ kernel fuses load, convert, add and
round into one SIMD pass over the rows for n <= 8 (OpenMP, AVX-512/AVX2/SSE2 chosen at run time), and
beyond that adds BLAS-computed float32 tiles of 256 x 512 sums into the weight; float32 weights take
the same path (torch's own GEMM is slow for 2 <= n <= 8), float64 weights an in-place GEMM. The CUDA
kernel adds float32 sums into the weight and rounds once: a fused loop for n <= 16, a SIMT GEMM tile
with the add as epilogue up to n = 256, cuBLAS (never TF32) on bounded row blocks beyond. Why: one
pass over the weight and one rounding per element, with no float32 copy of it; the gain is largest
for 16-bit weights and few terms, while for a large float32 weight the reference's single addmm_
can be faster. Measurements: bench/README.md, "Op-level measurements quoted from the ops' design
notes".

rank1_apply_many(weights, us, vs, transposed=False, alpha=1.0) applies stacked terms to several
weights in one call (below); per weight it is bitwise rank1_apply on the same backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from golden_fast import native
from golden_fast.ops import declare

__all__ = [
    "rank1_apply",
    "rank1_apply_cpp",
    "rank1_apply_cuda",
    "rank1_apply_many",
    "rank1_apply_many_cpp",
    "rank1_apply_many_cuda",
    "rank1_apply_many_torch",
    "rank1_apply_torch",
]

rank1_apply = declare("rank1_apply", mutates=("weight",))
rank1_apply_many = declare("rank1_apply_many", mutates=("weights",))

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


def _check_many(weights: Sequence[torch.Tensor], us: torch.Tensor, vs: torch.Tensor, transposed: bool) -> None:
    """rank1_apply_many's checks (same messages as csrc/rank1.cpp); every layer before any write."""
    L = len(weights)
    if us.dim() != 3 or vs.dim() != 3 or us.shape[0] != L or vs.shape[0] != L:
        raise ValueError(
            f"rank1_apply_many: us must be (L, d, n) and vs (L, m, n) for L = {L} weights; "
            f"got us {list(us.shape)}, vs {list(vs.shape)}"
        )
    for weight, u, v in zip(weights, us, vs):
        _check(weight, u, v, transposed)


@rank1_apply_many.reference
@torch.no_grad()
def rank1_apply_many_torch(
    weights: Sequence[torch.Tensor],
    us: torch.Tensor,
    vs: torch.Tensor,
    transposed: bool = False,
    alpha: float = 1.0,
) -> list[torch.Tensor]:
    """rank1_apply_many(weights, us, vs, transposed=False, alpha=1.0) -> weights

    rank1_apply on several weights in one call, e.g. MEMIT's or EMMET's update of every edited layer:
    weights[l] += alpha * us[l] @ vs[l].T for each l, with rank1_apply's contract per weight (float32
    sums, one rounding per element, in place, no float32 copy of a weight). us (L, d, n), vs (L, m, n)
    stacked: every layer gets n terms (pad a layer's terms with zero columns, which add exactly
    nothing); the weights may differ in dtype and strides. Every layer is checked before any is
    written. For each weight the result is bitwise what rank1_apply gives on the same backend, so an
    edit journal may replay it entry by entry. The C++ backend runs every layer in one OpenMP region
    (cache-sized tiles of all weights as one pool of work); weights sharing memory raise RuntimeError.
    """
    _check_many(weights, us, vs, transposed)
    for weight, u, v in zip(weights, us, vs):
        rank1_apply_torch(weight, u, v, transposed, alpha)
    return list(weights)


def _cpp_status() -> tuple[bool, str]:
    return native.op_status("rank1_apply", "CPU")


@rank1_apply.impl("cpp", devices=("cpu",), available=_cpp_status)
@torch.no_grad()
def rank1_apply_cpp(
    weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, transposed: bool = False, alpha: float = 1.0
) -> torch.Tensor:
    torch.ops.golden_fast.rank1_apply(weight, u, v, bool(transposed), float(alpha))
    return weight


@rank1_apply_many.impl("cpp", devices=("cpu",), available=lambda: native.op_status("rank1_apply_many", "CPU"))
@torch.no_grad()
def rank1_apply_many_cpp(
    weights: Sequence[torch.Tensor],
    us: torch.Tensor,
    vs: torch.Tensor,
    transposed: bool = False,
    alpha: float = 1.0,
) -> list[torch.Tensor]:
    torch.ops.golden_fast.rank1_apply_many(list(weights), us, vs, bool(transposed), float(alpha))
    return list(weights)


# -- CUDA (csrc/cuda/rank1.cu, compiled in when torch has CUDA) ------------------------------------
# The same torch.ops calls: the op's CUDA kernel is chosen by torch's own device dispatch.
rank1_apply_cuda = rank1_apply.impl(
    "cuda", devices=("cuda",), available=lambda: native.op_status("rank1_apply", "CUDA"))(rank1_apply_cpp)
rank1_apply_many_cuda = rank1_apply_many.impl(
    "cuda", devices=("cuda",), available=lambda: native.op_status("rank1_apply_many", "CUDA"))(rank1_apply_many_cpp)


if native.has_op("rank1_apply_many"):

    @torch.library.register_fake("golden_fast::rank1_apply_many")
    def _rank1_apply_many_fake(
        weights: list[torch.Tensor], us: torch.Tensor, vs: torch.Tensor, transposed: bool = False, alpha: float = 1.0
    ) -> None:
        _check_many(weights, us, vs, transposed)


if native.has_op("rank1_apply"):
    # The C++ schema names this module (set_python_module), so torch imports it when it needs
    # the fake kernel: shape checks only, nothing returned, the weight is mutated in place.
    @torch.library.register_fake("golden_fast::rank1_apply")
    def _rank1_apply_fake(
        weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, transposed: bool = False, alpha: float = 1.0
    ) -> None:
        _check(weight, u, v, transposed)
