"""Suite "soft": knowedit's metrics with probabilities in place of argmax hits (FORMULAS.md,
section "Suite soft").

A token accuracy jumps by 1/n when one argmax flips; its probability counterpart moves with the
model. On a few answer tokens the accuracies are coarse, so a score built from them needs many
facts to separate two layers; these continuous versions of the same quantities are what a trial
edit (the hybrid locator) can be scored with instead.

Every metric is teacher-forced on ``prompt + " " + answer``, as in knowedit; p_j is the
probability of answer token j given everything before it.

- rewrite_prob: mean_j p_j of target_new after the filled prompt.
- rephrase_prob: the same after each rephrased prompt; mean over the request's prompts.
- locality_prob: per probe, 1 - mean_j |p_j(post) - p_j(pre)| over the probe's first answer,
  p(pre) from the unedited model's report (its locality predictions record the log-probabilities);
  mean over probes. 1: the edit left the probe's answer probabilities as they were.
- portability_prob: mean_j p_j against each alias of a portability answer, the best alias; mean
  over probes.

A metric whose inputs are missing is absent, never zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from golden_fast.evaluate import knowedit
from golden_fast.evaluate.scoring import SpanTable, TargetScore

if TYPE_CHECKING:
    from golden_fast.data import EditRequest

__all__ = ["CONVENTIONS", "METRICS", "compute", "mean_prob", "register"]

SUITE = "soft"
METRICS = ("rewrite_prob", "rephrase_prob", "locality_prob", "portability_prob")

CONVENTIONS = {
    "rewrite_prob": "mean over target_new's tokens of p(token | everything before it) after the filled prompt "
    "(teacher forcing): rewrite_acc with probabilities in place of argmax hits",
    "rephrase_prob": "rewrite_prob on each rephrase prompt, mean over the request's rephrase prompts",
    "locality_prob": "per probe, 1 - mean over its first answer's tokens of |p(post) - p(pre)|, p(pre) from the "
    "pre-edit report; mean over the request's probes; absent without a pre-edit report",
    "portability_prob": "mean token probability against each alias of a portability answer, best alias; mean "
    "over probes",
}


def mean_prob(score: TargetScore) -> float:
    """mean_j p_j: the arithmetic mean of the answer tokens' probabilities."""
    return sum(math.exp(lp) for lp in score.logprobs) / len(score.logprobs)


def register(req: EditRequest, table: SpanTable) -> None:
    knowedit.register(req, table)  # the same spans; only the arithmetic differs


def compute(
    req: EditRequest, table: SpanTable, pre: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, tuple[float, int]]:
    """{metric: (value, number of prompts or probes averaged)} for one request."""
    out: dict[str, tuple[float, int]] = {}
    if req.target_new is not None:
        out["rewrite_prob"] = (mean_prob(table[(req.text, req.target_new)]), 1)
        if req.rephrase_prompts:
            ps = [mean_prob(table[(p, req.target_new)]) for p in req.rephrase_prompts]
            out["rephrase_prob"] = (sum(ps) / len(ps), len(ps))
    if req.locality and pre is not None:
        kept = []
        for probe in req.locality:
            score = table[(probe.prompt, probe.answer)]
            before = knowedit.pre_prediction(req, probe, score, pre)
            if before.get("logprobs") is None:
                raise ValueError(
                    f"{req.ref}: the pre-edit report has no log-probabilities for locality prompt "
                    f"{probe.prompt!r}; evaluate the unedited model on these requests and pass that report as pre="
                )
            shift = [abs(math.exp(a) - math.exp(b)) for a, b in zip(score.logprobs, before["logprobs"])]
            kept.append(1.0 - sum(shift) / len(shift))
        out["locality_prob"] = (sum(kept) / len(kept), len(kept))
    if req.portability:
        best = [max(mean_prob(table[(probe.prompt, a)]) for a in probe.answers) for probe in req.portability]
        out["portability_prob"] = (sum(best) / len(best), len(best))
    return out
