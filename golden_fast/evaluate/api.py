"""`evaluate(model, tok, requests, ...) -> EvalReport`: both suites, batched.

Flow: every suite registers the (prompt, answer) pairs it needs in one `SpanTable`
(shared pairs are scored once), the table is scored in batched forward passes, then
each suite turns scores into per-request metrics. Fluency, when asked for, samples
continuations in batches.

Pre-edit results: a report always carries this model's argmax over every locality
span (`EvalReport.predictions`). Evaluate the unedited model once, then pass that
report as `pre=` when evaluating each edited model: locality compares against the
stored predictions (nothing is recomputed), and the table shows the pre-edit means.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from golden_fast.evaluate import counterfact, knowedit
from golden_fast.evaluate.fluency import generate_samples, ngram_entropy
from golden_fast.evaluate.report import METRIC_ORDER, EvalReport, MetricRow
from golden_fast.evaluate.scoring import DEFAULT_BATCH_SIZE, DEFAULT_MAX_TOKENS, SpanTable

if TYPE_CHECKING:
    from golden_fast.data import EditRequest

__all__ = ["SUITES", "conventions", "evaluate"]

SUITES = {"knowedit": knowedit, "counterfact": counterfact}


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
) -> EvalReport:
    """Evaluate `model` on `requests` with the named suites; see FORMULAS.md, section "Evaluation
    metrics", and each suite's module.

    Args:
        model, tok: the (possibly edited) model and its tokenizer.
        requests: `EditRequest`s; each gets the metrics whose inputs it has.
        pre: a report from the unedited model (its locality predictions are reused);
            None: this model is the reference and locality is absent.
        suites: any of "knowedit", "counterfact".
        fluency: also sample continuations and measure n-gram entropy (slow; any suite).
        batch_size, max_tokens: rows and padded tokens per forward pass.
        chunk_size, backend: passed to the `token_logprobs` op.
        route: `score_spans` route; "per-record" and "full-logits" are the baselines the
            benchmark compares with (same numbers, slower / more memory).
        fluency_tokens, fluency_top_k, fluency_batch_size, seed: the fluency sampler.
        n_boot: bootstrap draws for the summary intervals (seed: `seed`).
        model_name: for the report header (default: the model's name_or_path).
    """
    suites = tuple(dict.fromkeys(suites))
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        raise ValueError(f"unknown suite(s) {unknown or suites}; known: {', '.join(SUITES)}")
    requests = list(requests)
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        table = SpanTable(tok)
        for req in requests:
            try:
                for s in suites:
                    SUITES[s].register(req, table)
                knowedit.register_locality(req, table)  # predictions are recorded in every report
            except ValueError as exc:  # a target that tokenises to nothing: name the request
                raise ValueError(f"{req.ref}: {exc}") from None
        table.run(
            model,
            batch_size=batch_size,
            max_tokens=max_tokens,
            chunk_size=chunk_size,
            backend=backend,
            route=route,
        )
        t_score = time.perf_counter() - t0

        pre_predictions = pre.predictions if pre is not None else None
        rows: list[MetricRow] = []
        predictions: dict = {}
        for pos, req in enumerate(requests):
            predictions.update(knowedit.predictions(req, table))
            for s in suites:
                for metric, (value, n) in SUITES[s].compute(req, table, pre_predictions).items():
                    rows.append(MetricRow(pos, req.index, req.case_id, metric, float(value), int(n)))

        if fluency:
            rows += _fluency_rows(
                model, tok, requests, fluency_tokens, fluency_top_k, seed, fluency_batch_size
            )
    finally:
        model.train(was_training)

    meta = {
        "model": model_name
        or getattr(getattr(model, "config", None), "name_or_path", None)
        or type(model).__name__,
        "n_requests": len(requests),
        "n_scored_sequences": len(table),
        "batch_size": batch_size,
        "max_tokens": max_tokens,
        "chunk_size": chunk_size,
        "route": route,
        "scoring_seconds": round(t_score, 3),
        "total_seconds": round(time.perf_counter() - t0, 3),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
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
