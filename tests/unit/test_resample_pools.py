"""Pools merged from several brute-force files, causal tracing's per-fact locator and the cost columns."""

from __future__ import annotations

import json

import numpy as np
import pytest

from golden_fast.locate.golden import overall
from golden_fast.locate.resample import (
    Pool,
    add_costs,
    cma_matrix,
    cma_only,
    cost_table,
    lga_matrix,
    proxy_brute,
    resample_locators,
)
from golden_fast.locate.scores import LayerScores

METRICS = ["rewrite_acc", "rephrase_acc", "locality"]


def _write(path, M, layers, keys, skip=()):
    with open(path, "w") as f:
        for i, k in enumerate(keys):
            for j, layer in enumerate(layers):
                if (i, layer) not in skip:
                    row = {m: float(M[i, j, q]) for q, m in enumerate(METRICS)}
                    f.write(json.dumps({"key": k, "layer": layer, "metrics": row, "seconds": 2.0}) + "\n")


def test_pool_from_several_files_merges_by_key(tmp_path):
    rng = np.random.default_rng(0)
    layers = [0, 1, 2]
    M = rng.uniform(size=(5, 3, 3))
    (tmp_path / "a").mkdir()
    _write(tmp_path / "a" / "pairs.jsonl", M[:2], layers, ["case:1", "case:2"])
    # the second file repeats case:2 identically and has an incomplete fact (a grid still running)
    _write(tmp_path / "b.jsonl", M[1:], layers, ["case:2", "case:3", "case:4", "case:5"], skip={(3, 2)})
    pool = Pool.from_pairs([tmp_path / "a", tmp_path / "b.jsonl"])
    assert pool.keys == ["case:1", "case:2", "case:3", "case:4"] and pool.dropped == ["case:5"]
    np.testing.assert_allclose(pool.values, overall(M[:4], METRICS))
    single = Pool.from_pairs(tmp_path / "a")  # one path still works
    assert single.keys == ["case:1", "case:2"]


def test_pool_from_files_conflict_and_torn_line(tmp_path):
    rng = np.random.default_rng(1)
    layers = [0, 1]
    M = rng.uniform(size=(2, 2, 3))
    _write(tmp_path / "a.jsonl", M, layers, ["case:1", "case:2"])
    other = M.copy()
    other[1, 0, 0] += 0.5
    _write(tmp_path / "b.jsonl", other[1:], layers, ["case:2"])
    with pytest.raises(ValueError, match="case:2 is also in an earlier file"):
        Pool.from_pairs([tmp_path / "a.jsonl", tmp_path / "b.jsonl"])
    with pytest.raises(FileNotFoundError):
        Pool.from_pairs([tmp_path / "a.jsonl", tmp_path / "none.jsonl"])
    # a row being appended by a running job: left out, and the file is not touched
    with open(tmp_path / "a.jsonl", "a") as f:
        f.write('{"key": "case:3", "layer": 0, "metr')
    before = (tmp_path / "a.jsonl").read_bytes()
    pool = Pool.from_pairs(tmp_path / "a.jsonl")
    assert pool.keys == ["case:1", "case:2"] and (tmp_path / "a.jsonl").read_bytes() == before


def test_pool_subset():
    pool = Pool(np.arange(12.0).reshape(4, 3), [0, 1, 2], ["a", "b", "c", "d"])
    sub = pool.subset(["c", "a"])
    assert sub.keys == ["c", "a"] and sub.values.tolist() == [[6, 7, 8], [0, 1, 2]]
    with pytest.raises(KeyError, match="not in the pool"):
        pool.subset(["z"])


def _cma_pool(n=40, L=10, best=6, seed=0):
    """A pool and per-fact indirect effects peaking at `best` (with noise that hides it on single facts)."""
    rng = np.random.default_rng(seed)
    pool = Pool(rng.uniform(size=(n, L)), list(range(L)), [f"case:{i}" for i in range(n)])
    curve = np.exp(-0.5 * ((np.arange(L) - best) / 1.0) ** 2) * 0.1
    ie = curve + rng.normal(0, 0.05, size=(n, L))
    return pool, ie


