"""Triton backend of mom2_update and mom2_update_many (contract: golden_fast/ops/mom2.py).

One program owns one (BLOCK_M x BLOCK_M) tile of the upper triangle of one layer's accumulator:

    acc[l][i-block, j-block] += sum over kept rows t of keys[l][t, i-block]ᵀ keys[l][t, j-block]

Programs with j-block < i-block return at once (the strict lower triangle is not part of the
contract: half the flops). Each tile has a single owner, so there are no atomics and the result does
not depend on scheduling. Masked (padding) rows are never read: their loads are masked out, not
multiplied by zero, so NaN or inf in padding cannot leak in. The layers of mom2_update_many are the
third grid axis: one launch for every layer of a batch (stacked tensors, any layer stride).

Numerics, per the contract:
- float32 acc: float32 keys go through tl.dot with input_precision="ieee" (never TF32, which keeps
  10 mantissa bits). float16/bfloat16 keys are multiplied in their own dtype on the tensor cores
  with float32 accumulation: a product of two 16-bit values is exact in float32, so this is the
  widened computation with a different summation order. The interpreter's bf16 dot is wrong
  (TRITON_INTERPRET=1 on a CPU), so there bf16 keys are widened to float32 first.
- Each BLOCK_T chunk of rows is summed by one tl.dot and added into the tile with Kahan
  compensation: the error then grows with the chunk, not with T (see the kernel).
- float64 acc: keys widened to float64 and the products summed by broadcasting in float64 (no
  float64 tensor-core path is assumed); slower, but it is the accuracy option.
- A tile whose rows were all masked out is not written, so "no rows leaves acc bitwise unchanged"
  holds without a host-side check (0.0 added to -0.0 would give +0.0).

Block sizes are fixed per dtype, not autotuned: autotuning runs the kernel several times, and this
one accumulates in place.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from golden_fast.ops.mom2 import check_mom2_args, check_mom2_many_args, mom2_update, mom2_update_many

from . import interpreting, triton_devices, triton_status

__all__ = ["mom2_update_many_triton", "mom2_update_triton"]

_TL_DTYPE = {
    torch.float32: tl.float32,
    torch.float64: tl.float64,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
}


@triton.jit
def _mom2_update_kernel(
    acc_ptr,  # (L, M, M), each layer contiguous, layer stride stride_al
    key_ptr,  # (L, T, M), unit column stride
    mask_ptr,  # (T,) nonzero keeps the row; unused without HAS_MASK
    T,
    M,
    stride_al,
    stride_kl,
    stride_kt,
    ACC_DTYPE: tl.constexpr,
    HAS_MASK: tl.constexpr,
    DOT_DTYPE: tl.constexpr,  # dtype the operands of tl.dot are cast to (float32 or the 16-bit keys)
    USE_DOT: tl.constexpr,  # False: float64, products summed by broadcasting
    BLOCK_M: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    pid_i = tl.program_id(0)
    pid_j = tl.program_id(1)
    if pid_j < pid_i:  # strictly below the diagonal: not part of the contract
        return
    layer = tl.program_id(2).to(tl.int64)
    acc_ptr += layer * stride_al
    key_ptr += layer * stride_kl
    offs_i = pid_i * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_j = pid_j * BLOCK_M + tl.arange(0, BLOCK_M)
    in_i = offs_i < M
    in_j = offs_j < M
    c = tl.zeros((BLOCK_M, BLOCK_M), dtype=ACC_DTYPE)
    comp = tl.zeros((BLOCK_M, BLOCK_M), dtype=ACC_DTYPE)  # Kahan compensation of c
    kept = 0
    for t0 in range(0, T, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        rows = offs_t < T
        if HAS_MASK:
            rows = rows & (tl.load(mask_ptr + offs_t, mask=rows, other=0) != 0)
        kept += tl.sum(rows.to(tl.int32), axis=0)
        row_off = offs_t.to(tl.int64)[:, None] * stride_kt
        a = tl.load(key_ptr + row_off + offs_i[None, :], mask=rows[:, None] & in_i[None, :], other=0.0)
        b = tl.load(key_ptr + row_off + offs_j[None, :], mask=rows[:, None] & in_j[None, :], other=0.0)
        if USE_DOT:
            # (BLOCK_M, BLOCK_T) @ (BLOCK_T, BLOCK_M) in float32 ("ieee": never TF32), then a Kahan-
            # compensated add into c. Plain `c = dot(a, b, c)` sums all T products in one sequential
            # chain, measured several times further from the float64 truth than cuBLAS (figure:
            # bench/README.md, "Op-level measurements quoted from the ops' design notes"), and
            # tensor-core accumulation (truncating) worse still; chunk sums + Kahan beat both.
            part = tl.dot(tl.trans(a.to(DOT_DTYPE)), b.to(DOT_DTYPE), input_precision="ieee")
            y = part - comp
            t = c + y
            comp = (t - c) - y
            c = t
        else:
            a64 = a.to(ACC_DTYPE)
            b64 = b.to(ACC_DTYPE)
            c += tl.sum(a64[:, :, None] * b64[:, None, :], axis=0)
    out = acc_ptr + offs_i.to(tl.int64)[:, None] * M + offs_j[None, :]
    write = in_i[:, None] & in_j[None, :] & (kept > 0)
    tl.store(out, tl.load(out, mask=write, other=0.0) + (c - comp), mask=write)


def _config(acc_dtype: torch.dtype, key_dtype: torch.dtype) -> dict:
    """Launch configuration: the dtype the dot runs in, and block sizes."""
    interp = interpreting()
    if acc_dtype == torch.float64:
        if interp:  # numpy runs one program at a time: few, large tiles are fastest
            return {"DOT_DTYPE": tl.float64, "USE_DOT": False, "BLOCK_M": 256, "BLOCK_T": 4}
        return {"DOT_DTYPE": tl.float64, "USE_DOT": False, "BLOCK_M": 32, "BLOCK_T": 8, "num_warps": 4}
    if key_dtype in (torch.float16, torch.bfloat16) and not (interp and key_dtype == torch.bfloat16):
        dot = _TL_DTYPE[key_dtype]  # tensor cores, exact products, float32 sums
        cfg = {"BLOCK_M": 128, "BLOCK_T": 64, "num_warps": 8, "num_stages": 3}  # 64: fewer Kahan steps
    else:
        dot = tl.float32
        cfg = {"BLOCK_M": 64, "BLOCK_T": 32, "num_warps": 4, "num_stages": 3}
    if interp:
        cfg = {"BLOCK_M": 256, "BLOCK_T": 64}
    return {"DOT_DTYPE": dot, "USE_DOT": True, **cfg}


def _launch(accs: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None) -> None:
    """accs (L, M, M) contiguous += per layer; keys (L, ..., M); arguments already checked."""
    L, M = accs.shape[0], accs.shape[-1]
    if L == 0 or keys.numel() == 0:
        return  # no layers or no rows: acc bitwise unchanged
    flat = keys.reshape(L, -1, M)  # (L, T, M): a view whenever the leading dimensions allow it
    T = flat.shape[1]
    if T == 0 or M == 0:
        return  # no rows: acc bitwise unchanged
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    if flat.dtype not in _TL_DTYPE:
        raise ValueError(f"mom2_update (triton): keys of dtype {flat.dtype} are not supported")
    if mask is not None:
        mask = mask.reshape(-1).to(accs.device)
        mask = mask.view(torch.uint8) if mask.dtype == torch.bool else mask  # same bytes, loadable
    cfg = _config(accs.dtype, flat.dtype)
    blocks = triton.cdiv(M, cfg["BLOCK_M"])
    _mom2_update_kernel[(blocks, blocks, L)](
        accs,
        flat,
        mask if mask is not None else accs,  # any pointer: never read without HAS_MASK
        T,
        M,
        accs.stride(0),
        flat.stride(0),
        flat.stride(1),
        ACC_DTYPE=_TL_DTYPE[accs.dtype],
        HAS_MASK=mask is not None,
        **cfg,
    )


@mom2_update.impl("triton", devices=triton_devices(), available=triton_status)
@torch.no_grad()
def mom2_update_triton(acc: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    check_mom2_args(acc, keys, mask)
    _launch(acc[None], keys[None], mask)  # one layer: (1, m, m) and (1, ..., m) views
    return acc


@mom2_update_many.impl("triton", devices=triton_devices(), available=triton_status)
@torch.no_grad()
def mom2_update_many_triton(accs: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    check_mom2_many_args(accs, keys, mask)
    _launch(accs, keys, mask)
    return accs
