"""grad_inner(k1, g1, k2, g2) -> out

Inner products of per-sample weight gradients of linear maps, from their inputs and output
gradients only (LGA's per-layer gradient inner product, Datta, Liu, Chhabra 2026; see
golden_fast/FORMULAS.md, section "LGA"). For a linear map v = W k applied at
tokens t, the gradient is grad_W = sum_t g_t k_tᵀ, so for two token sets a and b::

    <grad_W a, grad_W b> = sum_{t in a} sum_{s in b} (g_t . g_s) (k_t . k_s)

two small Gram matrices per (layer, sample) instead of a d x m gradient per layer::

    out[l, b] = sum_{t, s} (g1[l, b, t] . g2[l, b, s]) * (k1[l, b, t] . k2[l, b, s])

Shapes: k1 (L, B, T1, m), g1 (L, B, T1, d), k2 (L, B, T2, m), g2 (L, B, T2, d); L layers (or any
leading batch of linear maps), B samples, T1 / T2 tokens (they may differ), m the map's input width,
d its output width. Returns out (L, B) float32.

Contract, met by every backend:
- Inputs: any floating dtype (the four may differ), any strides, on one device. Products and sums
  are formed in float32 (16-bit inputs are widened exactly first); out is float32, never 16-bit.
- Padding: a token row that is zero in k or in g contributes exactly nothing, so callers pad
  ragged samples with zero rows (g is zero at padding anyway: no loss flows there).
- Self products (the squared gradient norm, for LGA's cosine variant) are the same op with
  (k2, g2) = (k1, g1).
- Empty T1 or T2 gives zeros. Bad shapes raise ValueError naming the four shapes.
- No autograd: runs under torch.no_grad().

Backends: "torch" (below, the spec): two batched GEMMs (B*L Gram matrices of T1 x T2) and a
reduction; memory O(L B T1 T2). A Triton kernel (kernels/grad_inner.py) may fuse them.
Import the op as `from golden_fast.ops.grad_inner import grad_inner`: the module has the op's name.
"""

from __future__ import annotations

import torch

from golden_fast.ops import declare

__all__ = ["check_grad_inner_args", "grad_inner", "grad_inner_torch"]

grad_inner = declare("grad_inner")


def check_grad_inner_args(k1: torch.Tensor, g1: torch.Tensor, k2: torch.Tensor, g2: torch.Tensor) -> None:
    """Validate shapes and dtypes per the contract (shared by every backend); raises ValueError."""
    shapes = f"k1 {list(k1.shape)}, g1 {list(g1.shape)}, k2 {list(k2.shape)}, g2 {list(g2.shape)}"
    if not all(x.dim() == 4 for x in (k1, g1, k2, g2)):
        raise ValueError(f"grad_inner: expected 4-D (L, B, T, width) inputs; got {shapes}")
    if not all(x.is_floating_point() for x in (k1, g1, k2, g2)):
        raise ValueError(
            f"grad_inner: inputs must be floating point; got {k1.dtype}, {g1.dtype}, {k2.dtype}, {g2.dtype}"
        )
    L, B, T1, m = k1.shape
    T2 = k2.shape[2]
    d = g1.shape[3]
    if tuple(g1.shape) != (L, B, T1, d) or tuple(k2.shape) != (L, B, T2, m) or tuple(g2.shape) != (L, B, T2, d):
        raise ValueError(
            "grad_inner: need k1 (L, B, T1, m), g1 (L, B, T1, d), k2 (L, B, T2, m), g2 (L, B, T2, d); " + shapes
        )
    devices = {x.device for x in (k1, g1, k2, g2)}
    if len(devices) != 1:
        raise ValueError(f"grad_inner: inputs on several devices {sorted(map(str, devices))}")


@grad_inner.reference
@torch.no_grad()
def grad_inner_torch(k1: torch.Tensor, g1: torch.Tensor, k2: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    check_grad_inner_args(k1, g1, k2, g2)
    f = torch.float32
    gg = g1.to(f) @ g2.to(f).transpose(-1, -2)  # (L, B, T1, T2)
    kk = k1.to(f) @ k2.to(f).transpose(-1, -2)  # (L, B, T1, T2)
    return (gg * kk).sum((-1, -2))  # (L, B)
