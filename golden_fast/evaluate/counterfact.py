"""Suite "counterfact": ROME / MEMIT's CounterFact probability comparisons (FORMULAS.md,
section "Suite counterfact").

All comparisons use the mean per-token negative log-likelihood (NLL) of an answer,
teacher-forced on ``prompt + " " + answer`` (joint tokenisation), as ROME does.

- efficacy: [NLL(target_new) < NLL(ground_truth)] on the filled prompt (1 or 0).
- paraphrase: the same on each rephrase prompt; share over the request's prompts.
- neighborhood: [NLL(true) < NLL(target_new)] on each locality probe (reversed: the
  neighbour must keep its own answer); share over probes. "true" is the probe's first
  answer: for CounterFact the loaders set it to the request's ground_truth (a
  neighbour shares the relation and the true object), for other data it is the
  probe's own answer. A probe whose answer equals target_new is skipped (nothing to
  compare).
- *_magnitude: ROME's "magnitude" (summarize.py's *_diff): exp(-NLL(new)) -
  exp(-NLL(true)), i.e. the difference of geometric-mean per-token probabilities;
  reversed (true - new) for neighborhood; mean over the request's prompts.
- score: the harmonic mean of the three success rates, a summary over requests only
  (no per-request row).

Success is strict (<): a tie is a failure, as in ROME's `>` comparison.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from golden_fast.evaluate.scoring import SpanTable

if TYPE_CHECKING:
    from golden_fast.data import EditRequest

__all__ = ["CONVENTIONS", "METRICS", "SCORE_PARTS", "compute", "register"]

SUITE = "counterfact"
METRICS = (
    "efficacy",
    "efficacy_magnitude",
    "paraphrase",
    "paraphrase_magnitude",
    "neighborhood",
    "neighborhood_magnitude",
    "score",
)
# score = harmonic mean of these summary means
SCORE_PARTS = ("efficacy", "paraphrase", "neighborhood")

CONVENTIONS = {
    "efficacy": "1 if mean per-token NLL(target_new) < NLL(ground_truth) after the filled prompt, else 0 "
    "(ROME efficacy success)",
    "efficacy_magnitude": "exp(-NLL(target_new)) - exp(-NLL(ground_truth)): geometric-mean per-token "
    "probabilities (ROME's magnitude)",
    "paraphrase": "efficacy on each rephrase prompt, share over the request's rephrase prompts",
    "paraphrase_magnitude": "efficacy_magnitude on each rephrase prompt, mean over prompts",
    "neighborhood": "share of locality probes where NLL(probe answer) < NLL(target_new); the probe answer "
    "is the "
    "request's ground_truth for CounterFact (shared true object); probes answering target_new are skipped",
    "neighborhood_magnitude": "exp(-NLL(probe answer)) - exp(-NLL(target_new)), mean over probes",
    "score": "harmonic mean of the efficacy, paraphrase and neighborhood means (summary only); its interval "
    "resamples requests",
}


def _neighbours(req: EditRequest):
    return [p for p in req.locality if p.answer != req.target_new]


def register(req: EditRequest, table: SpanTable) -> None:
    new, true = req.target_new, req.ground_truth
    if new is None:
        return
    if true is not None:
        for prompt in (req.text, *req.rephrase_prompts):
            table.add(prompt, new)
            table.add(prompt, true)
    for probe in _neighbours(req):
        table.add(probe.prompt, probe.answer)
        table.add(probe.prompt, new)


def _compare(table: SpanTable, prompts, better: list[str], worse: list[str]) -> tuple[float, float, int]:
    """(success share, mean magnitude, n) of answer `better[i]` over `worse[i]` on prompts[i]."""
    wins, diffs = [], []
    for prompt, good, bad in zip(prompts, better, worse):
        g, b = table[(prompt, good)], table[(prompt, bad)]
        wins.append(1.0 if g.nll < b.nll else 0.0)
        diffs.append(g.prob - b.prob)
    n = len(wins)
    return sum(wins) / n, sum(diffs) / n, n


def compute(req: EditRequest, table: SpanTable, pre=None) -> dict[str, tuple[float, int]]:
    """{metric: (value, number of prompts averaged)} for one request (`pre` is unused)."""
    out: dict[str, tuple[float, int]] = {}
    new, true = req.target_new, req.ground_truth
    if new is None:
        return out
    if true is not None:
        win, mag, n = _compare(table, [req.text], [new], [true])
        out["efficacy"], out["efficacy_magnitude"] = (win, n), (mag, n)
        if req.rephrase_prompts:
            k = len(req.rephrase_prompts)
            win, mag, n = _compare(table, req.rephrase_prompts, [new] * k, [true] * k)
            out["paraphrase"], out["paraphrase_magnitude"] = (win, n), (mag, n)
    probes = _neighbours(req)
    if probes:
        win, mag, n = _compare(
            table, [p.prompt for p in probes], [p.answer for p in probes], [new] * len(probes)
        )
        out["neighborhood"], out["neighborhood_magnitude"] = (win, n), (mag, n)
    return out
