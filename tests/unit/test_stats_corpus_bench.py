"""bench/stats_corpus.py's paired comparison and table (the edits themselves are the benchmark)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import stats_corpus  # noqa: E402


def test_paired_difference_against_a_plain_bootstrap():
    a = [1.0, 0.0, 1.0, 1.0, float("nan"), 0.0]
    b = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    got = stats_corpus.paired_difference(a, b, n_boot=500, seed=3)
    x = np.array([0.0, 1.0, 0.0, -1.0, 1.0])  # the facts where both exist
    rng = np.random.default_rng(3)
    means = np.array([x[rng.integers(0, 5, size=5)].mean() for _ in range(500)])
    assert got["n"] == 5 and math.isclose(got["mean"], 0.2)
    assert got["lo"] <= got["mean"] <= got["hi"]
    # the same draws in one array: the interval of the plain loop
    assert math.isclose(got["lo"], float(np.quantile(means, 0.025)))
    assert math.isclose(got["hi"], float(np.quantile(means, 0.975)))


def test_paired_difference_without_common_facts_is_nan_not_zero():
    got = stats_corpus.paired_difference([float("nan")], [1.0])
    assert got["n"] == 0 and math.isnan(got["mean"])


def test_table_rows_and_difference_line():
    pf = {"rewrite_acc": [1.0, 0.0], "rephrase_acc": [0.0, 0.0], "locality": [1.0, 1.0]}
    pf2 = {"rewrite_acc": [1.0, 1.0], "rephrase_acc": [0.0, 1.0], "locality": [1.0, 0.5]}
    row = lambda p, s: {"r-rome": {"per_fact": p}, "emmet": {"per_fact": p},  # noqa: E731
                        "stats_seconds_r-rome": s, "stats_seconds_emmet": s}
    res = {"corpora": {"model-sampled": row(pf, 120.0), "wikitext-2": row(pf2, 30.0)}}
    table = stats_corpus.markdown_table(res)
    assert "| r-rome | 2 | model-sampled | 0.500 | 0.000 | 1.000 | 120 |" in table
    assert "| r-rome | 2 | wikitext-2 | 1.000 | 0.500 | 0.750 | 30 |" in table
    assert "| r-rome | | wikitext-2 − model-sampled | +0.500 [" in table
    assert table.count("−") == 2  # one difference line per editor
