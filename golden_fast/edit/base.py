"""`run_method`, the one entry point the Editor calls: a method name to its registered editor.

The types every method shares (ApplyFn, EditError, RequestTrace) live in
`golden_fast.edit.common`; they are re-exported here for the callers that import them from here."""

from __future__ import annotations

from golden_fast.edit.common import ApplyFn, EditError, RequestTrace
from golden_fast.edit.config import preset
from golden_fast.edit.registry import get_editor

__all__ = ["ApplyFn", "EditError", "RequestTrace", "default_hparams", "run_method"]


def run_method(
    method: str,
    model,
    tok,
    requests: list,
    hparams,
    stats,
    apply: ApplyFn,
    progress: bool = True,
    state: dict | None = None,
) -> list[RequestTrace]:
    """Compute the updates of `requests` on the model's current weights and apply them, with the
    registered editor called `method` (`golden_fast.edit.registry`).

    Single editors (ROME, R-ROME): one rank-one update per request, all computed on the weights
    as they are at the call (the caller makes it sequential by calling once per request).
    Batch editors (MEMIT, EMMET, ...): one update solved for the whole batch.
    Stateful editors (`EditorSpec.stateful`) read and update `state` in place of the dict.
    """
    spec = get_editor(method)
    if spec.stateful:
        if state is None:
            raise ValueError(f"{spec.name} keeps state across calls: pass state= (a dict, {{}} to start)")
        return spec.run(model, tok, requests, hparams, stats, apply, progress=progress, state=state)
    return spec.run(model, tok, requests, hparams, stats, apply, progress=progress)


def default_hparams(method: str, model_name: str | None = None):
    """The preset hyperparameters of `method` for `model_name` (the method's defaults without one)."""
    return preset(method, model_name)
