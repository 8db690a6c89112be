"""evaluate() and score_spans() against a plain per-record implementation written here.

The reference below runs ONE unpadded forward per (prompt, answer) through the model's own
forward (full logits, float64 log-softmax) and computes each metric straight from its definition
(golden_fast/FORMULAS.md, section Evaluation metrics). It shares nothing with golden_fast.evaluate
except the tokenisation convention (`prompt + " " + answer` tokenised jointly, the space belonging to
the answer: `target_span`, tested in test_tokens.py). The only tolerated disagreement is a position whose
two top logits lie within 1e-4 of each other (or two NLLs within 1e-4 for a success flag);
each test prints how many there were.
"""

from __future__ import annotations

import copy
import math
import statistics

import pytest
import torch

from golden_fast.data import EditRequest, Probe
from golden_fast.evaluate import EvalReport, evaluate, score_spans
from golden_fast.models import get_adapter
from golden_fast.tokens import TargetSpan, target_span

TIE = 1e-4
LONG = (
    "In the long and winding history of the old city, after the river had flooded twice and the bridges "
    "had been rebuilt by three generations of masons, travellers still asked the same question, namely "
    "which of the towers was the oldest, and the answer given by the guides was always that"
)


# ---- the plain per-record reference -----------------------------------------------------------


_REF_CACHE: dict = {}


@torch.no_grad()
def ref_score(model, tok, prompt: str, answer: str) -> dict:
    """Per target token: id, log-prob, argmax and top-2 logit margin, from one unpadded forward.
    Memoised per model object (tests never modify a model after scoring it)."""
    key = (id(model), prompt, answer)
    if key not in _REF_CACHE:
        _REF_CACHE[key] = (model, _ref_score(model, tok, prompt, answer))  # keep model alive: id stays unique
    return _REF_CACHE[key][1]


def _ref_score(model, tok, prompt: str, answer: str) -> dict:
    span = target_span(tok, prompt, answer)
    logits = model(input_ids=torch.tensor([span.ids])).logits[0].double()  # (T, V)
    logp = logits.log_softmax(-1)
    out = {"ids": [], "logprobs": [], "argmax": [], "margin": []}
    for j in range(span.start, span.end):
        row = logits[j - 1]
        top2 = row.topk(2).values
        out["ids"].append(span.ids[j])
        out["logprobs"].append(logp[j - 1, span.ids[j]].item())
        out["argmax"].append(int(row.argmax()))
        out["margin"].append((top2[0] - top2[1]).item())
    return out


def _acc(s):
    return sum(a == t for a, t in zip(s["argmax"], s["ids"])) / len(s["ids"])


def _nll(s):
    return -sum(s["logprobs"]) / len(s["logprobs"])


def _tied(*scores):
    return any(m < TIE for s in scores for m in s["margin"])


