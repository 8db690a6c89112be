"""EvalReport: summaries, bootstrap intervals, conventions in every table, JSON/CSV round trips.
Built from hand-written rows, so every expected number is computed here by hand."""

from __future__ import annotations

import csv
import dataclasses
import io
import statistics

import numpy as np
import pytest

from golden_fast.evaluate import EvalReport, MetricRow, conventions


def _rows():
    # 4 requests; request 3 has no paraphrase (absent, not zero); request 2 has no neighbourhood
    table = {
        0: {"rewrite_acc": 1.0, "efficacy": 1.0, "paraphrase": 0.5, "neighborhood": 1.0},
        1: {"rewrite_acc": 0.5, "efficacy": 0.0, "paraphrase": 1.0, "neighborhood": 0.0},
        2: {"rewrite_acc": 0.0, "efficacy": 1.0, "paraphrase": 1.0},
        3: {"rewrite_acc": 0.25, "efficacy": 1.0, "neighborhood": 1.0},
    }
    return [MetricRow(p, p + 100, f"c{p}", m, v, 1) for p, ms in table.items() for m, v in ms.items()]


def _report(**kw):
    suites = ("knowedit", "counterfact")
    conv = conventions(suites, fluency=False, pre_given=False)
    return EvalReport(
        _rows(), suites, conv, {"p\x1fa": {"target_ids": [5], "argmax": [7]}}, {"model": "m"}, **kw
    )


def test_summary_means_and_score():
    rep = _report()
    s = rep.summary()
    assert s["rewrite_acc"].mean == pytest.approx((1 + 0.5 + 0 + 0.25) / 4) and s["rewrite_acc"].n == 4
    assert s["paraphrase"].n == 3 and s["paraphrase"].mean == pytest.approx(2.5 / 3)  # absent is not 0
    assert s["neighborhood"].mean == pytest.approx(2 / 3)
    # score: harmonic mean of the three means
    assert s["score"].mean == pytest.approx(statistics.harmonic_mean([0.75, 2.5 / 3, 2 / 3]))
    assert s["score"].n == 4
    assert rep.metrics == ["rewrite_acc", "efficacy", "paraphrase", "neighborhood", "score"]


def test_bootstrap_interval_by_hand():
    # the interval is the 2.5/97.5 percentiles of means of resamples drawn with the documented stream
    rep = _report(n_boot=500, seed=3)
    v = np.array([1.0, 0.5, 0.0, 0.25])
    import zlib

    rng = np.random.default_rng([3, zlib.crc32(b"rewrite_acc")])
    means = v[rng.integers(0, 4, size=(500, 4))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    s = rep.summary()["rewrite_acc"]
    assert (s.lo, s.hi) == pytest.approx((lo, hi))
    assert s.lo < s.mean < s.hi
    # a constant metric has a zero-width interval; a single request too
    one = EvalReport([MetricRow(0, 0, None, "rewrite_acc", 0.5, 1)], ("knowedit",), {})
    assert (one.summary()["rewrite_acc"].lo, one.summary()["rewrite_acc"].hi) == (0.5, 0.5)


def test_score_absent_without_all_parts():
    rows = [r for r in _rows() if r.metric != "neighborhood"]
    rep = EvalReport(rows, ("knowedit", "counterfact"), {})
    assert "score" not in rep.summary()


def test_table_prints_conventions_and_pre_column():
    pre = _report()
    post = _report(pre=pre)
    text = post.table()
    for name, conv in post.conventions.items():
        assert f"{name}: {conv}" in text
    assert "pre" in text.splitlines()[1] and "(pre-edit reference)" in pre.table()
    assert "harmonic mean" in text and "bootstrap" in text
    assert str(post) == text


def test_json_round_trip(tmp_path):
    pre = _report()
    rep = _report(pre=pre)
    back = EvalReport.from_json(rep.to_json())
    assert back.rows == rep.rows and back.predictions == rep.predictions and back.meta == rep.meta
    assert back.summary() == rep.summary() and back.pre.rows == pre.rows
    path = tmp_path / "r.json"
    rep.to_json(path)
    assert EvalReport.from_json(path).to_json() == rep.to_json()


def test_csv_rows_and_summary():
    rep = _report()
    rows = list(csv.DictReader(io.StringIO(rep.to_csv())))
    assert len(rows) == len(rep.rows) and set(rows[0]) == {
        "position",
        "index",
        "case_id",
        "metric",
        "value",
        "n",
    }
    assert float(rows[1]["value"]) == rep.rows[1].value
    summ = list(csv.DictReader(io.StringIO(rep.to_csv(summary=True))))
    assert [r["metric"] for r in summ] == rep.metrics


def test_value_lookup_absent_is_none():
    rep = _report()
    assert rep.value(3, "paraphrase") is None and rep.value(0, "paraphrase") == 0.5


def test_concat_of_single_request_reports_equals_the_whole():
    """Single-edit evaluation gathers one report per request; concatenated they summarise like
    one report over all requests."""
    whole = _report()
    suites, conv = whole.suites, whole.conventions
    parts = [
        EvalReport([dataclasses.replace(r, position=0) for r in whole.rows if r.position == p], suites, conv,
                   meta={"n_requests": 1, "model": "m"})
        for p in range(4)
    ]
    joined = EvalReport.concat(parts)
    assert sorted((r.position, r.metric, r.value) for r in joined.rows) == sorted(
        (r.position, r.metric, r.value) for r in whole.rows)
    assert {m: s.mean for m, s in joined.summary().items()} == pytest.approx(
        {m: s.mean for m, s in whole.summary().items()})
    assert joined.meta["n_requests"] == 4
    shuffled = EvalReport.concat(parts[::-1], positions=[3, 2, 1, 0])
    assert shuffled.value(2, "rewrite_acc") == 0.0 and shuffled.value(0, "rewrite_acc") == 1.0
    other = EvalReport([], ("knowedit",), conventions(("knowedit",), fluency=False, pre_given=False))
    with pytest.raises(ValueError, match="other suites or conventions"):
        EvalReport.concat([parts[0], other])
