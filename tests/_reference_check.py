"""Comparisons against the reference (every op test checks its backends against it): flash-attn's
tolerance rule, and exact ulp counts.

assert_close_to_reference(out, truth, baseline)
    max|out - truth| <= 2 * max|baseline - truth| + atol: a backend may be at most twice as far from
    the float64 truth as the same-dtype torch reference is. On failure the message gives the first
    bad indices with their values and the max/mean errors of both (Liger, nanochat), so a failing
    run says where and by how much without a debugger.
ulp_distance(a, b), ulp(x)
    For exact properties ("rounded once", "within one ulp"): counts representable values between
    two tensors of the same dtype, from their bit patterns, with no tolerance involved.
"""

from __future__ import annotations

import torch
from _tolerances import ATOL

_INT_VIEW = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


def assert_close_to_reference(
    out: torch.Tensor,
    truth: torch.Tensor,
    baseline: torch.Tensor,
    atol: float | None = None,
    show: int = 8,
) -> None:
    """Assert max|out - truth| <= 2 * max|baseline - truth| + atol (atol from ATOL[out.dtype])."""
    assert out.shape == truth.shape == baseline.shape, (
        f"shapes differ: out {tuple(out.shape)}, truth {tuple(truth.shape)}, baseline {tuple(baseline.shape)}"
    )
    if atol is None:
        atol = ATOL[out.dtype]
    if out.numel() == 0:
        return
    o, t, b = (x.detach().to("cpu", torch.float64) for x in (out, truth, baseline))
    assert not (o.isnan() & ~t.isnan()).any(), (
        f"out has NaN where the truth has none: {o.isnan().nonzero()[:show]}"
    )
    err = (o - t).abs().nan_to_num(0.0)
    base_err = (b - t).abs().nan_to_num(0.0)
    bound = 2 * base_err.max().item() + atol
    if err.max().item() <= bound:
        return
    bad = (err > bound).nonzero()
    lines = [
        f"max|out-truth| = {err.max().item():.3e} > 2*max|baseline-truth| + atol = "
        f"2*{base_err.max().item():.3e} + {atol:.1e} = {bound:.3e} ({out.dtype}, shape {tuple(out.shape)})",
        f"out: mean err {err.mean().item():.3e}; baseline: mean err {base_err.mean().item():.3e}",
        f"{len(bad)} of {out.numel()} elements out of bounds; first {min(show, len(bad))}:",
    ]
    for idx in bad[:show].tolist():
        i = tuple(idx)
        lines.append(f"  {i}: out {o[i].item():.8g}, truth {t[i].item():.8g}, baseline {b[i].item():.8g}")
    raise AssertionError("\n".join(lines))


def _ordered_bits(x: torch.Tensor) -> torch.Tensor:
    # Sign-magnitude float bits -> integers ordered like the floats (+0 and -0 both map to 0), so the
    # difference of two keys is the number of representable steps between the values.
    bits = x.contiguous().view(_INT_VIEW[x.dtype]).to(torch.int64)
    magnitude_mask = (1 << 63) - 1 if x.dtype == torch.float64 else (1 << (8 * x.element_size() - 1)) - 1
    magnitude = bits & magnitude_mask
    return torch.where(bits < 0, -magnitude, magnitude)


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Number of representable values of a's dtype from a to b, elementwise (int64; 0: bitwise equal)."""
    assert a.dtype == b.dtype and a.dtype in _INT_VIEW, (a.dtype, b.dtype)
    return (_ordered_bits(a.cpu()) - _ordered_bits(b.cpu())).abs()


def ulp(x: torch.Tensor) -> torch.Tensor:
    """Spacing of x's dtype just above |x| (float64): one unit in the last place at x."""
    mag = x.detach().cpu().abs()
    up = (mag.contiguous().view(_INT_VIEW[x.dtype]) + 1).view(x.dtype)
    return up.double() - mag.double()