def ref_metrics(model, tok, req: EditRequest, pre_model=None, suites=("knowedit", "counterfact")) -> dict:
    """{metric: (value, ambiguous)} for one request, from the definitions."""
    S = lambda p, a: ref_score(model, tok, p, a)  # noqa: E731
    out = {}
    new, true = req.target_new, req.ground_truth
    if "knowedit" in suites:
        if new is not None:
            s = S(req.text, new)
            out["rewrite_acc"] = (_acc(s), _tied(s))
            if req.rephrase_prompts:
                ss = [S(p, new) for p in req.rephrase_prompts]
                out["rephrase_acc"] = (sum(map(_acc, ss)) / len(ss), _tied(*ss))
        if req.locality and pre_model is not None:
            vals, amb = [], False
            for probe in req.locality:
                post = S(probe.prompt, probe.answers[0])
                before = ref_score(pre_model, tok, probe.prompt, probe.answers[0])
                vals.append(sum(a == b for a, b in zip(post["argmax"], before["argmax"])) / len(post["ids"]))
                amb |= _tied(post, before)
            out["locality"] = (sum(vals) / len(vals), amb)
        if req.portability:
            vals, amb = [], False
            for probe in req.portability:
                ss = [S(probe.prompt, a) for a in probe.answers]
                vals.append(max(map(_acc, ss)))
                amb |= _tied(*ss)
            out["portability"] = (sum(vals) / len(vals), amb)
    if "soft" in suites:
        mp = lambda s: sum(math.exp(x) for x in s["logprobs"]) / len(s["logprobs"])  # noqa: E731
        if new is not None:
            out["rewrite_prob"] = (mp(S(req.text, new)), False)
            if req.rephrase_prompts:
                ps = [mp(S(p, new)) for p in req.rephrase_prompts]
                out["rephrase_prob"] = (sum(ps) / len(ps), False)
        if req.locality and pre_model is not None:
            vals = []
            for probe in req.locality:
                post = S(probe.prompt, probe.answers[0])
                before = ref_score(pre_model, tok, probe.prompt, probe.answers[0])
                shift = [abs(math.exp(a) - math.exp(b)) for a, b in zip(post["logprobs"], before["logprobs"])]
                vals.append(1 - sum(shift) / len(shift))
            out["locality_prob"] = (sum(vals) / len(vals), False)
        if req.portability:
            vals = [max(mp(S(probe.prompt, a)) for a in probe.answers) for probe in req.portability]
            out["portability_prob"] = (sum(vals) / len(vals), False)
    if "counterfact" in suites and new is not None:

        def versus(prompts, good, bad):
            wins, mags, amb = [], [], False
            for p, g, b in zip(prompts, good, bad):
                ng, nb = _nll(S(p, g)), _nll(S(p, b))
                wins.append(float(ng < nb))
                mags.append(math.exp(-ng) - math.exp(-nb))
                amb |= abs(ng - nb) < TIE
            return (sum(wins) / len(wins), amb), (sum(mags) / len(mags), False)

        if true is not None:
            out["efficacy"], out["efficacy_magnitude"] = versus([req.text], [new], [true])
            if req.rephrase_prompts:
                k = len(req.rephrase_prompts)
                out["paraphrase"], out["paraphrase_magnitude"] = versus(
                    req.rephrase_prompts, [new] * k, [true] * k
                )
        probes = [p for p in req.locality if p.answers[0] != new]
        if probes:
            out["neighborhood"], out["neighborhood_magnitude"] = versus(
                [p.prompt for p in probes], [p.answers[0] for p in probes], [new] * len(probes)
            )
    return out


def assert_report_matches(report: EvalReport, refs: list[dict], label: str) -> int:
    """Same metric set per request; equal values except near-ties. Returns the near-tie count."""
    got = report.by_request()
    ties = 0
    for pos, ref in enumerate(refs):
        mine = {m: v for m, v in got.get(pos, {}).items() if m != "fluency"}
        assert set(mine) == set(ref), (
            f"{label} request {pos}: metrics {sorted(mine)} != reference {sorted(ref)}"
        )
        for m, (value, ambiguous) in ref.items():
            if m.endswith(("_magnitude", "_prob")):
                assert mine[m] == pytest.approx(value, abs=1e-5), f"{label} request {pos} {m}"
            elif mine[m] != pytest.approx(value, abs=1e-12):
                assert ambiguous, f"{label} request {pos} {m}: {mine[m]} != reference {value} (no near-tie)"
                ties += 1
    print(f"{label}: {ties} value(s) differing at near-ties (top-2 logits within {TIE})")
    return ties


# ---- requests that exercise the edge cases ----------------------------------------------------


@torch.no_grad()
def _greedy_text(model, tok, prompt: str, n: int = 3) -> str:
    """The model's own greedy continuation: a target it gets (partly) right, so accuracies are
    not all zero and a wrong position shift would show."""
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    text = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
    return text or "Paris"


_REQUESTS: dict = {}


def make_requests(model, tok) -> list[EditRequest]:
    if id(model) not in _REQUESTS:
        _REQUESTS[id(model)] = (model, _make_requests(model, tok))
    return _REQUESTS[id(model)][1]


