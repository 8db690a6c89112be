"""The only place that registers torch hooks.

Every helper is a context manager that removes all of its hooks on exit, also when the
body raises: a hook left behind would silently change every later forward pass.

Sites are the adapters' canonical names, e.g. "layers.6.mlp.down.in" (the key k),
"layers.6.mlp.down.out" (the value W k), "layers.6.out" (the residual after block 6).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from golden_fast.models.adapters import ModelAdapter


class StopForward(Exception):
    """Raised inside a forward pass to end it early (see `stop_after`)."""


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def _replace_first(x, new):
    return (new, *x[1:]) if isinstance(x, tuple) else new


class Capture(dict):
    """site name -> captured tensor; `grads` holds d loss / d tensor after backward."""

    def __init__(self):
        super().__init__()
        self.grads: dict[str, torch.Tensor] = {}


@contextlib.contextmanager
def capture(
    adapter: ModelAdapter, sites: Sequence[str], detach: bool = True, grads: bool = False
) -> Iterator[Capture]:
    """Record the tensor at each site during the forward passes run inside the block.

    detach=False keeps the autograd graph (for losses built on captured tensors);
    grads=True also records the gradient flowing back into each site's tensor (the
    forward must run with grad enabled). A second forward overwrites the first's tensors.
    """
    cap = Capture()
    handles: list = []
    try:
        for site in sites:
            module, where = adapter.site(site)

            def store(t: torch.Tensor, site: str = site) -> None:
                cap[site] = t.detach() if detach else t
                if grads and t.requires_grad:
                    t.register_hook(lambda g, site=site: cap.grads.__setitem__(site, g.detach()))

            if where == "in":
                handles.append(module.register_forward_pre_hook(lambda m, args, f=store: f(_first(args))))
            else:
                handles.append(module.register_forward_hook(lambda m, args, out, f=store: f(_first(out))))
        yield cap
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def edit_site(adapter: ModelAdapter, site: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Replace the site's tensor by fn(tensor) in every forward pass inside the block."""
    module, where = adapter.site(site)
    if where == "in":
        handle = module.register_forward_pre_hook(
            lambda m, args: (fn(args[0]), *args[1:]) if isinstance(args, tuple) else fn(args)
        )
    else:
        handle = module.register_forward_hook(lambda m, args, out: _replace_first(out, fn(_first(out))))
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def edit_module_output(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Like edit_site for any module (e.g. the embeddings, for causal tracing's noise)."""
    handle = module.register_forward_hook(lambda m, args, out: _replace_first(out, fn(_first(out))))
    try:
        yield
    finally:
        handle.remove()


def _positions(rows, cols, device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.as_tensor(rows, dtype=torch.long, device=device).reshape(-1)
    cols = torch.as_tensor(cols, dtype=torch.long, device=device).reshape(-1)
    if rows.shape != cols.shape:
        raise ValueError(f"rows {tuple(rows.shape)} and cols {tuple(cols.shape)} differ in length")
    return rows, cols


@contextlib.contextmanager
def patch(
    adapter: ModelAdapter,
    site: str,
    rows: Sequence[int] | torch.Tensor,
    cols: Sequence[int] | torch.Tensor,
    value: torch.Tensor,
    mode: str = "add",
) -> Iterator[None]:
    """At the (row, col) token positions of the site's (B, T, width) tensor, add `value`
    (mode="add") or write it (mode="replace"). value: (width,) or (P, width), P = len(rows).
    Nothing else is touched; gradients flow into `value` (ROME's delta is optimised so).
    """
    if mode not in ("add", "replace"):
        raise ValueError(f"mode must be 'add' or 'replace', not {mode!r}")

    def fn(t: torch.Tensor) -> torch.Tensor:
        r, c = _positions(rows, cols, t.device)
        v = value.to(device=t.device, dtype=t.dtype)  # a placed model computes the site where its layer lives
        if v.dim() == 1:
            v = v.expand(r.numel(), -1)
        if mode == "add":
            return t.index_put((r, c), t[r, c] + v)
        return t.index_put((r, c), v)

    with edit_site(adapter, site, fn):
        yield


@contextlib.contextmanager
def stop_after(adapter: ModelAdapter, layer: int) -> Iterator[None]:
    """End the forward pass once block `layer` has run (raises StopForward out of the model
    call: use `run_until` or catch it). Saves every layer above when only keys are needed."""

    def stop(m, args, out):
        raise StopForward

    handle = adapter.block(layer).register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()


def run_until(model: nn.Module, adapter: ModelAdapter, layer: int, **inputs) -> None:
    """Run the model on `inputs` up to and including block `layer`, then stop."""
    with stop_after(adapter, layer):
        try:
            model(**inputs, use_cache=False)
        except StopForward:
            pass


def n_hooks(model: nn.Module) -> int:
    """How many forward / pre-forward / backward hooks are registered on the model's modules."""
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
    return total


@contextlib.contextmanager
def layers_from(adapter: ModelAdapter, layer: int) -> Iterator[nn.Module]:
    """Temporarily make the body run blocks `layer`.. only, taking `inputs_embeds` as the
    residual stream entering block `layer` (absolute position embeddings silenced).

    Re-runs only the top of the network when nothing below `layer` changes (the v*
    optimisation). Attention modules keep their layer index, so a KV cache from a full pass
    serves them. Yields the body; restores the blocks and removes the hook on exit.
    """
    adapter.block(layer)  # range check
    parent, attr = adapter.layer_list_owner()
    full = getattr(parent, attr)
    pe = adapter.position_embeddings()
    handle = pe.register_forward_hook(lambda m, a, out: torch.zeros_like(out)) if pe is not None else None
    # bodies with per-layer attention types index config.layer_types by loop position
    model_config = getattr(adapter.model, "config", None)
    types = getattr(model_config, "layer_types", None)
    setattr(parent, attr, nn.ModuleList(list(full)[layer:]))
    if isinstance(types, list):
        model_config.layer_types = types[layer:]
    try:
        yield adapter.body()
    finally:
        setattr(parent, attr, full)
        if isinstance(types, list):
            model_config.layer_types = types
        if handle is not None:
            handle.remove()
