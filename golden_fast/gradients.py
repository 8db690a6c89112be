"""Per-layer inputs and output gradients of linear maps, from one forward and one backward pass.

For a linear map y = W k (+ b) applied at every token t, the gradient of a loss is
grad_W = sum_t g_t k_tᵀ with g_t = dloss/dy_t: capturing the inputs k_t and the output gradients
g_t is all that is needed to form inner products of weight gradients (LGA) or gradient-based
updates (UltraEdit), without ever materialising a weight gradient. `grad_pass` runs the forward
and backward with the parameters out of autograd (`no_param_grads`), hooks on the chosen modules
(`golden_fast.hooks.capture`), the loss on the scored positions only, and zeroes the padding rows.
Modules that are not linear maps get per-sample parameter gradients by a vector-Jacobian product.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from golden_fast.hooks import capture, edit_site
from golden_fast.tokens import encode_batch

__all__ = ["Captured", "Part", "Seq", "grad_pass", "is_linear", "no_param_grads", "parts_of", "scored_sequence"]


# ---- which parameters, which hook sites ---------------------------------------------------------


def is_linear(module: nn.Module) -> bool:
    # GPT-2's Conv1D stores W as (in x out) and computes x @ W + b: the same Gram identity holds
    return isinstance(module, nn.Linear) or (type(module).__name__ == "Conv1D" and module.weight.dim() == 2)


@dataclasses.dataclass(frozen=True)
class Part:
    """One parameterised module of theta_l: a linear map (Gram route, weight and maybe bias) or
    another module (per-sample VJP route, all its direct parameters)."""

    layer: int
    path: str  # inside the block ("" is the block itself)
    module: nn.Module
    kind: str  # "linear" | "linear_weight" | "vjp"

    @property
    def site_in(self) -> str:
        return f"{self.layer}|{self.path}|in"

    @property
    def site_out(self) -> str:
        return f"{self.layer}|{self.path}|out"


class _Sites:
    """Maps this module's site names to (module, "in" | "out") for `hooks.capture`, which only asks
    its adapter argument for `.site(name)`: the hooks stay registered by golden_fast.hooks."""

    def __init__(self, parts: Sequence[Part]):
        self._by = {p.site_in: (p.module, "in") for p in parts} | {p.site_out: (p.module, "out") for p in parts}

    def site(self, name: str) -> tuple[nn.Module, str]:
        return self._by[name]


def parts_of(adapter, layer: int, theta: str) -> list[Part]:
    if theta == "down":
        down = adapter.down_proj(layer)
        if not is_linear(down):
            raise TypeError(f"layer {layer}: the down-projection is a {type(down).__name__}, not a linear map")
        return [Part(layer, "down", down, "linear_weight")]  # the weight only, no bias
    root = adapter.mlp(layer) if theta == "mlp" else adapter.block(layer)
    parts: list[Part] = []
    for path, module in root.named_modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        if is_linear(module):
            extra = [n for n, _ in module.named_parameters(recurse=False) if n not in ("weight", "bias")]
            if extra:
                raise NotImplementedError(f"layer {layer}: linear module {path!r} has extra parameters {extra}")
            parts.append(Part(layer, path, module, "linear"))
        elif any(True for _ in module.children()):
            names = [n for n, _ in module.named_parameters(recurse=False)]
            raise NotImplementedError(
                f"layer {layer}: module {path or type(module).__name__!r} holds parameters {names} next to "
                "submodules; LGA's theta='{theta}' handles linear maps and parameterised leaf modules only"
            )
        else:
            parts.append(Part(layer, path, module, "vjp"))
    covered = {id(p) for part in parts for p in part.module.parameters(recurse=False)}
    missing = [n for n, p in root.named_parameters() if id(p) not in covered]
    if missing:  # cannot happen with the rules above; a guard against silently ignoring weights
        raise NotImplementedError(f"layer {layer}: parameters not covered by LGA's theta={theta!r}: {missing}")
    return parts


# ---- forward / backward passes --------------------------------------------------------------------


@contextlib.contextmanager
def no_param_grads(model: nn.Module) -> Iterator[None]:
    """Parameters out of autograd for the block: backward then computes activation gradients only,
    never a weight gradient (which is what LGA exists to avoid)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


_MISSING = object()


@contextlib.contextmanager
def _recompute_blocks(adapter, low: int) -> Iterator[None]:
    """Blocks low.. recompute their activations in backward (torch.utils.checkpoint, non-reentrant),
    through Hugging Face's own per-block switch (`GradientCheckpointingLayer`), set on the blocks
    alone: their submodules stay in eval mode (no dropout), and the model's settings are restored."""
    import functools

    from transformers.modeling_layers import GradientCheckpointingLayer

    blocks = [adapter.block(layer) for layer in range(low, adapter.n_layers)]
    if not all(isinstance(b, GradientCheckpointingLayer) for b in blocks):
        raise ValueError(f"LGA checkpoint=True: the {adapter.family} blocks do not support activation checkpointing")
    names = ("gradient_checkpointing", "_gradient_checkpointing_func")
    saved = [(b, b.training, [b.__dict__.get(n, _MISSING) for n in names]) for b in blocks]
    fn = functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)
    try:
        for b in blocks:
            b.gradient_checkpointing, b._gradient_checkpointing_func = True, fn
            b.training = True  # the switch reads the block's own flag; its children keep eval mode
        yield
    finally:
        for b, training, values in saved:
            b.training = training
            for n, v in zip(names, values):
                if v is _MISSING:
                    b.__dict__.pop(n, None)
                else:
                    setattr(b, n, v)


