"""`evaluate(model, tok, requests, ...) -> EvalReport`: every suite, batched.

Flow: every suite registers the (prompt, answer) pairs it needs in one `SpanTable`
(shared pairs are scored once), the table is scored in batched forward passes, then
each suite turns scores into per-request metrics. Fluency, when asked for, samples
continuations in batches.

Pre-edit results: a report always carries this model's argmax over every locality
span (`EvalReport.predictions`). Evaluate the unedited model once, then pass that
report as `pre=` when evaluating each edited model: locality compares against the
stored predictions (nothing is recomputed), and the table shows the pre-edit means.

Under torchrun (`golden_fast.distributed`) the requests are split across ranks: each rank scores
its shard, and the per-request rows and predictions are gathered back in input order, so every
rank returns the report one process would (summaries are computed from the gathered rows).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import torch

from golden_fast import distributed
from golden_fast.evaluate import counterfact, knowedit, soft
from golden_fast.evaluate.fluency import generate_samples, ngram_entropy
from golden_fast.evaluate.report import METRIC_ORDER, EvalReport, MetricRow
from golden_fast.evaluate.scoring import DEFAULT_BATCH_SIZE, DEFAULT_MAX_TOKENS, SpanTable

if TYPE_CHECKING:
    from golden_fast.data import EditRequest

__all__ = ["SUITES", "conventions", "evaluate", "fluency_scores", "on_first_rank", "shard_map"]

SUITES = {"knowedit": knowedit, "counterfact": counterfact, "soft": soft}

T = TypeVar("T")


def shard_map(n: int, work: Callable[[list[int]], Sequence[T]], split: bool = True) -> list[T]:
    """`work(indices)` (one result per index, in order) over this rank's `distributed.shard(n)`
    when `split` and a process group is active, else over every index; all results in input order,
    on every rank. A result may not be None (the gather reads None as missing).

    A rank whose `work` raises makes every rank raise (the others with a RuntimeError naming it)
    instead of leaving them waiting in the gather.
    """
    if not (split and distributed.active()):
        return list(work(list(range(n))))
    mine = distributed.shard(n)
    out: list[T] = []
    failure: BaseException | None = None
    try:
        out = list(work(mine))
    except BaseException as exc:  # noqa: BLE001 - re-raised below, after the other ranks learn of it
        failure = exc
    errors = distributed.all_gather_objects(None if failure is None else f"{type(failure).__name__}: {failure}")
    if failure is not None:
        raise failure
    for r, err in enumerate(errors):
        if err is not None:
            raise RuntimeError(f"rank {r} failed: {err}")
    return distributed.gather_in_order(n, out, mine)


def on_first_rank(fn: Callable[[], T], split: bool = True) -> T:
    """`fn()` run by rank 0 alone (when `split` and a process group is active), its result on
    every rank; a failure there is raised on every rank, as in `shard_map`."""
    return shard_map(1, lambda idx: [(fn(),) for _ in idx], split)[0][0]  # boxed: None is a result too


def conventions(
    suites: Sequence[str],
    *,
    fluency: bool,
    pre_given: bool,
    fluency_tokens: int = 100,
    top_k: int = 5,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, str]:
    """The convention texts a report prints: general ones, then one per metric."""
    out = {
        "scoring": 'teacher forcing on prompt + " " + answer tokenised jointly (the space belongs to the '
        "answer); "
        "float32 logits from the final hidden state (softcap applied when the model has one); argmax ties "
        "go to the lowest token id; NLL = mean per-token negative log-likelihood",
        "aggregation": "per request: mean over its prompts/probes (n in the rows); summary: mean over the "
        f"requests that have the metric (a metric whose inputs are missing is absent, never 0), "
        f"95% percentile "
        f"bootstrap over requests ({n_boot} draws, seed {seed})",
        "locality reference": "pre-edit predictions from the report passed as pre="
        if pre_given
        else "none given: this report is the pre-edit reference (locality absent; pass it as pre= later)",
    }
    if "knowedit" in suites:
        out.update(knowedit.CONVENTIONS)
    if fluency:  # KnowEdit's fluency and ROME's generation entropy are the same measure
        out["fluency"] = (
            f"{fluency_tokens} sampled tokens (top-k {top_k}, seed {seed}, EOS suppressed) after each "
            "generation prompt (or the filled prompt when there are none); per text (2/3 H2 + 4/3 H3) / 2, "
            "H_n = entropy (bits) of word n-gram frequencies, regex word tokenizer, prompt included; "
            "mean over texts; not x100"
        )
    if "counterfact" in suites:
        out.update(counterfact.CONVENTIONS)
    if "soft" in suites:
        out.update(soft.CONVENTIONS)
    return out


def evaluate(
    model: torch.nn.Module,
    tok,
    requests: Sequence[EditRequest],
    pre: EvalReport | None = None,
    suites: Sequence[str] = ("knowedit",),
    fluency: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    chunk_size: int | None = None,
    backend: str | None = None,
    route: str = "batched",
    fluency_tokens: int = 100,
    fluency_top_k: int = 5,
    fluency_batch_size: int = 16,
    seed: int = 0,
    n_boot: int = 2000,
    model_name: str | None = None,
    data_parallel: bool = True,
) -> EvalReport:
    """Evaluate `model` on `requests` with the named suites; see FORMULAS.md, section "Evaluation
    metrics", and each suite's module.

    Args:
        model, tok: the (possibly edited) model and its tokenizer.
        requests: `EditRequest`s; each gets the metrics whose inputs it has.
        pre: a report from the unedited model (its locality predictions are reused);
            None: this model is the reference and locality is absent.
        suites: any of "knowedit", "counterfact", "soft".
        fluency: also sample continuations and measure n-gram entropy (slow; any suite).
        batch_size, max_tokens: rows and padded tokens per forward pass.
        chunk_size, backend: passed to the `token_logprobs` op.
        route: `score_spans` route; "per-record" and "full-logits" are the baselines the
            benchmark compares with (same numbers, slower / more memory).
        fluency_tokens, fluency_top_k, fluency_batch_size, seed: the fluency sampler.
        n_boot: bootstrap draws for the summary intervals (seed: `seed`).
        model_name: for the report header (default: the model's name_or_path).
        data_parallel: under torchrun, split the requests across ranks (every rank must call);
            False: this process evaluates every request itself (ranks doing different work).
    """
    suites = tuple(dict.fromkeys(suites))
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        raise ValueError(f"unknown suite(s) {unknown or suites}; known: {', '.join(SUITES)}")
    requests = list(requests)
    split = data_parallel and distributed.active()
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        pre_predictions = pre.predictions if pre is not None else None
        score_kwargs = dict(
            batch_size=batch_size, max_tokens=max_tokens, chunk_size=chunk_size, backend=backend, route=route
        )
        per_request = shard_map(
            len(requests),
            lambda idx: _score_requests(model, tok, requests, idx, suites, pre_predictions, score_kwargs),
            split,
        )
        t_score = time.perf_counter() - t0
        rows: list[MetricRow] = []
        predictions: dict = {}
        for req_rows, req_predictions in per_request:
            rows += req_rows
            predictions.update(req_predictions)
        if fluency:
            # one RNG stream runs through every batch of samples, so they cannot be split without
            # changing them: rank 0 samples all of them, the others receive the rows
            rows += on_first_rank(
                lambda: _fluency_rows(model, tok, requests, fluency_tokens, fluency_top_k, seed, fluency_batch_size),
                split,
            )
    finally:
        model.train(was_training)

    meta = {
        "model": model_name
        or getattr(getattr(model, "config", None), "name_or_path", None)
        or type(model).__name__,
        "n_requests": len(requests),
        "n_scored_sequences": _count_spans(requests, suites),
        "batch_size": batch_size,
        "max_tokens": max_tokens,
        "chunk_size": chunk_size,
        "route": route,
        "scoring_seconds": round(t_score, 3),
        "total_seconds": round(time.perf_counter() - t0, 3),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if split:
        meta["data_parallel_ranks"] = distributed.world_size()
    conv = conventions(
        suites,
        fluency=fluency,
        pre_given=pre is not None,
        fluency_tokens=fluency_tokens,
        top_k=fluency_top_k,
        n_boot=n_boot,
        seed=seed,
    )
    # rows by request, then in display order: stable CSVs whatever the suite order
    rank = {m: i for i, m in enumerate(METRIC_ORDER)}
    rows.sort(key=lambda r: (r.position, rank.get(r.metric, len(rank))))
    return EvalReport(rows, suites, conv, predictions, meta, pre=pre, n_boot=n_boot, seed=seed)


def _register(req: EditRequest, table, suites: Sequence[str]) -> None:
    try:
        for s in suites:
            SUITES[s].register(req, table)
        knowedit.register_locality(req, table)  # predictions are recorded in every report
    except ValueError as exc:  # a target that tokenises to nothing: name the request
        raise ValueError(f"{req.ref}: {exc}") from None


def _score_requests(
    model, tok, requests, positions: Sequence[int], suites, pre_predictions, score_kwargs
) -> list[tuple[list[MetricRow], dict]]:
    """(metric rows, locality predictions) of each request at `positions`, scored in one table."""
    table = SpanTable(tok)
    for pos in positions:
        _register(requests[pos], table, suites)
    table.run(model, **score_kwargs)
    out = []
    for pos in positions:
        req = requests[pos]
        rows = [
            MetricRow(pos, req.index, req.case_id, metric, float(value), int(n))
            for s in suites
            for metric, (value, n) in SUITES[s].compute(req, table, pre_predictions).items()
        ]
        out.append((rows, knowedit.predictions(req, table)))
    return out


class _SpanKeys:
    """The keys a `SpanTable` would hold, without tokenising: counts the distinct scored
    sequences of all requests when each rank has scored only its shard."""

    def __init__(self) -> None:
        self.keys: set[tuple[str, str]] = set()

    def add(self, prompt_text: str, target: str) -> tuple[str, str]:
        key = (prompt_text, target.strip())
        self.keys.add(key)
        return key


def _count_spans(requests: Sequence[EditRequest], suites: Sequence[str]) -> int:
    keys = _SpanKeys()
    for req in requests:
        for s in suites:
            SUITES[s].register(req, keys)
        knowedit.register_locality(req, keys)
    return len(keys.keys)


def fluency_scores(
    model: torch.nn.Module,
    tok,
    requests: Sequence[EditRequest],
    *,
    n_tokens: int = 100,
    top_k: int = 5,
    seed: int = 0,
    batch_size: int = 16,
    data_parallel: bool = True,
) -> dict[int, float]:
    """{position: fluency} of `requests`, exactly what `evaluate(..., fluency=True)` reports for them
    with the same sampler settings, without scoring any suite."""
    split = data_parallel and distributed.active()
    was_training = model.training
    model.eval()
    try:
        rows = on_first_rank(lambda: _fluency_rows(model, tok, list(requests), n_tokens, top_k, seed, batch_size),
                             split)
    finally:
        model.train(was_training)
    return {r.position: r.value for r in rows}


def _fluency_rows(model, tok, requests, n_tokens, top_k, seed, batch_size) -> list[MetricRow]:
    prompts, owner = [], []
    for pos, req in enumerate(requests):
        for p in req.generation_prompts or (req.text,):
            prompts.append(p)
            owner.append(pos)
    texts = generate_samples(
        model, tok, prompts, max_new_tokens=n_tokens, top_k=top_k, seed=seed, batch_size=batch_size
    )
    per: dict[int, list[float]] = {}
    for pos, text in zip(owner, texts):
        per.setdefault(pos, []).append(ngram_entropy(text))
    return [
        MetricRow(pos, requests[pos].index, requests[pos].case_id, "fluency", sum(v) / len(v), len(v))
        for pos, v in per.items()
    ]
