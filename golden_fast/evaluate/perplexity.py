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
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from golden_fast.models import get_adapter
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
) -> PerplexityResult:
    """Perplexity of `model` on `texts` (default: WikiText-2 validation), over at most `max_tokens`
    tokens (None: all), in windows of `window` tokens, `batch_size` windows per forward."""
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
    adapter = get_adapter(model)
    head = adapter.lm_head()
    device = head.weight.device
    total_nll, count = 0.0, 0
    from tqdm.auto import tqdm

    for start in tqdm(range(0, n_windows, batch_size), desc="perplexity", disable=not progress or n_windows < 2):
        batch = torch.tensor(rows[start : start + batch_size], device=device)
        hidden = adapter.body()(input_ids=batch, use_cache=False).last_hidden_state  # (B, T, d)
        B, T = batch.shape
        pos = torch.arange(1, T, device=device)  # the predicted positions: all but the window's first
        h = hidden[:, pos - 1].reshape(-1, hidden.shape[-1])
        targets = batch[:, pos].reshape(-1)
        logprob, _ = token_logprobs(h, head.weight, targets, bias=getattr(head, "bias", None),
                                    softcap=adapter.logit_softcap)
        if not torch.isfinite(logprob).all():
            raise FloatingPointError(f"non-finite log-probabilities in windows {start}..{start + B - 1}")
        total_nll -= float(logprob.double().sum())
        count += int(targets.numel())
    nll = total_nll / count
    return PerplexityResult(
        perplexity=math.exp(nll), nll=nll, tokens=count, windows=n_windows, seconds=time.perf_counter() - t0,
        settings={"text": name, "window": window, "max_tokens": max_tokens, "bos": adds_bos,
                  "text_tokens": len(ids)},
    )
