"""Absolute tolerances per dtype for assert_close_to_reference (the one table of them: changes need asking).

The rule is flash-attn's, max|out - truth| <= 2 * max|baseline - truth| + atol, so the main term is
relative to how far the same-dtype torch reference lands from the float64 truth; atol only covers
cases where that baseline happens to be (nearly) exact, and is about one unit in the last place of
a value of size 1 in the dtype (float32: 2^-23 ~ 1.2e-7, float16: 2^-10 ~ 1e-3, bfloat16: 2^-7).
"""

from __future__ import annotations

import torch

ATOL: dict[torch.dtype, float] = {
    torch.float64: 1e-12,
    torch.float32: 1e-6,
    torch.float16: 1e-3,
    torch.bfloat16: 8e-3,
}
