"""Triton backend of token_logprobs (contract: golden_fast/ops/token_logprobs.py).

Fused "lm_head + log-softmax + gather + argmax": the logits of a (BLOCK_N x BLOCK_V) tile are formed
in float32 registers, capped, folded into a running (max, sum of exp) per row -- the online
logsumexp of flash-attention -- and dropped; nothing of size N x V is ever written.

Grid: (row blocks, vocabulary splits). Each program walks its split's columns tile by tile and
writes five numbers per row: the split's max and sum of exp(z - max), its first argmax and that
logit, and the target's logit if the target lies in the split (else 0). A few torch ops on those
(N, splits) partials combine the splits: logsumexp of the per-split terms, the first split holding
the global maximum (splits are in vocabulary order, so ties keep the lowest id, torch.argmax's
rule), and the sum of the target logits (one is the logit, the others exactly 0). Splitting the
vocabulary keeps every SM busy when N, the number of scored positions, is small.

Numerics: logits in float32 as the contract demands. float32 inputs use input_precision="ieee" (no
TF32); float16/bfloat16 inputs of one dtype are multiplied on the tensor cores with float32
accumulation, which equals widening first (a product of two 16-bit values is exact in float32) up to
summation order; under the interpreter bf16 is widened first (its bf16 dot gives wrong results).
softcap uses a portable tanh (Cephes' tanhf: an odd polynomial below |x| = 0.625, 1 - 2/(e^2x + 1)
above; about 2 ulp), because libdevice's tanh does not exist in the interpreter. The target logit
and the argmax come from the same tile, so a target that is the argmax has logprob exactly
max - logsumexp, as in the reference.

`chunk_size` is validated and otherwise ignored: the tile (BLOCK_V columns) is the chunk here, and
the contract makes the result independent of it up to rounding.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from golden_fast.ops.token_logprobs import check_token_logprobs_args, token_logprobs

from . import interpreting, triton_devices, triton_status

__all__ = ["token_logprobs_triton"]


@triton.jit
def _tanh(x):
    # Cephes tanhf (single precision, ~2 ulp): no cancellation near 0, saturates for large |x|.
    a = tl.abs(x)
    z = x * x
    p = (((-5.70498872745e-3 * z + 2.06390887954e-2) * z - 5.37397155531e-2) * z + 1.33314422036e-1) * z
    small = (p - 3.33332819422e-1) * z * x + x
    e = tl.exp(2.0 * tl.minimum(a, 44.0))  # e^88 is finite in float32; tanh(44) == 1 in float32 anyway
    big = 1.0 - 2.0 / (e + 1.0)
    big = tl.where(x < 0, -big, big)
    return tl.where(a < 0.625, small, big)


@triton.jit
def _token_logprobs_kernel(
    h_ptr,  # (N, D)
    w_ptr,  # (V, D)
    b_ptr,  # (V,) or unused
    t_ptr,  # (N,) int64 targets
    part_ptr,  # (4, N, S) float32: max, sum of exp(z - max), argmax logit, target logit
    idx_ptr,  # (N, S) int64: argmax id
    N,
    V,
    D,
    S,
    stride_hn,
    stride_hd,
    stride_wv,
    stride_wd,
    stride_b,
    tiles_per_split,
    softcap,
    HAS_BIAS: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    in_rows = rows < N
    rows64 = rows.to(tl.int64)
    target = tl.load(t_ptr + rows64, mask=in_rows, other=-1)
    run_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BLOCK_N,), tl.float32)
    best_val = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    best_idx = tl.zeros((BLOCK_N,), tl.int64)
    t_logit = tl.zeros((BLOCK_N,), tl.float32)
    v_begin = split * tiles_per_split * BLOCK_V
    v_end = tl.minimum(v_begin + tiles_per_split * BLOCK_V, V)
    for v0 in range(v_begin, v_end, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        in_cols = cols < V
        cols64 = cols.to(tl.int64)
        z = tl.zeros((BLOCK_N, BLOCK_V), tl.float32)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            in_d = ds < D
            h = tl.load(
                h_ptr + rows64[:, None] * stride_hn + ds[None, :] * stride_hd,
                mask=in_rows[:, None] & in_d[None, :],
                other=0.0,
            )  # (BLOCK_N, BLOCK_D)
            w = tl.load(
                w_ptr + cols64[:, None] * stride_wv + ds[None, :] * stride_wd,
                mask=in_cols[:, None] & in_d[None, :],
                other=0.0,
            )  # (BLOCK_V, BLOCK_D)
            z += tl.dot(h.to(DOT_DTYPE), tl.trans(w.to(DOT_DTYPE)), input_precision="ieee")
        if HAS_BIAS:
            z += tl.load(b_ptr + cols64 * stride_b, mask=in_cols, other=0.0).to(tl.float32)[None, :]
        if HAS_SOFTCAP:
            z = softcap * _tanh(z / softcap)
        z = tl.where(in_cols[None, :], z, float("-inf"))  # columns past V take no part
        tile_max = tl.max(z, axis=1)
        tile_arg = tl.argmax(z, axis=1, tie_break_left=True)  # first maximum within the tile
        better = tile_max > best_val  # strictly: an equal maximum in a later tile has a higher id
        best_idx = tl.where(better, v0 + tile_arg.to(tl.int64), best_idx)
        best_val = tl.where(better, tile_max, best_val)
        new_max = tl.maximum(run_max, tile_max)
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(z - new_max[:, None]), axis=1)
        run_max = new_max
        t_logit += tl.sum(tl.where(cols64[None, :] == target[:, None], z, 0.0), axis=1)
    out = rows64 * S + split
    plane = N * S
    tl.store(part_ptr + out, run_max, mask=in_rows)
    tl.store(part_ptr + plane + out, run_sum, mask=in_rows)
    tl.store(part_ptr + 2 * plane + out, best_val, mask=in_rows)
    tl.store(part_ptr + 3 * plane + out, t_logit, mask=in_rows)
    tl.store(idx_ptr + out, best_idx, mask=in_rows)


def _config(h: torch.Tensor, w: torch.Tensor, N: int) -> dict:
    interp = interpreting()
    same16 = h.dtype == w.dtype and h.dtype in (torch.float16, torch.bfloat16)
    if same16 and not (interp and h.dtype == torch.bfloat16):
        dot = tl.float16 if h.dtype == torch.float16 else tl.bfloat16
    else:
        dot = tl.float32
    if interp:  # numpy runs programs one by one: small tiles so the tests cover ragged edges cheaply
        return {"DOT_DTYPE": dot, "BLOCK_N": 16, "BLOCK_V": 32, "BLOCK_D": 16}
    block_n = 16 if N <= 16 else 32 if N <= 32 else 64
    block_d = 64 if dot != tl.float32 else 32
    return {"DOT_DTYPE": dot, "BLOCK_N": block_n, "BLOCK_V": 128, "BLOCK_D": block_d, "num_warps": 4, "num_stages": 3}


def _programs_wanted(device: torch.device) -> int:
    """Programs to launch so every SM has a few; under the interpreter, enough to exercise the splits."""
    if interpreting() or device.type != "cuda":
        return 3
    return 4 * torch.cuda.get_device_properties(device).multi_processor_count


@token_logprobs.impl("triton", devices=triton_devices(), available=triton_status)
@torch.no_grad()
def token_logprobs_triton(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    check_token_logprobs_args(hidden, weight, targets, bias, chunk_size)
    N, D = hidden.shape
    V = weight.shape[0]
    device = hidden.device
    if N == 0:
        return torch.empty(0, dtype=torch.float32, device=device), torch.empty(0, dtype=torch.int64, device=device)
    cfg = _config(hidden, weight, N)
    row_blocks = triton.cdiv(N, cfg["BLOCK_N"])
    tiles = triton.cdiv(V, cfg["BLOCK_V"])
    tiles_per_split = max(1, triton.cdiv(tiles, triton.cdiv(_programs_wanted(device), row_blocks)))
    S = triton.cdiv(tiles, tiles_per_split)  # every split has at least one tile
    part = torch.empty(4, N, S, dtype=torch.float32, device=device)
    idx = torch.empty(N, S, dtype=torch.int64, device=device)
    targets = targets.to(device=device, dtype=torch.int64)
    _token_logprobs_kernel[(row_blocks, S)](
        hidden,
        weight,
        bias if bias is not None else part,  # any pointer: never read without HAS_BIAS
        targets,
        part,
        idx,
        N,
        V,
        D,
        S,
        hidden.stride(0),
        hidden.stride(1),
        weight.stride(0),
        weight.stride(1),
        bias.stride(0) if bias is not None else 0,
        tiles_per_split,
        float(softcap) if softcap else 1.0,
        HAS_BIAS=bias is not None,
        HAS_SOFTCAP=bool(softcap),
        **cfg,
    )
    run_max, run_sum, best_val, t_logit = part.unbind(0)  # each (N, S)
    top = run_max.max(dim=1, keepdim=True).values  # (N, 1)
    lse = top.squeeze(1) + torch.log((run_sum * torch.exp(run_max - top)).sum(dim=1))
    logprob = t_logit.sum(dim=1) - lse
    which = best_val.argmax(dim=1, keepdim=True)  # first split holding the maximum: the lowest id
    argmax = idx.gather(1, which).squeeze(1)
    return logprob, argmax
