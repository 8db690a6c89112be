"""CMA, causal tracing (Meng et al. 2022, ROME; FORMULAS.md, section "Causal tracing"), for every
architecture an adapter knows (ROME's code traces GPT-2, GPT-J and GPT-NeoX only).

For each request:
1. clean run: P_clean(answer) at the last prompt token, and the clean outputs of every layer's
   MLP (or attention, or residual: `kind`) at the restored token(s);
2. corrupted runs: Gaussian noise (sigma = `noise` x the std of subject-token embeddings) added to
   the embedding output at every subject token, `samples` noisy copies;
3. restored runs: the corrupted run with the clean outputs written back at the subject's last token
   for the layers of a window around l (ROME: layers l - 5 .. l + 4 for a window of 10).
IE(l) = mean over copies of P_restored - mean over copies of P_corrupted; the score of layer l is
its average over the proxy set, and G_CMA = argmax_l. ROME's `trace_with_patch` copies the clean
values from row 0 of the same batch; here they come from a separate clean pass (the same values),
so a batch can hold the copies of many layers and heatmap cells at once.

The answer is the first token of the record's ground truth (`answer="data"`, default) or the clean
model's own top token (`answer="greedy"`). With `skip_wrong` (default, ROME's rule) a request whose
clean top token is not the answer is skipped and counted.

Noise: the same `samples` noise draws (seeded) for every restoration of a request, as in ROME.
The std is taken over the embedding outputs of the subjects in `noise_subjects` (ROME: the
known_1000 subjects; special tokens such as BOS excluded, ours), default: known_1000 when the file
is found (`default_noise_subjects`), else the proxy requests' own subjects.

Under torchrun the requests are split across ranks and the per-request traces gathered back in
input order. sigma is measured over the same subjects on every rank (all proxy requests' when
those are the reference, not the rank's shard) and taken from rank 0, and the noise is seeded per
request, so every rank returns one process's result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from golden_fast import distributed
from golden_fast.hooks import capture, edit_module_output, layers_from, patch
from golden_fast.models import get_adapter
from golden_fast.tokens import fill, subject_last_token, target_span

__all__ = [
    "CMAConfig",
    "KINDS",
    "TraceResult",
    "causal_trace",
    "default_noise_subjects",
    "noise_std",
    "plot_heatmap",
    "trace_heatmap",
]

KINDS = ("mlp", "attn", "hidden")
_SITE = {"mlp": "mlp.out", "attn": "attn.out", "hidden": "out"}


@dataclasses.dataclass(frozen=True)
class CMAConfig:
    """Options of causal tracing (defaults: ROME's).

    Args:
        kind: what is restored: "mlp" outputs (default), "attn" outputs, or the "hidden" residual.
        window: layers restored around l (ROME: 10 for mlp/attn; use 1 for "hidden").
        samples: noisy copies per configuration (ROME: 10).
        noise: sigma = noise x std of subject-token embeddings (ROME: 3).
        noise_std: an absolute std instead (skips measuring it); sigma = noise x noise_std.
        answer: "data" (first token of ground_truth) or "greedy" (the clean top token).
        skip_wrong: skip requests whose clean top token is not the answer (ROME), counting them.
        seed: seed of the noise draws (the same draws for every restoration of a request).
        batch_rows: most rows per corrupted forward pass.
        tukey_k: outlier filter before the argmax (None, the default: ROME takes the plain argmax).
        top_k: layers returned.
    """

    kind: str = "mlp"
    window: int = 10
    samples: int = 10
    noise: float = 3.0
    noise_std: float | None = None
    answer: str = "data"
    skip_wrong: bool = True
    seed: int = 1
    batch_rows: int = 128
    tukey_k: float | None = None
    top_k: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"CMAConfig.kind must be one of {KINDS}, got {self.kind!r}")
        if self.answer not in ("data", "greedy"):
            raise ValueError(f"CMAConfig.answer must be 'data' or 'greedy', got {self.answer!r}")
        for name in ("window", "samples", "batch_rows", "top_k"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"CMAConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"CMAConfig.noise must be a finite number >= 0, got {self.noise!r}")
        if self.noise_std is not None and not (math.isfinite(self.noise_std) and self.noise_std > 0):
            raise ValueError(f"CMAConfig.noise_std must be > 0 or None, got {self.noise_std!r}")


# ---- noise scale -----------------------------------------------------------------------------------


def default_noise_subjects() -> list[str] | None:
    """The known_1000 subjects (ROME's noise reference) when the file is found: $GOLDEN_FAST_KNOWN1000,
    else $GOLDEN_FAST_DATA/known_1000.json, else shared/data/known_1000.json in the folder that holds
    this checkout (a development layout; an installed package does not have it)."""
    from golden_fast.data import load
    from golden_fast.data.location import data_dir

    root = data_dir()
    cands = [os.environ.get("GOLDEN_FAST_KNOWN1000"), str(root / "known_1000.json") if root else None]
    for c in cands:
        if c and Path(c).is_file():
            return [r.subject for r in load(c, format="known1000")]
    return None


@torch.no_grad()
def noise_std(model: nn.Module, tok: Any, subjects: Sequence[str]) -> float:
    """Std of the embedding-layer outputs over every (non-special) token of the subjects (ROME's
    `collect_embedding_std`, with BOS and other special tokens left out)."""
    adapter = get_adapter(model)
    emb = adapter.embeddings()
    device = adapter.lm_head().weight.device
    special = set(getattr(tok, "all_special_ids", []) or [])
    rows = []
    for s in subjects:
        ids = [i for i in tok(s)["input_ids"] if i not in special]
        if ids:
            rows.append(emb(torch.tensor([ids], device=device))[0].float())
    if not rows:
        raise ValueError("noise_std: no subject produced a non-special token")
    x = torch.cat(rows)
    return float(x.std())


# ---- tracing ---------------------------------------------------------------------------------------


def _subject_range(tok: Any, req: Any) -> tuple[list[int], int, int]:
    """(ids of the filled prompt, first subject token, last subject token + 1): the first token is the
    first non-special one overlapping the subject's characters (ROME's `find_token_range`)."""
    ids, last = subject_last_token(tok, req.template, req.subject)
    text, start = fill(req.template, req.subject)
    end = start + len(req.subject)
    special = set(getattr(tok, "all_special_ids", []) or [])
    try:
        enc = tok(text, return_offsets_mapping=True)
        first = next(
            i
            for i, (a, b) in enumerate(enc["offset_mapping"])
            if enc["input_ids"][i] not in special and b > a and a < end and b > start
        )
    except (NotImplementedError, TypeError, ValueError, StopIteration):  # no offsets: count tokens before it
        first = len(tok(text[:start])["input_ids"])
    return ids, min(first, last), last + 1


def _window(layer: int, window: int, n_layers: int) -> range:
    # ROME: range(max(0, l - window // 2), min(L, l - (-window // 2)))
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


@torch.no_grad()
def _head_probs(adapter, hidden: torch.Tensor) -> torch.Tensor:
    """Next-token distribution (R, V) float32 from final hidden states (R, d)."""
    logits = adapter.lm_head()(hidden).float()  # (R, V)
    cap = adapter.logit_softcap
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.softmax(-1)


@torch.no_grad()
def _last_probs(adapter, ids: torch.Tensor) -> torch.Tensor:
    """Next-token distribution (R, V) float32 at the last position of each row of ids (R, T)."""
    return _head_probs(adapter, adapter.body()(input_ids=ids, use_cache=False).last_hidden_state[:, -1])


@torch.no_grad()
def _restored(
    adapter,
    ids: list[int],
    subj: tuple[int, int],
    answer: int,
    configs: Sequence[tuple[int, Sequence[int]]],
    clean: dict[int, torch.Tensor],
    config: CMAConfig,
    sigma: float,
) -> tuple[float, np.ndarray]:
    """(P_corrupted, mean P(answer) over the noisy copies for each configuration (token, layers to
    restore)).

    Every run of the same noisy copy is identical below the first restored layer, so the corrupted
    pass records the residual entering the layers where runs start, and each batch of
    configurations runs only the blocks from there up (`hooks.layers_from`): for ROME's window of
    10 on 30 layers, up to 43% of the block evaluations are saved; the result is the same
    computation.
    """
    device = adapter.lm_head().weight.device
    S = config.samples
    b, e = subj
    g = torch.Generator().manual_seed(config.seed)
    noise = (torch.randn(S, e - b, adapter.d_model, generator=g) * sigma).to(device)  # the same for every config
    site = _SITE[config.kind]
    # chunks of configurations in order of their first restored layer; a chunk runs from the lowest
    # first layer among its members (full batches, at the price of a few blocks recomputed)
    per = max(1, config.batch_rows // S)  # configurations per forward pass
    order = sorted(range(len(configs)), key=lambda i: min(configs[i][1]))
    chunks = [order[lo : lo + per] for lo in range(0, len(order), per)]
    starts = sorted({min(configs[c[0]][1]) for c in chunks})

    def add_noise(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t[:, b:e] += noise.to(t.dtype)
        return t

    # the corrupted pass: P_corrupted, and the noisy residual entering every layer a chunk starts at
    x = torch.tensor([ids] * S, device=device)
    sites = [f"layers.{j}.in" for j in starts]
    with edit_module_output(adapter.embeddings(), add_noise), capture(adapter, sites) as cap:
        low = float(_last_probs(adapter, x)[:, answer].double().mean())
    resid = {j: cap[f"layers.{j}.in"] for j in starts}  # (S, T, d) each
    del cap

    out = np.zeros(len(configs))
    for chunk in chunks:
        start = min(configs[chunk[0]][1])
        todo: dict[int, tuple[list[int], list[int]]] = {}  # layer -> (rows, cols) to restore
        for c, i in enumerate(chunk):
            tok_pos, layers = configs[i]
            for layer in layers:
                rows, cols = todo.setdefault(layer, ([], []))
                rows += list(range(c * S, (c + 1) * S))
                cols += [tok_pos] * S
        h = resid[start].repeat(len(chunk), 1, 1)  # (R, T, d): copy s of every config is row c * S + s
        with contextlib.ExitStack() as stack:
            top = stack.enter_context(layers_from(adapter, start))
            for layer, (rows, cols) in todo.items():
                value = clean[layer][0, cols]  # (P, width): the clean output at each restored cell
                stack.enter_context(patch(adapter, f"layers.{layer}.{site}", rows, cols, value, mode="replace"))
            hidden = top(inputs_embeds=h, use_cache=False).last_hidden_state[:, -1]  # (R, d)
        p = _head_probs(adapter, hidden)[:, answer]
        out[chunk] = p.view(len(chunk), S).double().mean(1).cpu().numpy()
    return low, out


@dataclasses.dataclass
class TraceResult:
    """Causal trace of one prompt: P(answer) when restoring each (token, layer) cell.

    scores (T, L) of restored probabilities (a single row, the subject's last token, when traced
    for locating only); low = P_corrupted, high = P_clean; tokens: the prompt's tokens as text.
    """

    prompt: str
    subject: str
    answer: str
    answer_id: int
    tokens: list[str]
    subject_range: tuple[int, int]
    layers: list[int]
    token_positions: list[int]
    scores: np.ndarray
    low: float
    high: float
    correct: bool
    kind: str
    window: int

    def indirect_effect(self) -> np.ndarray:
        return self.scores - self.low


def _trace_one(
    model, tok, req, layers, positions, config: CMAConfig, sigma: float, skip_wrong: bool = False
) -> TraceResult:
    """Trace one request; with `skip_wrong`, a request the clean model gets wrong stops after the
    clean pass (its `scores` are then empty: nothing was restored)."""
    adapter = get_adapter(model)
    device = adapter.lm_head().weight.device
    ids, b, e = _subject_range(tok, req)
    positions = [e - 1] if positions is None else list(positions)
    site = _SITE[config.kind]
    L = adapter.n_layers
    needed = sorted({j for layer in layers for j in _window(layer, config.window, L)})
    data_answer = _data_answer(tok, req) if config.answer == "data" else None
    with capture(adapter, [f"layers.{j}.{site}" for j in needed]) as cap:
        p_all = _last_probs(adapter, torch.tensor([ids], device=device))[0]  # (V,)
    top_id = int(p_all.argmax())
    answer = top_id if data_answer is None else data_answer
    clean = {j: cap[f"layers.{j}.{site}"] for j in needed}
    if skip_wrong and top_id != answer:
        return TraceResult(
            req.text,
            req.subject,
            tok.decode([answer]),
            answer,
            [tok.decode([i]) for i in ids],
            (b, e),
            list(layers),
            positions,
            np.zeros((0, len(layers))),
            math.nan,
            float(p_all[answer]),
            False,
            config.kind,
            config.window,
        )
    # cells before the subject never see the noise (causal attention): restoring them is a no-op, so
    # they are the corrupted probability itself, not worth a run
    cells = [(t, layer) for t in positions for layer in layers]
    run = [i for i, (t, _) in enumerate(cells) if t >= b]
    configs = [(cells[i][0], list(_window(cells[i][1], config.window, L))) for i in run]
    low, probs_run = _restored(adapter, ids, (b, e), answer, configs, clean, config, sigma)
    probs = np.full(len(cells), low)
    probs[run] = probs_run
    return TraceResult(
        prompt=req.text,
        subject=req.subject,
        answer=tok.decode([answer]),
        answer_id=answer,
        tokens=[tok.decode([i]) for i in ids],
        subject_range=(b, e),
        layers=list(layers),
        token_positions=positions,
        scores=probs.reshape(len(positions), len(layers)),
        low=low,
        high=float(p_all[answer]),
        correct=top_id == answer,
        kind=config.kind,
        window=config.window,
    )


def _data_answer(tok, req) -> int:
    """First token of the record's old answer (what ROME's known_1000 traces: the attribute)."""
    if req.ground_truth is None:
        raise ValueError(
            f"{req.ref}: field 'ground_truth' is missing; causal tracing with answer='data' "
            "needs the old answer (use answer='greedy' to trace the model's own)"
        )
    try:
        return int(target_span(tok, req.text, req.ground_truth).target_ids[0])
    except ValueError as exc:
        raise ValueError(f"{req.ref}: field 'ground_truth': {exc}") from None


def _sigma(model, tok, requests, config: CMAConfig, noise_subjects) -> tuple[float, str]:
    if config.noise_std is not None:
        return config.noise * config.noise_std, "given"
    subjects = noise_subjects if noise_subjects is not None else default_noise_subjects()
    source = "known_1000" if noise_subjects is None and subjects is not None else "given subjects"
    if subjects is None:
        subjects, source = [r.subject for r in requests], "proxy subjects"
    return config.noise * noise_std(model, tok, subjects), source


def _trace_many(model, tok, requests, layers, config: CMAConfig, sigma: float, progress: bool) -> list[TraceResult]:
    """The trace of each request, in order (a skipped one stops after its clean pass)."""
    it = requests
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(requests, desc=f"CMA ({config.kind})", unit="fact")
    return [_trace_one(model, tok, req, layers, None, config, sigma, skip_wrong=config.skip_wrong) for req in it]


def causal_trace(
    model: nn.Module,
    tok: Any,
    requests: Sequence[Any],
    layers: Sequence[int] | None = None,
    config: CMAConfig | None = None,
    noise_subjects: Sequence[str] | None = None,
    progress: bool = False,
    data_parallel: bool = True,
):
    """Average indirect effect per layer at the subject's last token; returns `LayerScores`
    (skipped requests and per-request curves in `.extra`).

    data_parallel: under torchrun, split the requests across ranks (every rank must call)."""
    from golden_fast.evaluate.api import shard_map
    from golden_fast.locate.scores import LayerScores

    config = config or CMAConfig()
    adapter = get_adapter(model)
    layers = list(range(adapter.n_layers)) if layers is None else [int(x) for x in layers]
    for layer in layers:
        adapter.block(layer)
    requests = list(requests)
    if not requests:
        raise ValueError("CMA: no proxy request")
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        sigma, source = _sigma(model, tok, requests, config, noise_subjects)
        if data_parallel:  # the same noise scale everywhere, whatever each device's rounding
            sigma = distributed.broadcast_object(sigma)
        show = distributed.progress_enabled(progress)
        all_traces = shard_map(
            len(requests),
            lambda idx: _trace_many(model, tok, [requests[i] for i in idx], layers, config, sigma, show),
            data_parallel,
        )
        traces, skipped = [], []
        for req, tr in zip(requests, all_traces):
            if config.skip_wrong and not tr.correct:
                skipped.append({"ref": req.ref, "answer": tr.answer, "p_clean": tr.high})
                continue
            traces.append((req, tr))
    finally:
        model.train(was_training)
    if not traces:
        raise ValueError(
            f"CMA: all {len(requests)} request(s) skipped: the clean model's top token is never the answer "
            "(pass skip_wrong=False to trace them anyway, or answer='greedy')"
        )
    restored = np.stack([tr.scores[0] for _, tr in traces])  # (n, L)
    low = np.array([tr.low for _, tr in traces])
    high = np.array([tr.high for _, tr in traces])
    ie = restored - low[:, None]
    wall = time.perf_counter() - t0
    extra = {
        "skipped": skipped,
        "n_skipped": len(skipped),
        "sigma": sigma,
        "noise_source": source,
        "p_clean": high,
        "p_corrupted": low,
        "p_restored": restored,
        "requests": [{"ref": r.ref, "answer": tr.answer} for r, tr in traces],
    }
    variants = {"indirect_effect": ie.mean(0), "restored": restored.mean(0)}
    return LayerScores.build(
        "cma",
        layers,
        variants,
        "indirect_effect",
        tukey_k=config.tukey_k,
        top_k=config.top_k,
        wall_time=wall,
        settings=dataclasses.asdict(config) | {"noise_subjects": source},
        n_requests=len(requests),
        n_used=len(traces),
        extra=extra,
    )


def trace_heatmap(
    model: nn.Module,
    tok: Any,
    request: Any,
    config: CMAConfig | None = None,
    noise_subjects: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
) -> TraceResult:
    """Restored P(answer) for every (token, layer) cell of one prompt, like ROME's figures."""
    config = config or CMAConfig()
    adapter = get_adapter(model)
    layers = list(range(adapter.n_layers)) if layers is None else [int(x) for x in layers]
    was_training = model.training
    model.eval()
    try:
        sigma, _ = _sigma(model, tok, [request], config, noise_subjects)
        ids, _, _ = _subject_range(tok, request)
        return _trace_one(model, tok, request, layers, range(len(ids)), config, sigma)
    finally:
        model.train(was_training)


