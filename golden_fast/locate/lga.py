"""LGA, Layer Gradient Analysis (Datta, Liu, Chhabra 2026, arXiv 2602.20207; FORMULAS.md, section "LGA").

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
- "down" (default): the down-projection weight W (d x m) of layer l, without its bias (the
  matrix the editors change).
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

Under torchrun (golden_fast.distributed, `data_parallel=True`: every rank calls with the same
requests) each rank takes every world-th request (`distributed.shard`); the per-sample products
and losses are added up over the ranks once, at the end (each sample's row comes from one rank,
zeros from the others), so every rank scores the same products and chooses the same layer.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from golden_fast import distributed
from golden_fast.gradients import Seq, grad_pass, no_param_grads, parts_of, scored_sequence
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
    """Options of LGA (defaults: FORMULAS.md, section "LGA"; those marked "ours" are where the paper
    is silent).

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


def _answer_spans(
    model, adapter, tok, requests, config: LGAConfig, decode: set[int] | None = None
) -> tuple[list[Seq], list[Seq], list[str]]:
    """(old sequences, new sequences, where each old answer came from).

    Every request is checked (an error is raised on every rank alike); greedy answers are decoded
    only for the requests in `decode` (default: all), the others' old sequences are left None.
    """
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
        new_seqs.append(scored_sequence(sp.ids, sp.start, sp.end, config.loss_span))
        n_new.append(sp.end - sp.start)
        use_data = config.old_answer == "data" or (config.old_answer == "auto" and req.ground_truth is not None)
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
        old_seqs.append(scored_sequence(so.ids, so.start, so.end, config.loss_span))
        sources.append("data")
    if decode is not None:
        need_greedy = [i for i in need_greedy if i in decode]
    if need_greedy:
        prompts = [list(tok(requests[i].text)["input_ids"]) for i in need_greedy]
        counts = [config.greedy_tokens or n_new[i] for i in need_greedy]
        for i, p, ans in zip(need_greedy, prompts, _greedy(model, adapter, tok, prompts, counts)):
            ids = p + ans
            old_seqs[i] = scored_sequence(ids, len(p), len(ids), config.loss_span)
    return old_seqs, new_seqs, sources


# ---- the method ----------------------------------------------------------------------------------


def lga_inner_products(
    model: nn.Module,
    tok: Any,
    requests: Sequence[Any],
    layers: Sequence[int] | None = None,
    config: LGAConfig | None = None,
    progress: bool = False,
    data_parallel: bool = True,
) -> dict[str, Any]:
    """Per-sample, per-layer <a, b>, <a, a>, <b, b> (float64 arrays (n, L)) and the run's details.

    a = gradient for the old answer, b = for the new one, w.r.t. theta_l. This is everything the
    variants need; `lga` turns it into scores and a choice. data_parallel: under torchrun, split
    the requests across the ranks (every rank must call); False: this process does them all.
    """
    config = config or LGAConfig()
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
    parts = {layer: parts_of(adapter, layer, config.theta) for layer in layers}
    flat = [p for layer in layers for p in parts[layer]]
    low = min(layers)
    n, L = len(requests), len(layers)
    ab, aa, bb = (np.zeros((n, L)) for _ in range(3))
    losses = {"old": [0.0] * n, "new": [0.0] * n}
    split = data_parallel and distributed.active()
    mine = distributed.shard(n) if split else list(range(n))
    bar = None
    if distributed.progress_enabled(progress):
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), desc=f"LGA ({config.theta})", unit="fact")
    with no_param_grads(model):
        decode = set(mine) if split else None
        old_seqs, new_seqs, sources = _answer_spans(model, adapter, tok, requests, config, decode)
        for lo in range(0, len(mine), config.batch_size):
            idx = mine[lo : lo + config.batch_size]
            opts = dict(loss_reduction=config.loss_reduction, checkpoint=config.checkpoint)
            cap_a, loss_a = grad_pass(model, adapter, tok, [old_seqs[i] for i in idx], flat, low, **opts)
            cap_b, loss_b = grad_pass(model, adapter, tok, [new_seqs[i] for i in idx], flat, low, **opts)
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
    if split:
        _reduce_products(ab, aa, bb, losses)
    for name, arr in (("<a,b>", ab), ("<a,a>", aa), ("<b,b>", bb)):
        if not np.isfinite(arr).all():
            i, j = np.argwhere(~np.isfinite(arr))[0]
            raise FloatingPointError(f"LGA: non-finite {name} for {requests[i].ref} at layer {layers[j]}")
    return {"layers": layers, "ab": ab, "aa": aa, "bb": bb, "old_answer_source": sources, "loss": losses}


def _reduce_products(ab: np.ndarray, aa: np.ndarray, bb: np.ndarray, losses: dict[str, list[float]]) -> None:
    """Every rank's rows added into every rank's arrays (in place), in one all-reduce. A row is filled
    by one rank and zero on the others, so the sums are that rank's values exactly."""
    n = ab.shape[0]
    flat = np.concatenate([ab.ravel(), aa.ravel(), bb.ravel(), losses["old"], losses["new"]])
    total = distributed.all_reduce_sum(torch.from_numpy(flat)).numpy()
    k = ab.size
    for j, arr in enumerate((ab, aa, bb)):
        arr[...] = total[j * k : (j + 1) * k].reshape(arr.shape)
    losses["old"][:] = total[3 * k : 3 * k + n].tolist()
    losses["new"][:] = total[3 * k + n :].tolist()


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
    tok: Any,
    requests: Sequence[Any],
    layers: Sequence[int] | None = None,
    config: LGAConfig | None = None,
    progress: bool = False,
    data_parallel: bool = True,
):
    """Run LGA and choose a layer; returns `LayerScores` (every variant in `.variants`, per-sample
    products in `.extra`). data_parallel: as `lga_inner_products`."""
    from golden_fast.locate.scores import LayerScores

    config = config or LGAConfig()
    t0 = time.perf_counter()
    res = lga_inner_products(model, tok, requests, layers, config, progress=progress, data_parallel=data_parallel)
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
        config.variant,
        tukey_k=config.tukey_k,
        top_k=config.top_k,
        wall_time=wall,
        settings=dataclasses.asdict(config),
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
