"""What every editor shares: the per-request trace, the error type, the apply callback,
and `run_method`, the one entry point the Editor calls."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

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


def run_method(
    method: str,
    model,
    tok,
    requests: list,
    hparams,
    stats,
    apply: ApplyFn,
    progress: bool = True,
) -> list[RequestTrace]:
    """Compute the updates of `requests` on the model's current weights and apply them.

    rome / r-rome: one rank-one update per request, all computed on the weights as they
    are at the call (the caller makes it sequential by calling once per request).
    memit / emmet: one batched update spread over hparams.layers.
    """
    if method in ("rome", "r-rome"):
        from .rome import rome_updates

        return rome_updates(model, tok, requests, hparams, stats, apply, method=method, progress=progress)
    if method in ("memit", "emmet"):
        from .memit import mass_edit

        return mass_edit(model, tok, requests, hparams, stats, apply, method=method, progress=progress)
    raise ValueError(f"unknown method {method!r}; choose from rome, r-rome, memit, emmet")


def default_hparams(method: str, model_name: str | None = None):
    from .config import preset

    return preset(method, model_name)