def _make_requests(model, tok) -> list[EditRequest]:
    own = _greedy_text(model, tok, "The capital of France is")
    own_loc = _greedy_text(model, tok, "The capital of Italy is", 2)
    return [
        EditRequest(  # everything present; a target the model predicts itself
            "The capital of {} is",
            "France",
            own,
            ground_truth="Paris",
            rephrase_prompts=("Which city is the capital of France? It is", "France's capital:"),
            locality=(Probe("The capital of Italy is", (own_loc,)), Probe("Q: two plus two? A:", ("4",))),
            portability=(Probe("The language of the capital of France is", ("English", "British English")),),
            case_id=10,
            index=0,
        ),
        EditRequest(  # multi-token target with digits (Gemma splits them), literal prompt
            "Danielle Darrieux was born in",
            "Danielle Darrieux",
            "1984 Amsterdam, Netherlands",
            ground_truth="1917",
            rephrase_prompts=(LONG,),
            locality=(Probe("Michel Rocard was born in", ("1930",)),),
            case_id="b",
            index=1,
        ),
        EditRequest(  # leading punctuation; no rephrase, no probes: only the rewrite metrics
            "{} ends with",
            "The list",
            ", 3.14 and (x)",
            ground_truth="nothing",
            index=2,
        ),
        EditRequest(  # no ground truth, no probes: only rewrite_acc
            "A {}",
            "b",
            "Zebra",
            index=3,
        ),
        EditRequest(  # trace-only: no target_new; locality and portability still apply
            "The twin city of {} is",
            "Lyon",
            None,
            ground_truth="Beirut",
            locality=(Probe("The twin city of Trieste is", ("Beirut",)),),
            portability=(Probe("Lyon's twin city is in", ("Lebanon",)),),
            index=4,
        ),
        EditRequest(  # very short prompt next to LONG in the same batch; probe answer == target_new skipped
            "{}",
            "X",
            "Rome",
            ground_truth="Paris",
            rephrase_prompts=("X" + LONG,),
            locality=(Probe("Y is", ("Rome",)), Probe(LONG, ("Berlin",))),
            index=5,
        ),
    ]


def edited_copy(model, scale=0.5, seed=0):
    """A copy with noise on one down-projection: some argmaxes move, most do not."""
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = get_adapter(m).down_weight(1)
        w += scale * w.std() * torch.randn(w.shape, generator=g)
    return m


# ---- tests ---------------------------------------------------------------------------------------


def test_score_spans_matches_unpadded_forward(tiny):
    name, model, tok = tiny
    pairs = [
        ("A", "b"),
        (LONG, "the north tower"),
        ("The year was", "1984"),
        ("x", "!?"),
        ("He said", "(yes)"),
        # shared prompts: a span whose inputs are a prefix of another's is scored inside that row
        ("The capital is", "Paris"),
        ("The capital is", "Paris, France"),
        ("The capital is", "Rome"),
        ("The year was", "19"),
    ]
    spans = [target_span(tok, p, a) for p, a in pairs]
    # prompts of very different lengths share batches; a pair input (prompt ids, target ids) works too
    scores = score_spans(
        model, tok, [*spans, (spans[1].ids[: spans[1].start], spans[1].target_ids)], batch_size=3
    )
    ties = 0
    for (p, a), sc in zip([*pairs, pairs[1]], scores):
        ref = ref_score(model, tok, p, a)
        assert list(sc.target_ids) == ref["ids"]
        assert max(abs(x - y) for x, y in zip(sc.logprobs, ref["logprobs"])) < 1e-4
        for mine, theirs, margin in zip(sc.argmax, ref["argmax"], ref["margin"]):
            if mine != theirs:
                assert margin < TIE, f"{name}: argmax {mine} != {theirs} with margin {margin}"
                ties += 1
    print(f"{name}: {ties} near-tie argmax difference(s)")


