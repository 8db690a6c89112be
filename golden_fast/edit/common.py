"""What the Editor and every editing method share: the apply callback a method writes its
updates through, the per-request trace it returns, and the error it raises.

Kept apart from `golden_fast.edit.base` (which dispatches a method name to rome.py / memit.py) so
that the methods can import these without importing the dispatcher that imports them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["ApplyFn", "EditError", "RequestTrace"]

# apply(layer, U (d, n), V (m, n)): W_layer += U @ V.T, taking effect immediately
ApplyFn = Callable[[int, torch.Tensor, torch.Tensor], None]


class EditError(RuntimeError):
    """An edit could not be made; the message names the request."""


@dataclasses.dataclass
class RequestTrace:
    index: int
    loss_curve: list[float] = dataclasses.field(default_factory=list)
    update_norm: float = 0.0
    condition: float | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    # vectors of the closed form (k*, v*, z, ...), kept for inspection and for the tests
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
