"""Evaluation of edits (FORMULAS.md, section "Evaluation metrics"): the KnowEdit and CounterFact
suites, fluency, reports.

- `evaluate(model, tok, requests, pre=None, suites=("knowedit",), fluency=False)`
  returns an `EvalReport` (rows per request and metric, bootstrap summaries, the
  conventions used, to_json / to_csv / a printed table).
- `score_spans` is the batched scoring primitive the suites (and the editors) share:
  per-token log-probabilities and argmax of target tokens, many prompts per forward.
- `ngram_entropy` is the fluency measure of one text.
"""

from golden_fast.evaluate.api import SUITES, conventions, evaluate, fluency_scores
from golden_fast.evaluate.fluency import generate_samples, ngram_entropy, word_tokenize
from golden_fast.evaluate.report import EvalReport, MetricRow, MetricSummary
from golden_fast.evaluate.scoring import SpanTable, TargetScore, as_span, score_spans

__all__ = [
    "SUITES",
    "EvalReport",
    "MetricRow",
    "MetricSummary",
    "SpanTable",
    "TargetScore",
    "as_span",
    "conventions",
    "evaluate",
    "fluency_scores",
    "generate_samples",
    "ngram_entropy",
    "score_spans",
    "word_tokenize",
]