def test_merge_prefixes_covers_every_span():
    import random

    from golden_fast.evaluate.scoring import _merge_prefixes

    rng = random.Random(0)
    spans = []
    for _ in range(300):
        ids = [rng.randrange(4) for _ in range(rng.randrange(2, 8))]
        start = rng.randrange(1, len(ids))
        spans.append(TargetSpan(ids, start, rng.randrange(start + 1, len(ids) + 1)))
    rows, row_of = _merge_prefixes(spans)
    for s, r in zip(spans, row_of):  # every span's inputs lie at the start of its row
        assert list(rows[r][: s.end - 1]) == s.ids[: s.end - 1]
    for a in rows:  # and no row is a prefix of another: nothing runs twice
        assert not any(b != a and b[: len(a)] == a for b in rows)
    assert len(rows) < len({tuple(s.ids[: s.end - 1]) for s in spans})


def test_digits_and_space_sensitive_targets(tiny):
    name, model, tok = tiny
    # "1984" is several tokens (Gemma splits digits)
    span = target_span(tok, "The year was", "1984")
    assert len(span.target_ids) >= 2
    # the joint tokenisation differs from tokenising the target alone, with or without its space
    # (byte-level BPE: "P" "aris" vs "ĠParis"; SentencePiece: "▁" "▁Paris" vs "▁Paris")
    spaced = target_span(tok, "The capital is", "Paris").target_ids
    alone = tok("Paris", add_special_tokens=False)["input_ids"]
    with_space = tok(" Paris", add_special_tokens=False)["input_ids"]
    assert spaced != alone or spaced != with_space, f"{name}: case does not exercise joint tokenisation"
    (sc,) = score_spans(model, tok, [target_span(tok, "The capital is", "Paris")])
    assert list(sc.target_ids) == spaced == ref_score(model, tok, "The capital is", "Paris")["ids"]


def test_evaluate_matches_reference_pre_and_post(tiny):
    name, model, tok = tiny
    reqs = make_requests(model, tok)
    suites = ("knowedit", "counterfact")
    pre = evaluate(model, tok, reqs, suites=suites, batch_size=4)
    assert "locality" not in pre.metrics  # a pre-edit reference has nothing to compare with
    ties = assert_report_matches(pre, [ref_metrics(model, tok, r) for r in reqs], f"{name} pre")

    edited = edited_copy(model)
    post = evaluate(edited, tok, reqs, pre=pre, suites=suites, batch_size=64)
    refs = [ref_metrics(edited, tok, r, pre_model=model) for r in reqs]
    ties += assert_report_matches(post, refs, f"{name} post")
    assert ties <= 2
    # locality compared against the *stored* pre-edit predictions: the edit moved some of them
    assert post.value(0, "locality") is not None and post.pre is pre


def test_soft_suite_matches_reference_pre_and_post(tiny):
    name, model, tok = tiny
    reqs = make_requests(model, tok)
    suites = ("knowedit", "soft")
    pre = evaluate(model, tok, reqs, suites=suites, batch_size=4)
    assert "locality_prob" not in pre.metrics
    assert_report_matches(pre, [ref_metrics(model, tok, r, suites=suites) for r in reqs], f"{name} soft pre")
    edited = edited_copy(model)
    # through JSON: the stored log-probabilities alone carry locality_prob
    post = evaluate(edited, tok, reqs, pre=EvalReport.from_json(pre.to_json()), suites=suites, batch_size=64)
    refs = [ref_metrics(edited, tok, r, pre_model=model, suites=suites) for r in reqs]
    assert_report_matches(post, refs, f"{name} soft post")
    moved = post.value(0, "locality_prob")
    assert moved is not None and moved < 1.0  # the noise moved the probe's answer probabilities
    # the unedited model judged against itself keeps every probability: 1 (up to the float noise of
    # other batch paddings)
    same = evaluate(model, tok, reqs, pre=pre, suites=("soft",))
    assert same.value(0, "locality_prob") == pytest.approx(1.0, abs=1e-6)
    assert same.value(5, "locality_prob") == pytest.approx(1.0, abs=1e-6)
    assert "rewrite_acc" not in same.metrics  # suite soft alone reports its own metrics


