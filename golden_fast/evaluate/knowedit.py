"""Suite "knowedit": EasyEdit / KnowEdit's token-accuracy metrics (FORMULAS.md, section
"Suite knowedit"), what the Golden Layers paper reports.

Every metric is teacher-forced on ``prompt + " " + answer``: at each answer token,
the model's argmax at the previous position is compared with something.

- rewrite_acc: argmax == target_new token, after the filled prompt.
- rephrase_acc: the same after each rephrased prompt; mean over the request's prompts.
- locality: post-edit argmax == pre-edit argmax over the answer span of each locality
  probe (its first answer); mean over probes. Needs the pre-edit predictions.
- portability: argmax == answer token, for each alias of a portability probe; the best
  alias counts; mean over probes.

A metric whose inputs are missing (no target_new, no rephrase, no probes, no pre-edit
predictions) is absent, never zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from golden_fast.evaluate.scoring import SpanTable, TargetScore

if TYPE_CHECKING:  # annotations only: evaluation needs no loader code at import time
    from golden_fast.data import EditRequest

__all__ = [
    "CONVENTIONS",
    "METRICS",
    "compute",
    "prediction_key",
    "pre_prediction",
    "predictions",
    "register",
    "register_locality",
]

SUITE = "knowedit"
METRICS = ("rewrite_acc", "rephrase_acc", "locality", "portability")

CONVENTIONS = {
    "rewrite_acc": "token accuracy of target_new after the filled prompt: share of target tokens equal to "
    "the argmax at the previous position (teacher forcing, EasyEdit)",
    "rephrase_acc": "rewrite_acc on each rephrase prompt, mean over the request's rephrase prompts",
    "locality": "share of answer-span positions (locality prompt + ' ' + first answer, teacher-forced) whose "
    "argmax equals the pre-edit argmax; mean over the request's probes; absent without pre-edit predictions",
    "portability": "token accuracy against each alias of a portability answer, best alias; mean over probes",
}


def prediction_key(prompt: str, answer: str) -> str:
    """Key of a locality span in `EvalReport.predictions` (a string, so it survives JSON)."""
    return f"{prompt}\x1f{answer}"


def register(req: EditRequest, table: SpanTable) -> None:
    if req.target_new is not None:
        table.add(req.text, req.target_new)
        for prompt in req.rephrase_prompts:
            table.add(prompt, req.target_new)
    register_locality(req, table)
    for probe in req.portability:
        for alias in probe.answers:
            table.add(probe.prompt, alias)


def register_locality(req: EditRequest, table: SpanTable) -> None:
    """The locality spans alone: every report records its predictions over them."""
    for probe in req.locality:
        table.add(probe.prompt, probe.answer)


def predictions(req: EditRequest, table: SpanTable) -> dict[str, dict[str, list[int]]]:
    """This model's argmax (and the answer tokens' log-probabilities, for suite soft) over every
    locality span of `req`: what a later call compares against when this report is passed as `pre`."""
    out = {}
    for probe in req.locality:
        score = table[(probe.prompt, probe.answer)]
        out[prediction_key(probe.prompt, probe.answer)] = {
            "target_ids": list(score.target_ids),
            "argmax": list(score.argmax),
            "logprobs": list(score.logprobs),
        }
    return out


def pre_prediction(req: EditRequest, probe: Any, score: TargetScore, pre: Mapping[str, Mapping[str, Any]]
                   ) -> Mapping[str, Any]:
    """The pre-edit report's record of a locality probe (`predictions`), checked to belong to the same
    tokenisation as `score`; an error names the request when it is missing or does not match."""
    before = pre.get(prediction_key(probe.prompt, probe.answer))
    if before is None:
        raise ValueError(
            f"{req.ref}: the pre-edit report has no predictions for locality prompt "
            f"{probe.prompt!r}; "
            "evaluate the unedited model on these requests first and pass that report as pre="
        )
    if list(before["target_ids"]) != list(score.target_ids):
        raise ValueError(
            f"{req.ref}: locality answer {probe.answer!r} tokenises differently from the "
            "pre-edit report "
            "(a report from another tokenizer?)"
        )
    return before


def compute(
    req: EditRequest, table: SpanTable, pre: Mapping[str, Mapping[str, list[int]]] | None
) -> dict[str, tuple[float, int]]:
    """{metric: (value, number of prompts or probes averaged)} for one request."""
    out: dict[str, tuple[float, int]] = {}
    if req.target_new is not None:
        out["rewrite_acc"] = (table[(req.text, req.target_new)].accuracy, 1)
        if req.rephrase_prompts:
            accs = [table[(p, req.target_new)].accuracy for p in req.rephrase_prompts]
            out["rephrase_acc"] = (sum(accs) / len(accs), len(accs))
    if req.locality and pre is not None:
        shares = []
        for probe in req.locality:
            score = table[(probe.prompt, probe.answer)]
            before = pre_prediction(req, probe, score, pre)
            same = [a == b for a, b in zip(score.argmax, before["argmax"])]
            shares.append(sum(same) / len(same))
        out["locality"] = (sum(shares) / len(shares), len(shares))
    if req.portability:
        best = [max(table[(probe.prompt, a)].accuracy for a in probe.answers) for probe in req.portability]
        out["portability"] = (sum(best) / len(best), len(best))
    return out
