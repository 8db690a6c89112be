"""evaluate() on real models against the per-record reference of tests/unit/test_evaluate.py,
and the pre-edit report of SmolLM2-135M on 200 CounterFact records (both suites).

CounterFact comes from the data folder ($GOLDEN_FAST_DATA, golden_fast.data.location);
the tests skip, saying why, when it is absent. The data is read in place, never copied.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from golden_fast.data import load
from golden_fast.data.location import data_dir
from golden_fast.evaluate import evaluate

_ROOT = Path(__file__).resolve().parents[2]


def _unit_reference():
    # one reference implementation for both tiers: load the unit test module by path (tests/
    # is not a package, and tests/unit is not on sys.path when this tier runs alone)
    spec = importlib.util.spec_from_file_location(
        "_evaluate_unit_reference", _ROOT / "tests/unit/test_evaluate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _unit_reference()


def _data_dir() -> Path:
    return (data_dir() or _ROOT / "data")


@pytest.fixture(scope="module")
def counterfact_200():
    path = _data_dir() / "counterfact" / "counterfact-edit.json"
    if not path.is_file():
        pytest.skip(f"CounterFact not found at {path} (set GOLDEN_FAST_DATA to its folder)")
    return load(path, limit=200)


@pytest.fixture(scope="module")
def smollm2_pre(smollm2, counterfact_200):
    model, tok = smollm2
    t0 = time.perf_counter()
    report = evaluate(
        model, tok, counterfact_200, suites=("knowedit", "counterfact"), model_name="smollm2-135m"
    )
    return report, time.perf_counter() - t0


def test_pre_edit_report_200_counterfact(smollm2_pre, counterfact_200):
    report, seconds = smollm2_pre
    print(f"\n{report}\n({seconds:.1f} s for 200 records)")
    s = report.summary()
    for metric in ("rewrite_acc", "rephrase_acc", "efficacy", "paraphrase", "neighborhood", "score"):
        assert s[metric].n == 200 and 0.0 <= s[metric].mean <= 1.0, metric
    assert "locality" not in s  # pre-edit reference
    # every locality span's predictions are stored for later edits
    assert len(report.predictions) == len({(p.prompt, p.answer) for r in counterfact_200 for p in r.locality})
    # an unedited model mostly prefers the true answer: efficacy is well below neighbourhood success
    assert s["efficacy"].mean < s["neighborhood"].mean


def test_smollm2_matches_per_record_reference(smollm2, counterfact_200, smollm2_pre):
    model, tok = smollm2
    reqs = counterfact_200[:10] + ref.make_requests(model, tok)
    pre = evaluate(model, tok, reqs, suites=("knowedit", "counterfact"), batch_size=7)
    ties = ref.assert_report_matches(pre, [ref.ref_metrics(model, tok, r) for r in reqs], "smollm2 pre")
    edited = ref.edited_copy(model, scale=0.3)
    post = evaluate(edited, tok, reqs, pre=pre, suites=("knowedit", "counterfact"))
    refs = [ref.ref_metrics(edited, tok, r, pre_model=model) for r in reqs]
    ties += ref.assert_report_matches(post, refs, "smollm2 post")
    assert ties <= 2
    # reusing the 200-record pre report gives the same locality as the fresh one
    again = evaluate(edited, tok, counterfact_200[:10], pre=smollm2_pre[0])
    assert again.values("locality") == post.values("locality")[:10]


def test_gemma3_chunked_scoring_matches_reference(gemma3):
    model, tok = gemma3
    reqs = ref.make_requests(model, tok)
    rep = evaluate(model, tok, reqs, suites=("knowedit", "counterfact"), chunk_size=8192)
    ref.assert_report_matches(rep, [ref.ref_metrics(model, tok, r) for r in reqs], "gemma3-270m")