def test_soft_locality_needs_the_pre_edit_log_probabilities(tiny):
    _, model, tok = tiny
    reqs = make_requests(model, tok)[:1]
    pre = evaluate(model, tok, reqs)
    for v in pre.predictions.values():
        del v["logprobs"]  # a pre-edit report that records argmaxes only
    with pytest.raises(ValueError, match="no log-probabilities for locality prompt"):
        evaluate(model, tok, reqs, pre=pre, suites=("soft",))


def test_absent_metrics_are_absent_not_zero(tiny):
    _, model, tok = tiny
    reqs = make_requests(model, tok)
    rep = evaluate(model, tok, reqs, suites=("knowedit", "counterfact"))
    by = rep.by_request()
    assert set(by[2]) == {"rewrite_acc", "efficacy", "efficacy_magnitude"}
    assert set(by[3]) == {"rewrite_acc"}
    assert set(by[4]) == {"portability"}  # trace-only: no target_new; locality needs a pre report
    post = evaluate(model, tok, reqs, pre=rep, suites=("knowedit", "counterfact"))
    assert set(post.by_request()[4]) == {"portability", "locality"}
    # identical model: locality is exactly 1 and the neighbour answering target_new was skipped
    assert post.by_request()[5]["locality"] == 1.0
    assert [r.n for r in post.rows if r.position == 5 and r.metric == "neighborhood"] == [1]
    assert rep.summary()["rewrite_acc"].n == 5 and rep.summary()["portability"].n == 2


def test_pre_is_reused_not_recomputed(tiny):
    _, model, tok = tiny
    reqs = make_requests(model, tok)[:2]
    pre = evaluate(model, tok, reqs)
    edited = edited_copy(model, scale=2.0)
    # through JSON: the predictions alone carry locality (the unedited model is gone)
    pre2 = EvalReport.from_json(pre.to_json())
    a = evaluate(edited, tok, reqs, pre=pre2)
    b = evaluate(edited, tok, reqs, pre=pre)
    assert a.values("locality") == b.values("locality")
    refs = [ref_metrics(edited, tok, r, pre_model=model, suites=("knowedit",)) for r in reqs]
    assert_report_matches(a, refs, "reuse")
    # evaluating the edited model with itself as pre gives 1: the stored predictions are what counts
    self_ref = evaluate(edited, tok, reqs, pre=evaluate(edited, tok, reqs))
    assert self_ref.values("locality") == [1.0, 1.0]


def test_pre_without_predictions_raises(tiny):
    _, model, tok = tiny
    reqs = make_requests(model, tok)
    pre = evaluate(model, tok, reqs[:1])
    with pytest.raises(ValueError, match="pre-edit report has no predictions"):
        evaluate(model, tok, reqs[1:2], pre=pre)


def test_unknown_suite_raises(tiny):
    _, model, tok = tiny
    with pytest.raises(ValueError, match="unknown suite"):
        evaluate(model, tok, [], suites=("rome",))


def test_score_is_harmonic_mean_and_bootstrap_is_deterministic(tiny):
    _, model, tok = tiny
    reqs = make_requests(model, tok)
    rep = evaluate(model, tok, reqs, suites=("counterfact",))
    s = rep.summary()
    parts = [statistics.fmean(rep.values(m)) for m in ("efficacy", "paraphrase", "neighborhood")]
    expected = 0.0 if min(parts) == 0 else statistics.harmonic_mean(parts)
    assert s["score"].mean == pytest.approx(expected, abs=1e-12)
    for m, summ in s.items():
        if m == "score":  # a percentile interval of a non-linear statistic need not hold the point
            continue
        assert summ.lo <= summ.mean + 1e-12 and summ.mean <= summ.hi + 1e-12, m
    again = evaluate(model, tok, reqs, suites=("counterfact",)).summary()
    assert {m: (x.lo, x.hi) for m, x in s.items()} == {m: (x.lo, x.hi) for m, x in again.items()}
