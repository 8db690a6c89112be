"""Second moments C_l = E[k kᵀ] of the down-projection keys, every requested layer in one pass.

C_l = S_l / N_l with S_l = sum_t k_t k_tᵀ over every non-padding corpus token t and N_l their count:
the uncentred second moment, no mean subtracted (FORMULAS.md, section "Second-moment statistics
C_l"). The anchors (ROME's layer_stats, MEMIT, EasyEdit) run a full forward pass over the
corpus once per layer. Here one pass serves every requested layer:

- the keys of each layer are folded into its running sum *inside* the forward pass (a read-only
  tap on the down-projection input: the tensor goes on unchanged), so only one layer's keys are
  alive at any time, whatever the number of layers (capturing them all first would hold
  L x (B, T, m) floats: 0.75 GB for 30 layers of SmolLM2 at 4096 tokens);
- the forward pass stops after the deepest requested layer (no upper blocks, no final norm, no
  (B, T, vocab) logits);
- the sums use `golden_fast.ops.mom2_update`, which only guarantees the upper triangle, so a
  backend may compute one triangle (BLAS syrk); the full matrix is rebuilt once at the end.

Tokens: every non-padding token of every text (left-padded batches; the attention mask drops the
padding), texts truncated to min(max_length, model context), BOS included when the tokenizer
adds one (ROME's TokenizedDataset does too). Texts are sorted by length (longest first) and cut
into batches of at most `batch_tokens` tokens, padding included: little padding, and a batch too
big for memory fails at the start, not hours in.

The count is kept with the sum (C = sum / count is formed on demand), results are cached on disk
(golden_fast.stats.cache) and a long pass checkpoints its partial sums, so it can resume.

Under torchrun (golden_fast.distributed, `data_parallel=True`: every rank calls) each rank takes
every world-th text of the length-sorted list (`distributed.shard`), so the ranks' batches have
alike shapes and costs, and batches its share alone; the sums and counts are added up over the
ranks once, at the end. Each rank checkpoints its own share in a file of its own; rank 0 alone
writes the cache, which every rank then reads (the ranks share one golden_fast home).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import overload

import torch
from torch import nn

from golden_fast import distributed
from golden_fast.hooks import StopForward, edit_site, stop_after
from golden_fast.models import get_adapter
from golden_fast.models.identity import model_identity
from golden_fast.models.placement import execution_device
from golden_fast.ops.mom2 import mom2_update, symmetrize_upper
from golden_fast.tokens import Batch, pad_id

from . import cache as _cache
from .config import StatsConfig
from .corpus import Corpus, corpus_key, resolve_corpus

__all__ = [
    "Conditioning",
    "SecondMoment",
    "conditioning",
    "effective_max_length",
    "get_second_moment",
    "layer_stats",
    "per_layer_second_moments",
    "second_moments",
]


# -- results ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Conditioning:
    """Spectrum summary of a symmetric matrix C, for editors that solve with C (ROME: C⁻¹ k).

    rank counts eigenvalues above tol = m * eps(dtype of C) * max|eig|; below that an eigenvalue
    is rounding noise. cond = max_eig / min_eig, inf when min_eig <= 0 (never NaN).
    """

    m: int
    min_eig: float
    max_eig: float
    cond: float
    rank: int
    tol: float

    @property
    def singular(self) -> bool:
        return self.rank < self.m

    def __str__(self) -> str:
        return (f"m={self.m} rank={self.rank} min_eig={self.min_eig:.3e} max_eig={self.max_eig:.3e} "
                f"cond={self.cond:.3e}" + (" (singular to working precision)" if self.singular else ""))


def conditioning(C: torch.Tensor) -> Conditioning:
    """Smallest / largest eigenvalue, condition number and numerical rank of symmetric C.

    Raises ValueError on a non-finite C instead of returning NaNs.
    """
    if C.dim() != 2 or C.shape[0] != C.shape[1]:
        raise ValueError(f"conditioning: expected a square matrix, got {tuple(C.shape)}")
    if not bool(torch.isfinite(C).all()):
        raise ValueError("conditioning: C has NaN or Inf entries")
    m = C.shape[0]
    if m == 0:
        return Conditioning(0, math.inf, 0.0, math.inf, 0, 0.0)
    c = C.detach().to("cpu", torch.float64)
    eig = torch.linalg.eigvalsh((c + c.T) / 2)  # ascending; float64 so the test itself adds no error
    lo, hi = float(eig[0]), float(eig[-1])
    eps = torch.finfo(C.dtype).eps if C.is_floating_point() else torch.finfo(torch.float64).eps
    tol = m * eps * max(abs(lo), abs(hi))
    cond = hi / lo if lo > 0 else math.inf
    return Conditioning(m, lo, hi, cond, int((eig > tol).sum()), tol)


@dataclasses.dataclass
class SecondMoment:
    """Sum of k kᵀ over `count` tokens at one layer; `mean()` is C_l = E[k kᵀ].

    `sum` is full and symmetric (m, m), float32 or float64 (the accumulation dtype).
    """

    layer: int
    sum: torch.Tensor
    count: int
    n_texts: int = 0
    path: Path | None = None  # the cache file, when cached
    from_cache: bool = False

    @property
    def dtype(self) -> torch.dtype:
        return self.sum.dtype

    @property
    def m(self) -> int:
        return self.sum.shape[0]

    def mean(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """C = sum / count (m, m), in `dtype` (default: the accumulation dtype)."""
        if self.count <= 0:
            raise ValueError(f"layer {self.layer}: no tokens were counted; C is undefined")
        s = self.sum if dtype is None else self.sum.to(dtype)
        return s / self.count

    def conditioning(self) -> Conditioning:
        return conditioning(self.mean())


# -- plan: tokenised texts cut into batches ------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Plan:
    # Tokenised texts, longest first, as int32 tensors: 100,000 texts x 1024 tokens as Python int
    # lists would take ~3.6 GB, as int32 0.4 GB.
    seqs: list[torch.Tensor]
    bounds: list[tuple[int, int]]  # batch b is seqs[lo:hi]
    n_tokens: int
    digest: str  # identifies the batching, for checkpoints

    @property
    def n_texts(self) -> int:
        return len(self.seqs)


def effective_max_length(model: nn.Module, config: StatsConfig) -> int:
    """min(config.max_length, the model's context length when its config states one)."""
    model_config = getattr(model, "config", None)
    if model_config is not None and hasattr(model_config, "get_text_config"):
        model_config = model_config.get_text_config()
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        ctx = getattr(model_config, attr, None)
        if isinstance(ctx, int) and ctx > 0:
            return min(config.max_length, ctx)
    return config.max_length


def _tokenize(tok, texts: Iterable[str], max_len: int, special: bool) -> list[torch.Tensor]:
    """Token ids of each text, truncated to max_len, read from `texts` 256 at a time (a stream of
    Wikipedia articles is never held whole). Texts without tokens are dropped."""
    # Cut very long texts (whole articles) to 32 characters per kept token first: tokens are far
    # shorter than that, so the first max_len tokens are unchanged; a text whose cut came out short
    # (odd text) is tokenised again whole.
    cut = 32 * max_len
    out: list[torch.Tensor] = []
    it = iter(texts)
    while chunk := list(itertools.islice(it, 256)):
        enc = tok([t[:cut] for t in chunk], add_special_tokens=special, truncation=True,
                        max_length=max_len)["input_ids"]
        for text, ids in zip(chunk, enc):
            if len(text) > cut and len(ids) < max_len:
                ids = tok(text, add_special_tokens=special, truncation=True, max_length=max_len)[
                    "input_ids"]
            if len(ids):
                out.append(torch.tensor(ids, dtype=torch.int32))
    return out


def _batch(seqs: Sequence[torch.Tensor], pad: int) -> Batch:
    """Left-padded batch with position ids, as golden_fast.tokens.encode_batch builds it."""
    lengths = [len(s) for s in seqs]
    T = max(lengths)
    ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, T - len(s) :] = s
        mask[b, T - len(s) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(ids, mask, pos, lengths)


def _plan(seqs: list[torch.Tensor], batch_tokens: int) -> _Plan:
    order = sorted(range(len(seqs)), key=lambda i: (-len(seqs[i]), i))
    seqs = [seqs[i] for i in order]
    bounds, lo = [], 0
    while lo < len(seqs):
        width = len(seqs[lo])  # the longest of the batch: its rows are padded to it
        hi = lo + max(1, batch_tokens // width)
        hi = min(hi, len(seqs))
        bounds.append((lo, hi))
        lo = hi
    h = hashlib.sha256()
    h.update(repr([len(s) for s in seqs]).encode())
    h.update(repr(bounds).encode())
    for s in seqs[:: max(1, len(seqs) // 64)]:  # a sample of the ids themselves
        h.update(s[:64].numpy().tobytes())
    return _Plan(seqs, bounds, sum(len(s) for s in seqs), h.hexdigest()[:16])


# -- the pass ---------------------------------------------------------------------------------------
def _forward(model: nn.Module, adapter, inputs: dict, stop_layer: int | None) -> None:
    """One forward pass; with stop_layer, ends once that block has run. (Module level so a test can
    interrupt a pass here.)"""
    if stop_layer is None:
        model(**inputs, use_cache=False)
        return
    with stop_after(adapter, stop_layer):
        try:
            model(**inputs, use_cache=False)
        except StopForward:
            pass


@dataclasses.dataclass
class _Checkpoint:
    path: Path
    expect: dict[str, str]
    every: int  # texts


@torch.no_grad()
def _accumulate(
    model: nn.Module,
    tok,
    layers: Sequence[int],
    plan: _Plan,
    dtype: torch.dtype,
    early_stop: bool = True,
    checkpoint: _Checkpoint | None = None,
    progress: bool = True,
    desc: str = "stats",
) -> tuple[dict[int, torch.Tensor], dict[int, int]]:
    """Raw sums (upper triangle valid) and token counts of `layers` over the plan's batches."""
    from tqdm.auto import tqdm

    adapter = get_adapter(model)
    device = execution_device(model)
    m = adapter.d_ff
    sums = {layer: torch.zeros(m, m, dtype=dtype, device=device) for layer in layers}
    counts = {layer: 0 for layer in layers}
    start = 0
    if checkpoint is not None:
        got = _cache.load_checkpoint(checkpoint.path, layers, checkpoint.expect)
        if got is not None:
            loaded, counts, start = got
            sums = {layer: loaded[layer].to(device=device, dtype=dtype).contiguous() for layer in layers}
    done_texts = plan.bounds[start - 1][1] if start > 0 else 0
    saved_at = done_texts
    mask_now: list[torch.Tensor | None] = [None]  # the current batch's mask, read by the taps
    pad = pad_id(tok)

    def tap(layer: int):
        acc = sums[layer]

        def fn(keys: torch.Tensor) -> torch.Tensor:  # keys (B, T, m)
            mask = mask_now[0]
            if mask is not None and keys.shape[:-1] != mask.shape:
                mask = mask.reshape(-1)  # an MLP that flattens tokens first: keys (B*T, m)
            mom2_update(acc, keys, mask)
            return keys  # unchanged: the forward pass is not affected

        return fn

    bar = tqdm(total=plan.n_texts, initial=done_texts, unit="text", desc=desc, disable=not progress)
    was_training = model.training
    model.eval()  # dropout would make the keys random
    try:
        with contextlib.ExitStack() as stack:
            for layer in layers:
                stack.enter_context(edit_site(adapter, f"layers.{layer}.mlp.down.in", tap(layer)))
            for b in range(start, len(plan.bounds)):
                lo, hi = plan.bounds[b]
                batch = _batch(plan.seqs[lo:hi], pad).to(device)
                mask_now[0] = batch.attention_mask.bool()  # (B, T): drops the left padding
                _forward(model, adapter, batch.model_inputs(), max(layers) if early_stop else None)
                n = sum(batch.lengths)
                for layer in layers:
                    counts[layer] += n
                bar.update(hi - lo)
                done_texts = hi
                if checkpoint is not None and checkpoint.every and done_texts - saved_at >= checkpoint.every \
                        and b + 1 < len(plan.bounds):
                    # Only at a batch boundary: mid-batch, some layers hold this batch and others not.
                    _cache.save_checkpoint(checkpoint.path, sums, counts, b + 1, checkpoint.expect)
                    saved_at = done_texts
    finally:
        bar.close()
        model.train(was_training)
    return sums, counts


def _normalize_layers(layers: int | Sequence[int], n_layers: int) -> list[int]:
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    out = sorted(set(layers))
    if not out:
        raise ValueError("no layer requested")
    for layer in out:
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < n_layers:
            raise IndexError(f"layer {layer!r} out of range: the model has {n_layers} layers")
    return out


def _finish(layer: int, raw: torch.Tensor, count: int, n_texts: int) -> SecondMoment:
    full = symmetrize_upper(raw)
    if not bool(torch.isfinite(full).all()):
        raise FloatingPointError(
            f"layer {layer}: the key second moment overflowed (NaN/Inf); accumulate in float64 "
            "(StatsConfig(dtype='float64')) or run the model in float32"
        )
    return SecondMoment(layer, full, count, n_texts)


@dataclasses.dataclass(frozen=True)
class _Setup:
    layers: list[int]
    corpus: Corpus
    key: str
    max_len: int
    model_id: str


def _setup(model, tok, layers, config, progress, model_id) -> _Setup:
    adapter = get_adapter(model)
    layers = _normalize_layers(layers, adapter.n_layers)
    model_id = model_id or model_identity(model)
    corpus = resolve_corpus(config.corpus, config, model, tok, progress=distributed.progress_enabled(progress),
                            model_id=model_id)
    max_len = effective_max_length(model, config)
    return _Setup(layers, corpus, corpus_key(corpus, max_len, config.add_special_tokens), max_len, model_id)


# Corpora whose first read writes a file (the model-sampled one samples and caches its texts).
_WRITES_ON_READ = ("sampled",)


def _read_seqs(tok, s: _Setup, config: StatsConfig) -> list[torch.Tensor]:
    return _tokenize(tok, s.corpus.iter_texts(config.n_samples), s.max_len, config.add_special_tokens)


def _read_seqs_in_turn(tok, s: _Setup, config: StatsConfig, split: bool) -> list[torch.Tensor]:
    """The tokenised corpus on every rank. A corpus that writes its cache when read is read by rank 0
    first and by the others once it is written, so no two processes write the same file; a failure
    on rank 0 is raised on every rank instead of leaving them waiting."""
    if not split or s.corpus.kind not in _WRITES_ON_READ:
        return _read_seqs(tok, s, config)
    seqs, error, failure = None, None, None
    if distributed.is_main():
        try:
            seqs = _read_seqs(tok, s, config)
        except Exception as exc:  # noqa: BLE001 - sent to the other ranks, then raised here
            error, failure = f"{type(exc).__name__}: {exc}", exc
    error = distributed.broadcast_object(error)
    if failure is not None:
        raise failure
    if error is not None:
        raise RuntimeError(f"rank 0 could not read corpus {s.corpus.description}: {error}")
    return seqs if seqs is not None else _read_seqs(tok, s, config)


def _read_plan(tok, s: _Setup, config: StatsConfig, split: bool = False) -> _Plan:
    seqs = _read_seqs_in_turn(tok, s, config, split)
    if not seqs:
        raise ValueError(f"corpus {s.corpus.description} gave no tokens")
    return _plan(seqs, config.batch_tokens)


def _local_plan(plan: _Plan, config: StatsConfig, split: bool) -> _Plan:
    """This rank's share of the plan: every world-th text of the length-sorted list, batched anew
    (the plan itself when not split). Deterministic, so a restarted rank takes the same texts."""
    if not split:
        return plan
    return _plan([plan.seqs[i] for i in distributed.shard(plan.n_texts)], config.batch_tokens)


def _reduce(
    sums: dict[int, torch.Tensor], counts: dict[int, int], split: bool
) -> tuple[dict[int, torch.Tensor], dict[int, int]]:
    """The ranks' sums and counts added up, on every rank: one all-reduce per layer's sum, one for
    all the counts (int64: exact at any corpus size). Unchanged when not split."""
    if not split:
        return sums, counts
    layers = sorted(sums)
    for layer in layers:
        distributed.all_reduce_sum(sums[layer])
    total = distributed.all_reduce_sum(torch.tensor([counts[layer] for layer in layers], dtype=torch.int64))
    return sums, dict(zip(layers, (int(c) for c in total.tolist())))


def _load_cached(model: nn.Module, s: _Setup, config: StatsConfig, folder: Path,
                 expect: dict[str, str]) -> dict[int, SecondMoment]:
    """The requested layers found in the cache."""
    device = execution_device(model)
    found: dict[int, SecondMoment] = {}
    for layer in s.layers:
        path = _cache.layer_path(folder, layer, config.n_samples, config.dtype)
        got = _cache.load_layer(path, {**expect, "layer": str(layer)})
        if got is not None:
            total, count, meta = got
            n_texts = int(meta.get("n_texts", 0))
            found[layer] = SecondMoment(layer, total.to(device), count, n_texts, path, from_cache=True)
    return found


def _agree_missing(missing: list[int], split: bool) -> list[int]:
    """The layers the pass computes: those missing on any rank, so that every rank joins the same
    pass (a rank whose cache has them recomputes them too)."""
    if not split:
        return missing
    return sorted({layer for got in distributed.all_gather_objects(missing) for layer in got})


def second_moments(
    model: nn.Module,
    tok,
    layers: int | Sequence[int],
    config: StatsConfig | None = None,
    progress: bool = True,
    model_id: str | None = None,
    data_parallel: bool = True,
    compute: bool = True,
) -> dict[int, SecondMoment]:
    """{layer: SecondMoment} for every requested layer; missing ones computed in ONE pass.

    With config.cache, cached layers are loaded and the computed ones saved (with their count);
    the pass checkpoints every config.checkpoint_every texts and resumes from its checkpoint.
    `model_id` overrides the model identity in the cache key (an editor that computes C for the
    unedited weights after editing them); by default it is golden_fast's model_identity(model).
    data_parallel: under torchrun, a pass is split across the ranks and every rank must call with
    the same arguments (a call whose layers are all cached on every rank needs no other rank);
    False: this process computes alone (ranks doing different work).
    compute=False: only the cache; a missing layer raises LookupError (the caller's weights are no
    longer those `model_id` names, so a pass would measure other weights under its name).
    """
    config = config or StatsConfig()
    s = _setup(model, tok, layers, config, progress, model_id)
    folder = _cache.stats_dir(s.model_id, s.key)
    expect = {
        "model": s.model_id, "corpus_key": s.key, "n_samples": str(config.n_samples), "dtype": config.dtype,
    }
    split = data_parallel and distributed.active()
    out = _load_cached(model, s, config, folder, expect) if config.cache else {}
    missing = [layer for layer in s.layers if layer not in out]
    if missing and not compute:
        raise LookupError(f"second moments of layers {missing} for {s.model_id} are not in the statistics cache")
    if missing:
        missing = _agree_missing(missing, split)
        plan = _read_plan(tok, s, config, split)
        local = _local_plan(plan, config, split)
        ckpt = None
        if config.cache and config.checkpoint_every:
            ckpt = _checkpoint(folder, missing, config, expect, local, split)
        t0 = time.perf_counter()
        desc = f"stats L{missing[0]}" + (f"-{missing[-1]} ({len(missing)})" if len(missing) > 1 else "")
        sums, counts = _accumulate(
            model, tok, missing, local, config.torch_dtype, True, ckpt, distributed.progress_enabled(progress), desc
        )
        sums, counts = _reduce(sums, counts, split)
        seconds = time.perf_counter() - t0
        for layer in missing:
            sm = _finish(layer, sums[layer], counts[layer], plan.n_texts)
            if config.cache:
                sm.path = _cache.layer_path(folder, layer, config.n_samples, config.dtype)
            if config.cache and (distributed.is_main() or not split):  # one writer per file
                _cache.save_layer(sm.path, sm.sum, sm.count, {
                    **expect, "layer": str(layer), "n_texts": str(plan.n_texts), "max_length": str(s.max_len),
                    "corpus": s.corpus.description, "seconds": f"{seconds:.2f}",
                    "layers_in_pass": ",".join(map(str, missing)),
                })
            out[layer] = sm
        if split:
            distributed.barrier()  # the cache is written before any rank reads it or drops its checkpoint
        if ckpt is not None:
            ckpt.path.unlink(missing_ok=True)
    return {layer: out[layer] for layer in s.layers}


def _checkpoint(folder: Path, layers: list[int], config: StatsConfig, expect: dict[str, str],
                plan: _Plan, split: bool) -> _Checkpoint:
    """The checkpoint of this pass; in a split pass each rank's own file, for its own share."""
    rank, world = (distributed.rank(), distributed.world_size()) if split else (0, 1)
    identity = {**expect, "plan": plan.digest, "layers": ",".join(map(str, layers))}
    if world > 1:
        identity |= {"rank": str(rank), "world_size": str(world)}
    path = _cache.checkpoint_path(folder, layers, config.n_samples, config.dtype, rank, world)
    return _Checkpoint(path, identity, config.checkpoint_every)


def per_layer_second_moments(
    model: nn.Module,
    tok,
    layers: int | Sequence[int],
    config: StatsConfig | None = None,
    progress: bool = True,
    data_parallel: bool = True,
) -> dict[int, SecondMoment]:
    """The anchors' way, for comparison and benchmarks: for each layer separately, a full forward
    pass (no early stop, logits included) over the same batches, accumulating that layer only.
    Never cached. Same tokens as `second_moments`, so counts are equal and sums agree to rounding.
    data_parallel: as `second_moments`.
    """
    config = config or StatsConfig()
    s = _setup(model, tok, layers, config, progress, None)
    split = data_parallel and distributed.active()
    plan = _read_plan(tok, s, config, split)
    local = _local_plan(plan, config, split)
    out = {}
    for layer in s.layers:
        sums, counts = _accumulate(model, tok, [layer], local, config.torch_dtype, False, None,
                                   distributed.progress_enabled(progress), f"stats L{layer} (full pass)")
        sums, counts = _reduce(sums, counts, split)
        out[layer] = _finish(layer, sums[layer], counts[layer], plan.n_texts)
    return out


@overload
def get_second_moment(model: nn.Module, tok, layer: int, config: StatsConfig | None = ...,
                      progress: bool = ..., model_id: str | None = ...,
                      layers: Sequence[int] | None = ..., data_parallel: bool = ...,
                      compute: bool = ...) -> SecondMoment: ...
@overload
def get_second_moment(model: nn.Module, tok, layer: Sequence[int], config: StatsConfig | None = ...,
                      progress: bool = ..., model_id: str | None = ...,
                      layers: Sequence[int] | None = ..., data_parallel: bool = ...,
                      compute: bool = ...) -> dict[int, SecondMoment]: ...
def get_second_moment(model, tok, layer, config=None, progress=True, model_id=None, layers=None, data_parallel=True,
                      compute=True):
    """The cached accessor for editors: a SecondMoment for one layer, {layer: SecondMoment} for a
    sequence of layers. Every missing layer of `layer` and `layers` (the other layers the caller
    will ask for next, e.g. all of MEMIT's) is computed in the same single pass.

    An editor that edits weights between calls must pass `model_id` (model_identity of the
    unedited model, taken before the first edit): the identity follows the weights, so otherwise
    the second call misses the cache and computes C on the edited model. `data_parallel`: as
    `second_moments` (False for an edit that runs on one rank alone); `compute`: likewise.
    """
    single = isinstance(layer, int) and not isinstance(layer, bool)
    wanted = [layer] if single else list(layer)
    got = second_moments(model, tok, sorted({*wanted, *(layers or ())}), config, progress, model_id, data_parallel,
                         compute)
    return got[layer] if single else {w: got[w] for w in wanted}


def layer_stats(
    model: nn.Module, tok, layer: int, config: StatsConfig | None = None, progress: bool = True
) -> SecondMoment:
    """ROME's name (rome/layer_stats.py) for the cached second moment of one layer."""
    return second_moments(model, tok, layer, config, progress)[layer]
