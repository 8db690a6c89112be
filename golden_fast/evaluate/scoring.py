"""Batched teacher-forced scoring of target tokens: the one primitive every metric uses.

`score_spans(model, tok, spans)` scores many (prompt, target) token sequences:
for each target token, its log-probability and the model's argmax at the position that
predicts it. Sequences of different lengths share a forward pass (left padding with
explicit position ids, which every family needs: several derive positions from the
cache position otherwise), and only the hidden states at target-predicting positions
reach the head, through `token_logprobs` (vocabulary chunks, no [B, T, V] logits).

Conventions: a target is scored as ``prompt + " " + target`` tokenised jointly
(`golden_fast.tokens.target_span`); the logit predicting ids[j] sits at position j - 1. The
metrics built on these scores (token accuracy, mean per-token NLL, exp(-NLL)) are in FORMULAS.md,
sections "Notation" and "Evaluation metrics".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

import torch

from golden_fast.models import get_adapter
from golden_fast.models.placement import execution_device, read_tensor
from golden_fast.ops.token_logprobs import token_logprobs
from golden_fast.tokens import TargetSpan, encode_batch, target_span

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_TOKENS",
    "ROUTES",
    "SpanTable",
    "TargetScore",
    "as_span",
    "score_spans",
]

# Rows per forward pass, and a cap on padded tokens (rows x longest row) so that a few
# very long prompts do not make a batch explode; both are options of every caller.
DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_TOKENS = 4096
ROUTES = ("batched", "full-logits", "per-record")


@dataclasses.dataclass(frozen=True)
class TargetScore:
    """Teacher-forced scores of one target: one entry per target token.

    `logprobs[i]` = log p(target_ids[i] | everything before it); `argmax[i]` = the
    model's top token at the same position.
    """

    target_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    argmax: tuple[int, ...]

    @property
    def correct(self) -> tuple[bool, ...]:
        return tuple(a == t for a, t in zip(self.argmax, self.target_ids))

    @property
    def accuracy(self) -> float:
        """Token accuracy: share of target tokens equal to the argmax (EasyEdit's acc)."""
        return sum(self.correct) / len(self.target_ids)

    @property
    def nll(self) -> float:
        """Mean per-token negative log-likelihood (ROME's CounterFact comparison)."""
        return -sum(self.logprobs) / len(self.logprobs)

    @property
    def prob(self) -> float:
        """exp(-nll): the geometric-mean per-token probability (ROME's magnitudes)."""
        return math.exp(-self.nll)


def as_span(item: TargetSpan | tuple[Sequence[int], Sequence[int]]) -> TargetSpan:
    """A TargetSpan from a TargetSpan or a (prompt_ids, target_ids) pair."""
    if isinstance(item, TargetSpan):
        span = item
    else:
        prompt_ids, target_ids = item
        span = TargetSpan(
            list(prompt_ids) + list(target_ids), len(prompt_ids), len(prompt_ids) + len(target_ids)
        )
    if span.start < 1 or span.end <= span.start or span.end > len(span.ids):
        raise ValueError(
            f"bad span: need 1 <= start < end <= len(ids), got start={span.start}, end={span.end}, "
            f"len={len(span.ids)} (a target needs at least one token before it)"
        )
    return span


def _batches(order: list[int], lengths: list[int], batch_size: int, max_tokens: int) -> Iterable[list[int]]:
    """Consecutive groups of `order` (sorted by length, longest first) under both caps."""
    batch: list[int] = []
    longest = 0
    for i in order:
        width = max(longest, lengths[i])
        if batch and (len(batch) + 1 > batch_size or (len(batch) + 1) * width > max_tokens):
            yield batch
            batch, width = [], lengths[i]
        batch.append(i)
        longest = width
    if batch:
        yield batch


@torch.no_grad()
def score_spans(
    model: torch.nn.Module,
    tok,
    spans: Sequence[TargetSpan | tuple[Sequence[int], Sequence[int]]],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    chunk_size: int | None = None,
    backend: str | None = None,
    route: str = "batched",
) -> list[TargetScore]:
    """Score target tokens of many sequences; result i belongs to spans[i].

    Args:
        model: a causal LM that `get_adapter` knows.
        tok: the tokenizer; supplies the pad id only (the spans are already tokenised).
        spans: `TargetSpan`s (target = ids[start:end]) or (prompt_ids, target_ids) pairs.
        batch_size: most rows per forward pass.
        max_tokens: most padded tokens per forward pass (rows x longest row); a single
            longer row still runs alone.
        chunk_size: vocabulary chunk of `token_logprobs` (None: its default).
        backend: `token_logprobs` backend (None: the dispatcher's choice).
        route: "batched" (the default: left-padded batches, head on target positions only,
            chunked vocabulary); "full-logits" (the same batches, but the model's own
            head and a float32 [B, T, V] log-softmax, as most codebases do: the memory
            baseline); "per-record" (one unpadded forward per sequence with full logits,
            as the anchors do: the speed baseline and a cross-check).

    Identical spans are scored once on every route. The batched routes also run a span
    whose inputs are a prefix of another span's inside that span's row (exact in a causal
    model; see `_merge_prefixes`). Rows are sorted by length so padding stays small.
    """
    if batch_size < 1 or max_tokens < 1:
        raise ValueError(f"batch_size and max_tokens must be positive, got {batch_size}, {max_tokens}")
    if route not in ROUTES:
        raise ValueError(f"unknown scoring route {route!r}; known: {', '.join(ROUTES)}")
    spans = [as_span(s) for s in spans]
    unique: dict[tuple, int] = {}
    owner = [unique.setdefault((tuple(s.ids), s.start, s.end), len(unique)) for s in spans]
    uspans = [TargetSpan(list(ids), a, b) for ids, a, b in unique]
    if route == "per-record":  # the anchors' way: each whole sequence, alone
        rows, row_of = [tuple(s.ids) for s in uspans], list(range(len(uspans)))
        batch_size = 1
    else:
        rows, row_of = _merge_prefixes(uspans)
    members: list[list[int]] = [[] for _ in rows]  # row -> the spans it scores
    for i, r in enumerate(row_of):
        members[r].append(i)
    lengths = [len(r) for r in rows]
    # longest first: the first batch shows the peak memory at once, not at the end of a run
    order = sorted(range(len(rows)), key=lambda r: -lengths[r])

    adapter = get_adapter(model)
    head = adapter.lm_head()
    device = execution_device(head)
    # an offloaded head keeps its values outside the module: read them where they live
    head_weight = read_tensor(model, head, "weight").to(device)
    head_bias = None if getattr(head, "bias", None) is None else read_tensor(model, head, "bias").to(device)
    results: list[TargetScore | None] = [None] * len(uspans)
    for group in _batches(order, lengths, batch_size, max_tokens):
        if route == "per-record":  # no padding at all: the plain forward of one sequence
            offsets, inputs = [0], {"input_ids": torch.tensor([rows[group[0]]], device=device)}
        else:
            batch = encode_batch(tok, [rows[r] for r in group]).to(device)
            offsets, inputs = batch.offsets, batch.model_inputs()
        b_idx, cols, targets, done = [], [], [], []
        for b, r in enumerate(group):
            for i in members[r]:
                s = uspans[i]
                for j in range(s.start, s.end):
                    b_idx.append(b)
                    cols.append(offsets[b] + j - 1)  # the logit predicting ids[j]
                    targets.append(s.ids[j])
                done.append(i)
        rows_t = torch.tensor(b_idx, device=device)
        cols_t = torch.tensor(cols, device=device)
        tgt = torch.tensor(targets, dtype=torch.long, device=device)
        if route == "batched":
            hidden = adapter.body()(**inputs, use_cache=False).last_hidden_state  # (B, T, d)
            h = hidden[rows_t, cols_t]  # (N, d): only the positions that predict a target token
            kwargs = {} if backend is None else {"backend": backend}
            logprob, argmax = token_logprobs(
                h,
                head_weight,
                tgt,
                bias=head_bias,
                softcap=adapter.logit_softcap,
                chunk_size=chunk_size,
                **kwargs,
            )
        else:
            logits = model(**inputs, use_cache=False).logits.float()  # (B, T, V)
            logp = logits.log_softmax(-1)  # a second (B, T, V) float32: what the batched route avoids
            logprob = logp[rows_t, cols_t, tgt]
            argmax = logits[rows_t, cols_t].argmax(-1)
        logprob, argmax = logprob.tolist(), argmax.tolist()
        k = 0
        for i in done:
            n = uspans[i].end - uspans[i].start
            results[i] = TargetScore(
                tuple(targets[k : k + n]), tuple(logprob[k : k + n]), tuple(argmax[k : k + n])
            )
            k += n
    return [results[u] for u in owner]


def _merge_prefixes(spans: Sequence[TargetSpan]) -> tuple[list[tuple[int, ...]], list[int]]:
    """Rows to run and the row of each span: a span needs the inputs ids[:end-1] only (the
    last target token is predicted, never read), and in a causal model the logits at
    positions < len(p) of any row that starts with p are those of p itself, so a span
    whose inputs are a prefix of another's rides along in that row. CounterFact's
    single-token targets after a shared prompt (target_new, ground_truth, locality answer)
    then cost one row instead of one each: about half the tokens on 200 records.
    """
    inputs = [tuple(s.ids[: s.end - 1]) for s in spans]
    ordered = sorted(set(inputs))
    # in lexicographic order the sequences that extend p follow p directly, so p is covered
    # iff its successor starts with p, and then by whatever covers that successor
    cover: dict[tuple[int, ...], int] = {}
    rows: list[tuple[int, ...]] = []
    for k in range(len(ordered) - 1, -1, -1):
        p = ordered[k]
        nxt = ordered[k + 1] if k + 1 < len(ordered) else None
        if nxt is not None and nxt[: len(p)] == p:
            cover[p] = cover[nxt]
        else:
            cover[p] = len(rows)
            rows.append(p)
    return rows, [cover[x] for x in inputs]


class SpanTable:
    """Collects (prompt text, target) pairs, tokenises each once, scores them all in one
    batched run, then answers lookups. Suites register what they need first, so a
    prompt+target shared by several metrics (rewrite accuracy and efficacy, locality and
    neighbourhood) costs one scored row."""

    def __init__(self, tok):
        self.tok = tok
        self._spans: dict[tuple[str, str], TargetSpan] = {}
        self._scores: dict[tuple[str, str], TargetScore] = {}

    def add(self, prompt_text: str, target: str) -> tuple[str, str]:
        key = (prompt_text, target.strip())
        if key not in self._spans:
            self._spans[key] = target_span(self.tok, prompt_text, target)
        return key

    def span(self, prompt_text: str, target: str) -> TargetSpan:
        return self._spans[(prompt_text, target.strip())]

    def __len__(self) -> int:
        return len(self._spans)

    def run(self, model: torch.nn.Module, **kwargs) -> None:
        """Score every registered pair not scored yet (kwargs go to `score_spans`)."""
        todo = [k for k in self._spans if k not in self._scores]
        if todo:
            scores = score_spans(model, self.tok, [self._spans[k] for k in todo], **kwargs)
            self._scores.update(zip(todo, scores))

    def __getitem__(self, key: tuple[str, str]) -> TargetScore:
        prompt_text, target = key
        return self._scores[(prompt_text, target.strip())]