def plot_heatmap(trace: TraceResult, path: str | Path, title: str | None = None) -> Path:
    """ROME-style heatmap PNG: tokens (rows, subject tokens starred) x layers, colour = P(answer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = {"mlp": "Greens", "attn": "Reds", "hidden": "Purples"}[trace.kind]
    labels = [
        repr(t)[1:-1] + ("*" if trace.subject_range[0] <= p < trace.subject_range[1] else "")
        for p, t in zip(trace.token_positions, [trace.tokens[p] for p in trace.token_positions])
    ]
    fig, ax = plt.subplots(figsize=(3.5 + 0.12 * len(trace.layers), 1.0 + 0.3 * len(labels)), dpi=150)
    im = ax.pcolor(trace.scores, cmap=cmap, vmin=min(trace.low, float(trace.scores.min())))
    ax.invert_yaxis()
    ax.set_yticks([0.5 + i for i in range(len(labels))])
    ax.set_yticklabels(labels, fontsize=7)
    step = max(1, len(trace.layers) // 10)
    ax.set_xticks([0.5 + i for i in range(0, len(trace.layers), step)])
    ax.set_xticklabels([trace.layers[i] for i in range(0, len(trace.layers), step)], fontsize=7)
    what = {"mlp": "MLP", "attn": "attention", "hidden": "hidden state"}[trace.kind]
    ax.set_xlabel(f"restored {what} at layer (window {trace.window})", fontsize=8)
    head = title or f"{trace.prompt!r} -> {trace.answer!r}"
    ax.set_title(f"{head}\nclean p = {trace.high:.4f}, corrupted p = {trace.low:.4f}", fontsize=8)
    cb = fig.colorbar(im, ax=ax)
    cb.ax.set_title(f"p({trace.answer.strip()})", fontsize=7)
    cb.ax.tick_params(labelsize=6)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
