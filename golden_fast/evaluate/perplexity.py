"""Perplexity on held-out text: the general-ability check the field runs after mass edits.

    PPL = exp( (1/N) sum_t -log p(x_t | x_<t) )

over the tokens of the text, read in non-overlapping windows of `window` tokens (each window's
first token is context only, so N = number of windows x (window - 1)). The texts are joined
with blank lines and tokenised once, without special tokens, and each window starts with the
tokenizer's BOS token when it has one (the position a model was trained to start from). Only
the log-probabilities of the next tokens are computed, in vocabulary chunks
(`golden_fast.ops.token_logprobs`), never a [batch, window, vocab] log-softmax.

The default text is WikiText-2's validation split (`wikitext_valid_texts`), detokenised; the
edits themselves never see it. Comparing before and after an edit needs the same window, token
budget and text: `PerplexityResult.settings` records them.

Under torchrun the batches of windows are split across ranks and each batch's NLL sum is gathered
back in order and added up as one process adds it, so every rank gets one process's result.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from golden_fast import distributed
from golden_fast.evaluate.api import shard_map
from golden_fast.models import get_adapter
from golden_fast.models.placement import execution_device, read_tensor
from golden_fast.ops.token_logprobs import token_logprobs

__all__ = ["PerplexityResult", "perplexity", "wikitext_valid_texts"]


@dataclasses.dataclass(frozen=True)
class PerplexityResult:
    """perplexity = exp(nll); nll = mean negative log-likelihood (nats) over `tokens` predictions."""

    perplexity: float
    nll: float
    tokens: int
    windows: int
    seconds: float
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def wikitext_valid_texts() -> list[str]:
    """WikiText-2's validation paragraphs, detokenised, from the data folder ($GOLDEN_FAST_DATA)."""
    from golden_fast.data.location import data_file
    from golden_fast.data.wikitext import wikitext_paragraphs

    return list(wikitext_paragraphs(data_file("wikitext-2/valid.txt")))


@torch.no_grad()
def perplexity(
    model: nn.Module,
    tok: Any,
    texts: Sequence[str] | str | None = None,
    *,
    window: int = 512,
    max_tokens: int | None = 32_768,
    batch_size: int = 4,
    progress: bool = True,
    data_parallel: bool = True,
) -> PerplexityResult:
    """Perplexity of `model` on `texts` (default: WikiText-2 validation), over at most `max_tokens`
    tokens (None: all), in windows of `window` tokens, `batch_size` windows per forward.

    data_parallel: under torchrun, split the batches across ranks (every rank must call)."""
    if window < 2:
        raise ValueError(f"window must be >= 2 tokens, got {window}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_tokens is not None and max_tokens < window:
        raise ValueError(f"max_tokens ({max_tokens}) must be at least one window ({window})")
    t0 = time.perf_counter()
    name = "wikitext-2 valid" if texts is None else "given texts"
    if texts is None:
        texts = wikitext_valid_texts()
    if isinstance(texts, str):
        texts = [texts]
    ids = tok("\n\n".join(t for t in texts if t.strip()), add_special_tokens=False)["input_ids"]
    bos = getattr(tok, "bos_token_id", None)
    adds_bos = bos is not None and tok("a")["input_ids"][:1] == [bos]
    step = window - 1 if adds_bos else window  # a BOS takes one position of each window
    if max_tokens is not None:
        ids = ids[: max_tokens]
    n_windows = len(ids) // step
    if n_windows == 0:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than one window of {step}")
    rows = [([bos] if adds_bos else []) + ids[i * step : (i + 1) * step] for i in range(n_windows)]
    starts = list(range(0, n_windows, batch_size))
    show = distributed.progress_enabled(progress) and n_windows >= 2
    sums = shard_map(len(starts), lambda idx: _batch_logprobs(model, rows, [starts[k] for k in idx], batch_size, show),
                     data_parallel)
    total_nll, count = 0.0, 0
    for logprob_sum, n in sums:  # in batch order: the same float additions as one process
        total_nll -= logprob_sum
        count += n
    nll = total_nll / count
    return PerplexityResult(
        perplexity=math.exp(nll), nll=nll, tokens=count, windows=n_windows, seconds=time.perf_counter() - t0,
        settings={"text": name, "window": window, "max_tokens": max_tokens, "bos": adds_bos,
                  "text_tokens": len(ids)},
    )


@torch.no_grad()
def _batch_logprobs(model: nn.Module, rows: list[list[int]], starts: Sequence[int], batch_size: int,
                progress: bool) -> list[tuple[float, int]]:
    """(sum of log-probabilities, number of predicted tokens) of the batch of windows at each start."""
    adapter = get_adapter(model)
    head = adapter.lm_head()
    device = execution_device(head)
    # an offloaded head keeps its values outside the module: read them where they live
    head_weight = read_tensor(model, head, "weight").to(device)
    head_bias = None if getattr(head, "bias", None) is None else read_tensor(model, head, "bias").to(device)
    from tqdm.auto import tqdm

    out = []
    for start in tqdm(starts, desc="perplexity", disable=not progress):
        batch = torch.tensor(rows[start : start + batch_size], device=device)
        hidden = adapter.body()(input_ids=batch, use_cache=False).last_hidden_state  # (B, T, d)
        B, T = batch.shape
        pos = torch.arange(1, T, device=device)  # the predicted positions: all but the window's first
        h = hidden[:, pos - 1].reshape(-1, hidden.shape[-1])
        targets = batch[:, pos].reshape(-1)
        logprob, _ = token_logprobs(h, head_weight, targets, bias=head_bias,
                                    softcap=adapter.logit_softcap)
        if not torch.isfinite(logprob).all():
            raise FloatingPointError(f"non-finite log-probabilities in windows {start}..{start + B - 1}")
        out.append((float(logprob.double().sum()), int(targets.numel())))
    return out
