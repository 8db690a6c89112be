"""Triton backend of grad_inner (contract: golden_fast/ops/grad_inner.py; golden_fast/FORMULAS.md, "LGA").

    out[l, b] = sum_{t, s} (g1[l, b, t] . g2[l, b, s]) * (k1[l, b, t] . k2[l, b, s])

The reference forms both T1 x T2 Gram matrices of every (layer, sample) in memory, O(L B T1 T2)
floats, then reduces them. Here one program takes a block of BLOCK_T tokens of side 1 for one
(layer, sample), and for each block of BLOCK_S tokens of side 2 builds the two Gram tiles in
registers (tl.dot over d and over m, float32 accumulation), multiplies them elementwise and adds the
tile's sum to a running float32 scalar: no Gram matrix is ever written. Each program writes one
partial sum; a torch sum over the (few) token blocks of side 1 finishes, so the result does not
depend on scheduling (no atomics).

Numerics: float32 everywhere (input_precision="ieee" for float32 operands, never TF32). A pair of
16-bit operands of the same dtype (g1 with g2, or k1 with k2) is multiplied on the tensor cores with
float32 accumulation, which equals widening first up to summation order, since the product of two
16-bit values is exact in float32; mixed pairs are widened. Under the interpreter bf16 is widened
(the interpreter's bf16 dot gives wrong results). Zero (padding) rows contribute exactly zero, as in
the reference.

Why: no Gram matrix in memory, and 16-bit inputs on the tensor cores. float32 operands run on the
CUDA cores without TF32, where cuBLAS's float32 GEMMs (the reference) can be faster. Measurements:
bench/README.md, "Op-level measurements quoted from the ops' design notes".
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from golden_fast.ops.grad_inner import check_grad_inner_args, grad_inner

from . import interpreting, triton_devices, triton_status

__all__ = ["grad_inner_triton"]


@triton.jit
def _gram_tile(
    a_ptr,
    b_ptr,
    sa_t,
    sa_w,
    sb_t,
    sb_w,
    offs_t,
    offs_s,
    in_t,
    in_s,
    W,
    DOT_DTYPE: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    """(BLOCK_T, BLOCK_S) tile of a @ bᵀ over a width of W, float32.

    Each BLOCK_W chunk is one tl.dot, added into the tile with Kahan compensation: one dot chain over
    all of W on the tensor cores, whose float32 accumulation truncates, erred several times more than
    the float32 reference (figure: bench/README.md, "Op-level measurements quoted from the ops'
    design notes").
    """
    acc = tl.zeros((BLOCK_T, BLOCK_S), tl.float32)
    comp = tl.zeros((BLOCK_T, BLOCK_S), tl.float32)
    for w0 in range(0, W, BLOCK_W):
        ws = w0 + tl.arange(0, BLOCK_W)
        in_w = ws < W
        a = tl.load(a_ptr + offs_t[:, None] * sa_t + ws[None, :] * sa_w, mask=in_t[:, None] & in_w[None, :], other=0.0)
        b = tl.load(b_ptr + offs_s[:, None] * sb_t + ws[None, :] * sb_w, mask=in_s[:, None] & in_w[None, :], other=0.0)
        part = tl.dot(a.to(DOT_DTYPE), tl.trans(b.to(DOT_DTYPE)), input_precision="ieee")
        y = part - comp
        t = acc + y
        comp = (t - acc) - y
        acc = t
    return acc - comp


@triton.jit
def _grad_inner_kernel(
    k1_ptr,
    g1_ptr,
    k2_ptr,
    g2_ptr,
    part_ptr,  # (L * B, n_tblocks) float32
    B,
    T1,
    T2,
    M,
    D,
    n_tblocks,
    s_k1l, s_k1b, s_k1t, s_k1w,  # fmt: skip
    s_g1l, s_g1b, s_g1t, s_g1w,  # fmt: skip
    s_k2l, s_k2b, s_k2t, s_k2w,  # fmt: skip
    s_g2l, s_g2b, s_g2t, s_g2w,  # fmt: skip
    K_DOT: tl.constexpr,
    G_DOT: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    lb = tl.program_id(0)
    tb = tl.program_id(1)
    layer = (lb // B).to(tl.int64)
    sample = (lb % B).to(tl.int64)
    k1 = k1_ptr + layer * s_k1l + sample * s_k1b
    g1 = g1_ptr + layer * s_g1l + sample * s_g1b
    k2 = k2_ptr + layer * s_k2l + sample * s_k2b
    g2 = g2_ptr + layer * s_g2l + sample * s_g2b
    offs_t = tb * BLOCK_T + tl.arange(0, BLOCK_T)
    in_t = offs_t < T1
    offs_t64 = offs_t.to(tl.int64)
    total = tl.zeros((BLOCK_T, BLOCK_S), tl.float32)
    for s0 in range(0, T2, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        in_s = offs_s < T2
        offs_s64 = offs_s.to(tl.int64)
        gg = _gram_tile(g1, g2, s_g1t, s_g1w, s_g2t, s_g2w, offs_t64, offs_s64, in_t, in_s, D,
                        G_DOT, BLOCK_T, BLOCK_S, BLOCK_W)  # fmt: skip
        kk = _gram_tile(k1, k2, s_k1t, s_k1w, s_k2t, s_k2w, offs_t64, offs_s64, in_t, in_s, M,
                        K_DOT, BLOCK_T, BLOCK_S, BLOCK_W)  # fmt: skip
        total += gg * kk  # out-of-range rows and columns are zero in both tiles
    tl.store(part_ptr + lb * n_tblocks + tb, tl.sum(tl.sum(total, axis=1), axis=0))


def _dot_dtype(a: torch.Tensor, b: torch.Tensor) -> tl.dtype:
    if a.dtype == b.dtype == torch.float16:
        return tl.float16
    if a.dtype == b.dtype == torch.bfloat16 and not interpreting():
        return tl.bfloat16
    return tl.float32


def _config(T1: int, T2: int, k1: torch.Tensor, g1: torch.Tensor, k2: torch.Tensor, g2: torch.Tensor) -> dict:
    k_dot, g_dot = _dot_dtype(k1, k2), _dot_dtype(g1, g2)
    if interpreting():  # small tiles: the tests' odd shapes cross several of them
        return {"K_DOT": k_dot, "G_DOT": g_dot, "BLOCK_T": 16, "BLOCK_S": 16, "BLOCK_W": 16}
    block_t = 16 if T1 <= 16 else 32 if T1 <= 32 else 64
    block_s = 16 if T2 <= 16 else 32 if T2 <= 32 else 64
    return {
        "K_DOT": k_dot, "G_DOT": g_dot, "BLOCK_T": block_t, "BLOCK_S": block_s,
        "BLOCK_W": 32 if tl.float32 in (k_dot, g_dot) else 64,
        "num_warps": 4, "num_stages": 2,
    }  # fmt: skip


@grad_inner.impl("triton", devices=triton_devices(), available=triton_status)
@torch.no_grad()
def grad_inner_triton(k1: torch.Tensor, g1: torch.Tensor, k2: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    check_grad_inner_args(k1, g1, k2, g2)
    L, B, T1, M = k1.shape
    T2, D = k2.shape[2], g1.shape[3]
    if L * B == 0 or T1 == 0 or T2 == 0:
        return torch.zeros(L, B, dtype=torch.float32, device=k1.device)
    cfg = _config(T1, T2, k1, g1, k2, g2)
    n_tblocks = triton.cdiv(T1, cfg["BLOCK_T"])
    part = torch.empty(L * B, n_tblocks, dtype=torch.float32, device=k1.device)
    _grad_inner_kernel[(L * B, n_tblocks)](
        k1, g1, k2, g2, part, B, T1, T2, M, D, n_tblocks,
        *k1.stride(), *g1.stride(), *k2.stride(), *g2.stride(),
        **cfg,
    )  # fmt: skip
    return part.sum(dim=1).reshape(L, B)
