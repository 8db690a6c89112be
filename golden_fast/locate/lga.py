"""LGA, Layer Gradient Analysis (Datta, Liu, Chhabra 2026, arXiv 2602.20207; SPEC §4).

For each proxy request i with old answer K_i and new target K'_i, on the unedited model,

    S_l = sum_i < grad_{theta_l} loss(Q_i + K_i) , grad_{theta_l} loss(Q_i + K'_i) >

The weight gradients are never formed. For a linear map v = W k applied at tokens t,
grad_W = sum_t g_t k_tᵀ (g_t = d loss / d v_t), so the inner product of two gradients is

    sum_{t in a} sum_{s in b} (g_t . g_s) (k_t . k_s)

the op `grad_inner` (golden_fast/ops/grad_inner.py; a Triton kernel takes over on GPU). One
forward and one backward per batch for the old answers, one for the new answers; hooks
(golden_fast.hooks.capture) record each map's inputs k_t and output gradients g_t. No parameter
takes part in autograd: gradients enter at the input of the lowest candidate layer, so no weight
gradient is ever allocated, and nothing below that layer is differentiated.

theta (ours: the paper says "layer parameters"):
- "down" (default): the down-projection weight W (d x m) of layer l (SPEC's choice).
- "mlp": every parameter of the MLP module (gate/up/down or c_fc/c_proj, with biases).
- "block": every parameter of the decoder block (attention, MLP, norms).
Linear maps (nn.Linear, GPT-2's Conv1D) take the Gram route; a bias contributes (sum_t g_t) .
(sum_s g_s); any other parameterised module (RMSNorm / LayerNorm scales, Gemma-3's q/k norms)
gets its per-sample gradient from a vector-Jacobian product through that module alone, from the
same captured input and output gradient: a vector of its own size (d), never a matrix.

Variants, from the same Gram products at no extra cost (a_i, b_i: old / new gradient of sample i):
- "signed": S_l = sum_i <a_i, b_i> (the paper's).
- "cosine": mean_i <a_i, b_i> / (|a_i| |b_i|).
- "new_norm": mean_i |b_i| (the size of the edit direction alone).
Which tracks the brute-force golden layer best is measured (bench/locate_compare.py), not assumed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from golden_fast.hooks import capture, edit_site
from golden_fast.models import get_adapter
from golden_fast.ops.grad_inner import grad_inner
from golden_fast.tokens import encode_batch, target_span

__all__ = ["LGAConfig", "THETAS", "VARIANTS", "lga", "lga_inner_products"]

THETAS = ("down", "mlp", "block")
VARIANTS = ("signed", "cosine", "new_norm")
LOSS_SPANS = ("answer", "sequence")
LOSS_REDUCTIONS = ("mean", "sum")
OLD_ANSWERS = ("data", "greedy", "auto")


@dataclasses.dataclass(frozen=True)
class LGAConfig:
    """Options of LGA (defaults: SPEC §4; those marked "ours" are where the paper is silent).

    Args:
        theta: "down" | "mlp" | "block": whose gradient (ours; default the down-projection).
        loss_span: "answer" (cross-entropy over the answer tokens only, default) or "sequence"
            (every next-token prediction of prompt + answer). Ours.
        loss_reduction: "mean" over the span's tokens (default) or "sum". Ours.
        old_answer: "data" (the record's ground_truth, an error when missing), "greedy" (the
            model's own greedy continuation of the prompt) or "auto" (data when present).
        greedy_tokens: tokens of a greedy answer; None: as many as the new target has.
        variant: the score the layer is chosen on: "signed" (paper), "cosine", "new_norm".
        tukey_k: Tukey fence factor k (1.0, the paper's); None: no filter.
        top_k: how many layers to return (multi-layer editors).
        batch_size: requests per forward/backward pass.
        checkpoint: recompute each block during backward (activation checkpointing, Hugging Face
            blocks only) instead of keeping its activations: peak memory drops to the block inputs
            plus one block's activations, for one more forward pass. Ours.
    """

    theta: str = "down"
    loss_span: str = "answer"
    loss_reduction: str = "mean"
    old_answer: str = "data"
    greedy_tokens: int | None = None
    variant: str = "signed"
    tukey_k: float | None = 1.0
    top_k: int = 1
    batch_size: int = 8
    checkpoint: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (
            ("theta", THETAS),
            ("loss_span", LOSS_SPANS),
            ("loss_reduction", LOSS_REDUCTIONS),
            ("old_answer", OLD_ANSWERS),
            ("variant", VARIANTS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"LGAConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.greedy_tokens is not None and int(self.greedy_tokens) < 1:
            raise ValueError(f"LGAConfig.greedy_tokens must be >= 1 or None, got {self.greedy_tokens!r}")
        if self.tukey_k is not None and not (math.isfinite(self.tukey_k) and self.tukey_k >= 0):
            raise ValueError(f"LGAConfig.tukey_k must be >= 0 or None, got {self.tukey_k!r}")
        if int(self.top_k) < 1 or int(self.batch_size) < 1:
            raise ValueError(f"LGAConfig.top_k and batch_size must be >= 1, got {self.top_k}, {self.batch_size}")


# ---- which parameters, which hook sites ---------------------------------------------------------


def _is_linear(module: nn.Module) -> bool:
    # GPT-2's Conv1D stores W as (in x out) and computes x @ W + b: the same Gram identity holds
    return isinstance(module, nn.Linear) or (type(module).__name__ == "Conv1D" and module.weight.dim() == 2)


@dataclasses.dataclass(frozen=True)
class _Part:
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

    def __init__(self, parts: Sequence[_Part]):
        self._by = {p.site_in: (p.module, "in") for p in parts} | {p.site_out: (p.module, "out") for p in parts}

    def site(self, name: str) -> tuple[nn.Module, str]:
        return self._by[name]


def _parts(adapter, layer: int, theta: str) -> list[_Part]:
    if theta == "down":
        down = adapter.down_proj(layer)
        if not _is_linear(down):
            raise TypeError(f"layer {layer}: the down-projection is a {type(down).__name__}, not a linear map")
        return [_Part(layer, "down", down, "linear_weight")]  # SPEC: the weight only
    root = adapter.mlp(layer) if theta == "mlp" else adapter.block(layer)
    parts: list[_Part] = []
    for path, module in root.named_modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        if _is_linear(module):
            extra = [n for n, _ in module.named_parameters(recurse=False) if n not in ("weight", "bias")]
            if extra:
                raise NotImplementedError(f"layer {layer}: linear module {path!r} has extra parameters {extra}")
            parts.append(_Part(layer, path, module, "linear"))
        elif any(True for _ in module.children()):
            names = [n for n, _ in module.named_parameters(recurse=False)]
            raise NotImplementedError(
                f"layer {layer}: module {path or type(module).__name__!r} holds parameters {names} next to "
                "submodules; LGA's theta='{theta}' handles linear maps and parameterised leaf modules only"
            )
        else:
            parts.append(_Part(layer, path, module, "vjp"))
    covered = {id(p) for part in parts for p in part.module.parameters(recurse=False)}
    missing = [n for n, p in root.named_parameters() if id(p) not in covered]
    if missing:  # cannot happen with the rules above; a guard against silently ignoring weights
        raise NotImplementedError(f"layer {layer}: parameters not covered by LGA's theta={theta!r}: {missing}")
    return parts


# ---- forward / backward passes --------------------------------------------------------------------


@contextlib.contextmanager
def _no_param_grads(model: nn.Module) -> Iterator[None]:
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
class _Seq:
    """One scored sequence: its input ids and the positions (in the unpadded ids) whose next-token
    prediction enters the loss, with the tokens they must predict."""

    ids: list[int]
    positions: list[int]
    targets: list[int]


def _sequence(ids: list[int], start: int, end: int, span: str) -> _Seq:
    # ids[j] is predicted at position j - 1; the last token is never read, so it is not an input
    first = start if span == "answer" else 1
    pos = list(range(first - 1, end - 1))
    return _Seq(list(ids[: end - 1]), pos, [ids[j + 1] for j in pos])


class _Captured(dict):
    """part -> (k (B, T, m), g (B, T, d)) for linear parts, (per-sample gradient (B, P)) for others."""


def _grad_pass(
    model: nn.Module, adapter, tok, seqs: Sequence[_Seq], parts: Sequence[_Part], low: int, cfg: LGAConfig
) -> tuple[_Captured, list[float]]:
    """One forward and one backward over `seqs`; returns the captured per-part tensors and the loss
    of each sequence."""
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
    recompute = _recompute_blocks(adapter, low) if cfg.checkpoint else contextlib.nullcontext()
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
        if cfg.loss_reduction == "mean":
            per_seq = per_seq / torch.tensor([len(s.positions) for s in seqs], dtype=nll.dtype, device=device)
        # samples are independent rows: the gradient of the sum is each sample's own gradient
        per_seq.sum().backward()
    mask = batch.attention_mask.to(torch.bool)  # (B, T): zero rows at padding, as grad_inner expects
    out = _Captured()
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


def _inner(a: Any, b: Any, kind: str) -> torch.Tensor:
    """<grad a, grad b> per sample (B,) float32, for one part."""
    if kind == "vjp":
        return (a * b).sum(-1)
    ka, ga, ba = a
    kb, gb, bb = b
    out = grad_inner(ka[None], ga[None], kb[None], gb[None])[0]  # (B,)
    if ba is not None:
        out = out + (ba * bb).sum(-1)
    return out


# ---- answers -----------------------------------------------------------------------------------


@torch.no_grad()
def _greedy(model: nn.Module, adapter, tok, prompts: Sequence[list[int]], n_tokens: Sequence[int]) -> list[list[int]]:
    """The model's greedy continuation of each prompt (token ids, n_tokens[i] of them)."""
    device = adapter.lm_head().weight.device
    seqs = [list(p) for p in prompts]
    todo = list(range(len(seqs)))
    for step in range(max(n_tokens)):
        todo = [i for i in todo if step < n_tokens[i]]
        if not todo:
            break
        batch = encode_batch(tok, [seqs[i] for i in todo]).to(device)
        hidden = adapter.body()(**batch.model_inputs(), use_cache=False).last_hidden_state[:, -1]
        logits = adapter.lm_head()(hidden).float()
        for i, t in zip(todo, logits.argmax(-1).tolist()):
            seqs[i].append(int(t))
    return [s[len(p) :] for s, p in zip(seqs, prompts)]


def _answer_spans(model, adapter, tok, requests, cfg: LGAConfig) -> tuple[list[_Seq], list[_Seq], list[str]]:
    """(old sequences, new sequences, where each old answer came from)."""
    new_seqs, old_seqs, sources = [], [], []
    n_new: list[int] = []  # answer tokens of each new target: the default length of a greedy answer
    need_greedy: list[int] = []
    for i, req in enumerate(requests):
        if req.target_new is None:
            raise ValueError(f"{req.ref}: field 'target_new' is missing; LGA needs the new answer")
        try:
            sp = target_span(tok, req.text, req.target_new)
        except ValueError as exc:
            raise ValueError(f"{req.ref}: field 'target_new': {exc}") from None
        new_seqs.append(_sequence(sp.ids, sp.start, sp.end, cfg.loss_span))
        n_new.append(sp.end - sp.start)
        use_data = cfg.old_answer == "data" or (cfg.old_answer == "auto" and req.ground_truth is not None)
        if not use_data:
            old_seqs.append(None)
            need_greedy.append(i)
            sources.append("greedy")
            continue
        if req.ground_truth is None:
            raise ValueError(
                f"{req.ref}: field 'ground_truth' is missing; LGA's old answer comes from the data "
                "(old_answer='data'); use old_answer='greedy' or 'auto' to take the model's own answer"
            )
        try:
            so = target_span(tok, req.text, req.ground_truth)
        except ValueError as exc:
            raise ValueError(f"{req.ref}: field 'ground_truth': {exc}") from None
        old_seqs.append(_sequence(so.ids, so.start, so.end, cfg.loss_span))
        sources.append("data")
    if need_greedy:
        prompts = [list(tok(requests[i].text)["input_ids"]) for i in need_greedy]
        counts = [cfg.greedy_tokens or n_new[i] for i in need_greedy]
        for i, p, ans in zip(need_greedy, prompts, _greedy(model, adapter, tok, prompts, counts)):
            ids = p + ans
            old_seqs[i] = _sequence(ids, len(p), len(ids), cfg.loss_span)
    return old_seqs, new_seqs, sources


# ---- the method ----------------------------------------------------------------------------------


def lga_inner_products(
    model: nn.Module,
    tokenizer: Any,
    requests: Sequence[Any],
    layers: Sequence[int] | None = None,
    config: LGAConfig | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Per-sample, per-layer <a, b>, <a, a>, <b, b> (float64 arrays (n, L)) and the run's details.

    a = gradient for the old answer, b = for the new one, w.r.t. theta_l. This is everything the
    variants need; `lga` turns it into scores and a choice.
    """
    cfg = config or LGAConfig()
    adapter = get_adapter(model)
    layers = list(range(adapter.n_layers)) if layers is None else [int(x) for x in layers]
    if not layers:
        raise ValueError("LGA: no candidate layer")
    if len(set(layers)) != len(layers):
        raise ValueError(f"LGA: duplicate layers in {layers}")
    for layer in layers:
        adapter.block(layer)  # range check with a clear message
    requests = list(requests)
    if not requests:
        raise ValueError("LGA: no proxy request")
    parts = {layer: _parts(adapter, layer, cfg.theta) for layer in layers}
    flat = [p for layer in layers for p in parts[layer]]
    low = min(layers)
    n, L = len(requests), len(layers)
    ab, aa, bb = (np.zeros((n, L)) for _ in range(3))
    losses = {"old": [0.0] * n, "new": [0.0] * n}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"LGA ({cfg.theta})", unit="fact")
    with _no_param_grads(model):
        old_seqs, new_seqs, sources = _answer_spans(model, adapter, tokenizer, requests, cfg)
        for lo in range(0, n, cfg.batch_size):
            idx = list(range(lo, min(n, lo + cfg.batch_size)))
            cap_a, loss_a = _grad_pass(model, adapter, tokenizer, [old_seqs[i] for i in idx], flat, low, cfg)
            cap_b, loss_b = _grad_pass(model, adapter, tokenizer, [new_seqs[i] for i in idx], flat, low, cfg)
            for j, layer in enumerate(layers):
                s_ab = s_aa = s_bb = 0.0
                for p in parts[layer]:
                    s_ab = s_ab + _inner(cap_a[p], cap_b[p], p.kind)
                    s_aa = s_aa + _inner(cap_a[p], cap_a[p], p.kind)
                    s_bb = s_bb + _inner(cap_b[p], cap_b[p], p.kind)
                ab[idx, j] = s_ab.double().cpu().numpy()
                aa[idx, j] = s_aa.double().cpu().numpy()
                bb[idx, j] = s_bb.double().cpu().numpy()
            for k, i in enumerate(idx):
                losses["old"][i], losses["new"][i] = loss_a[k], loss_b[k]
            del cap_a, cap_b
            if bar is not None:
                bar.update(len(idx))
    if bar is not None:
        bar.close()
    for name, arr in (("<a,b>", ab), ("<a,a>", aa), ("<b,b>", bb)):
        if not np.isfinite(arr).all():
            i, j = np.argwhere(~np.isfinite(arr))[0]
            raise FloatingPointError(f"LGA: non-finite {name} for {requests[i].ref} at layer {layers[j]}")
    return {"layers": layers, "ab": ab, "aa": aa, "bb": bb, "old_answer_source": sources, "loss": losses}


def variant_scores(
    ab: np.ndarray, aa: np.ndarray, bb: np.ndarray, requests: Sequence[Any], layers: Sequence[int]
) -> dict[str, np.ndarray]:
    """Per-layer scores of every variant from the per-sample products (n, L)."""
    denom = np.sqrt(aa * bb)
    if (denom <= 0).any():
        i, j = np.argwhere(denom <= 0)[0]
        raise FloatingPointError(
            f"LGA: zero gradient for {requests[i].ref} at layer {layers[j]} (<a,a> = {aa[i, j]:.3g}, "
            f"<b,b> = {bb[i, j]:.3g}); the cosine variant is undefined"
        )
    return {
        "signed": ab.sum(0),
        "cosine": (ab / denom).mean(0),
        "new_norm": np.sqrt(bb).mean(0),
    }


def lga(
    model: nn.Module,
    tokenizer: Any,
    requests: Sequence[Any],
    layers: Sequence[int] | None = None,
    config: LGAConfig | None = None,
    progress: bool = False,
):
    """Run LGA and choose a layer; returns `LayerScores` (every variant in `.variants`, per-sample
    products in `.extra`)."""
    from golden_fast.locate.scores import LayerScores

    cfg = config or LGAConfig()
    t0 = time.perf_counter()
    res = lga_inner_products(model, tokenizer, requests, layers, cfg, progress=progress)
    variants = variant_scores(res["ab"], res["aa"], res["bb"], list(requests), res["layers"])
    wall = time.perf_counter() - t0
    extra = {
        "per_sample": {"ab": res["ab"], "aa": res["aa"], "bb": res["bb"]},
        "old_answer_source": res["old_answer_source"],
        "loss": res["loss"],
        "requests": [_ref(r) for r in requests],
        "seconds_per_request": wall / len(res["ab"]),
    }
    return LayerScores.build(
        "lga",
        res["layers"],
        variants,
        cfg.variant,
        tukey_k=cfg.tukey_k,
        top_k=cfg.top_k,
        wall_time=wall,
        settings=dataclasses.asdict(cfg),
        n_requests=len(res["ab"]),
        n_used=len(res["ab"]),
        extra=extra,
    )


def _ref(req: Any) -> dict[str, Any]:
    return {
        "index": getattr(req, "index", None),
        "case_id": getattr(req, "case_id", None),
        "subject": getattr(req, "subject", None),
    }