@dataclasses.dataclass
class Seq:
    """One scored sequence: its input ids and the positions (in the unpadded ids) whose next-token
    prediction enters the loss, with the tokens they must predict."""

    ids: list[int]
    positions: list[int]
    targets: list[int]


def scored_sequence(ids: list[int], start: int, end: int, span: str) -> Seq:
    # ids[j] is predicted at position j - 1; the last token is never read, so it is not an input
    first = start if span == "answer" else 1
    pos = list(range(first - 1, end - 1))
    return Seq(list(ids[: end - 1]), pos, [ids[j + 1] for j in pos])


class Captured(dict):
    """part -> (k (B, T, m), g (B, T, d)) for linear parts, (per-sample gradient (B, P)) for others."""


def grad_pass(
    model: nn.Module, adapter, tok, seqs: Sequence[Seq], parts: Sequence[Part], low: int, *,
    loss_reduction: str = "mean", checkpoint: bool = False,
) -> tuple[Captured, list[float]]:
    """One forward and one backward over `seqs`; returns the captured per-part tensors and the loss
    of each sequence (cross-entropy of its scored positions, their mean or sum: `loss_reduction`).
    Gradients enter at layer `low`'s input; `checkpoint` recomputes blocks low.. in backward."""
    device = adapter.lm_head().weight.device
    batch = encode_batch(tok, [s.ids for s in seqs]).to(device)
    B, T = batch.input_ids.shape
    rows, cols, tgt = [], [], []
    for b, s in enumerate(seqs):
        off = batch.offsets[b]
        rows += [b] * len(s.positions)
        cols += [off + p for p in s.positions]
        tgt += s.targets
    rows_t = torch.tensor(rows, device=device)
    cols_t = torch.tensor(cols, device=device)
    tgt_t = torch.tensor(tgt, device=device)
    sites = _Sites(parts)
    ins = [p.site_in for p in parts]
    outs = [p.site_out for p in parts]
    # gradients enter at the lowest candidate layer's input: a leaf that needs them
    enter = lambda t: t.detach().requires_grad_(True)  # noqa: E731
    recompute = _recompute_blocks(adapter, low) if checkpoint else contextlib.nullcontext()
    with (
        torch.enable_grad(),
        recompute,
        edit_site(adapter, f"layers.{low}.in", enter),
        capture(sites, ins, detach=True) as cap_in,
        capture(sites, outs, detach=True, grads=True) as cap_out,
    ):
        hidden = adapter.body()(**batch.model_inputs(), use_cache=False).last_hidden_state  # (B, T, d)
        h = hidden[rows_t, cols_t]  # (N, d): only the positions whose prediction is in the loss
        head = adapter.lm_head()
        logits = head(h).float()  # (N, V)
        cap = adapter.logit_softcap
        if cap:
            logits = torch.tanh(logits / cap) * cap
        nll = torch.nn.functional.cross_entropy(logits, tgt_t, reduction="none")  # (N,)
        per_seq = torch.zeros(B, dtype=nll.dtype, device=device).index_add(0, rows_t, nll)
        if loss_reduction == "mean":
            per_seq = per_seq / torch.tensor([len(s.positions) for s in seqs], dtype=nll.dtype, device=device)
        # samples are independent rows: the gradient of the sum is each sample's own gradient
        per_seq.sum().backward()
    mask = batch.attention_mask.to(torch.bool)  # (B, T): zero rows at padding, as grad_inner expects
    out = Captured()
    for p in parts:
        k = cap_in.get(p.site_in)
        g = cap_out.grads.get(p.site_out)
        if k is None or g is None:
            raise RuntimeError(
                f"LGA: no {'input' if k is None else 'gradient'} captured at layer {p.layer} "
                f"module {p.path!r}; is it used in the forward pass?"
            )
        if p.kind == "vjp":
            out[p] = _vjp_per_sample(p.module, k, g)
            continue
        if k.shape[:2] != (B, T) or g.shape[:2] != (B, T):
            raise RuntimeError(
                f"LGA: layer {p.layer} {p.path!r}: expected (B, T, width) tensors, got "
                f"{tuple(k.shape)} / {tuple(g.shape)}"
            )
        g.mul_(mask[..., None].to(g.dtype))  # in place: the captured gradient is ours alone
        bias = getattr(p.module, "bias", None) if p.kind == "linear" else None
        out[p] = (k, g, g.float().sum(1) if bias is not None else None)  # bias gradient: sum_t g_t (B, d)
    return out, per_seq.detach().tolist()


def _vjp_per_sample(module: nn.Module, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-sample gradient of the module's own parameters, flattened: (B, P). The module is run again
    on its captured input, one sample at a time, with fresh leaf copies of its parameters."""
    names = [n for n, _ in module.named_parameters(recurse=False)]
    rows = []
    for b in range(x.shape[0]):
        params = {n: getattr(module, n).detach().clone().requires_grad_(True) for n in names}
        with torch.enable_grad():
            y = torch.func.functional_call(module, params, (x[b : b + 1],))
            grads = torch.autograd.grad(y, list(params.values()), g[b : b + 1].to(y.dtype), allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (gr if gr is not None else torch.zeros_like(p)).reshape(-1).float()
                    for gr, p in zip(grads, params.values())
                ]
            )
        )
    return torch.stack(rows)  # (B, P)