def test_cma_only_finds_the_planted_layer():
    pool, ie = _cma_pool()
    assert any(int(np.argmax(row)) != 6 for row in ie)  # single facts disagree
    pick = cma_only(ie)(pool, np.arange(40), 0)
    assert pick.layer == 6 and pick.edits == 0
    rows = np.array([3, 17, 5])
    assert cma_only(ie)(pool, rows, 0).layer == int(np.argmax(ie[rows].mean(0)))
    rep = resample_locators(pool, {"cma": cma_only(ie), "brute": proxy_brute()}, [6], sizes=(20, 40), draws=5)
    assert rep.row("cma", 40)["hit_rate"] == 1.0 and rep.row("cma", 20)["mean_edits"] == 0
    gaps = ie.copy()
    gaps[3] = np.nan
    with pytest.raises(ValueError, match="no causal trace"):
        cma_only(gaps)(pool, np.array([1, 3]), 0)
    assert cma_only(gaps)(pool, np.array([1, 2]), 0).layer == int(np.argmax(ie[[1, 2]].mean(0)))
    with pytest.raises(ValueError, match="do not match"):
        cma_only(ie[:5])(pool, np.arange(3), 0)


def _scores(method, layers, extra, n):
    return LayerScores.build(
        method,
        layers,
        {"s": np.zeros(len(layers))},
        "s",
        tukey_k=None,
        top_k=1,
        wall_time=1.0,
        settings={},
        n_requests=n,
        n_used=n,
        extra=extra,
    )


def test_cma_matrix_matches_keys_and_leaves_untraced_rows_nan(tmp_path):
    pool, _ = _cma_pool(n=4, L=5)
    restored = np.arange(15.0).reshape(3, 5)
    low = np.array([1.0, 2.0, 3.0])
    s = _scores(
        "cma", [0, 1, 2, 3, 4], {"keys": ["case:2", "case:0", "case:9"], "p_restored": restored, "p_corrupted": low}, 3
    )
    s.to_json(tmp_path / "cma.json")
    got = cma_matrix(tmp_path / "cma.json", pool)
    np.testing.assert_allclose(got[0], restored[1] - 2.0)
    np.testing.assert_allclose(got[2], restored[0] - 1.0)
    assert np.isnan(got[[1, 3]]).all()
    with pytest.raises(ValueError, match="no per-fact curves"):
        cma_matrix(_scores("cma", [0, 1, 2, 3, 4], {"requests": []}, 0), pool)


def test_lga_matrix_uses_recorded_keys():
    pool = Pool(np.zeros((2, 2)), [0, 1], ["sha:b", "sha:a"])
    ab = np.array([[1.0, 2.0], [3.0, 4.0]])
    extra = {
        "per_sample": {"ab": ab, "aa": np.ones((2, 2)), "bb": np.ones((2, 2))},
        "requests": [{"case_id": None}, {"case_id": None}],
        "keys": ["sha:a", "sha:b"],
    }
    s = _scores("lga", [0, 1], extra, 2)
    s.variant = "signed"
    np.testing.assert_allclose(lga_matrix(s, pool), ab[[1, 0]])


def test_add_costs_and_table():
    rows = [
        {"locator": "brute", "size": 5, "draws": 2, "hits": 2, "hit_rate": 1.0, "mean_edits": 50.0, "edits": [50, 50]},
        {"locator": "lga", "size": 5, "draws": 2, "hits": 1, "hit_rate": 0.5, "mean_edits": 0.0, "edits": [0, 0]},
        {"locator": "hyb", "size": 5, "draws": 2, "hits": 2, "hit_rate": 1.0, "mean_edits": 15.0, "edits": [10, 20]},
    ]
    out = add_costs(rows, 2.0, {"lga": 0.5, "hyb": 0.5}, 100)
    assert [r["mean_seconds"] for r in out] == [100.0, 2.5, 32.5]
    assert [r["edit_ratio"] for r in out] == [0.5, 0.0, 0.15]
    assert out[2]["seconds_ratio"] == pytest.approx(32.5 / 200)
    assert "mean_seconds" not in rows[0]  # the input is left alone
    table = cost_table(out)
    assert table.count("\n") == 4 and "| hyb | 5 | 100% (2/2) | 15.0 | 0.150 | 32 | 0.163 |" in table
    with pytest.raises(ValueError, match="must be > 0"):
        add_costs(rows, 0.0, {}, 100)
