"""Ground-truth look-ups and the resampling of proxy sets, on synthetic matrices."""

from __future__ import annotations

import json

import numpy as np
import pytest

from golden_fast.locate.band import golden_band
from golden_fast.locate.brute_force import BruteForceResult
from golden_fast.locate.golden import overall
from golden_fast.locate.hybrid import budget_n0, full_schedule_edits, successive_halving
from golden_fast.locate.resample import (
    LookupScorer,
    Pool,
    hybrid_lookup,
    lga_matrix,
    lga_only,
    lga_per_fact,
    proxy_brute,
    resample_locators,
)
from golden_fast.locate.scores import LayerScores

L = 12


def _pool(n=120, best=7, lift=0.3, noise=0.15, seed=0):
    rng = np.random.default_rng(seed)
    curve = np.linspace(0.4, 0.6, L)
    curve[best] += lift
    values = np.clip(curve + rng.normal(0, noise, size=(n, L)), 0, 1)
    return Pool(values, list(range(L)), [f"case:{i}" for i in range(n)])


def test_lookup_scorer_counts_distinct_pairs():
    pool = _pool(n=10)
    sc = LookupScorer(pool.values, pool.layers, rows=[4, 2, 9])
    assert sc(0, 3) == pool.values[4, 3] and sc(2, 11) == pool.values[9, 11]
    sc(0, 3)
    assert sc.n_edits == 2 and sc.calls == 3
    with pytest.raises(KeyError, match="not in the pool"):
        sc(0, 40)


def test_lookup_halving_equals_halving_on_the_submatrix():
    pool = _pool(n=40)
    rows = np.array([5, 1, 30, 7, 22, 13, 2, 39, 11, 0, 8, 17, 3, 29, 33, 4])
    a = successive_halving(LookupScorer(pool.values, pool.layers, rows), [3, 7, 1, 9], len(rows), seed=2)
    sub = pool.values[rows]
    b = successive_halving(lambda i, layer: float(sub[i, layer]), [3, 7, 1, 9], len(rows), seed=2)
    assert a.values == b.values and a.chosen == b.chosen


def test_proxy_brute_and_hybrid_pick():
    pool = _pool()
    rows = np.arange(20)[::-1]
    p = proxy_brute()(pool, rows, 0)
    assert p.layer == int(np.argmax(pool.values[rows].mean(0))) and p.edits == 20 * L
    two = proxy_brute(first=2)(pool, rows, 0)  # brute force on the first two facts of the set alone
    assert two.layer == int(np.argmax(pool.values[rows[:2]].mean(0))) and two.edits == 2 * L
    assert proxy_brute(first=50)(pool, rows, 0) == p
    with pytest.raises(ValueError, match="first must be"):
        proxy_brute(first=0)
    short = [3, 7, 1, 9, 5, 11, 0, 2]
    h = hybrid_lookup(shortlist=short, n0=4)(pool, rows, 0)
    hv = successive_halving(LookupScorer(pool.values, pool.layers, rows), short, 20, n0=4, seed=0)
    assert h.layer == hv.chosen == 7 and h.edits == hv.n_edits <= full_schedule_edits(8, 4, 20)
    # by default n0 follows the library's budget: at most 2 trial edits per candidate layer
    n0 = budget_n0(8, L, 20)
    d = hybrid_lookup(shortlist=short)(pool, rows, 0)
    hv = successive_halving(LookupScorer(pool.values, pool.layers, rows), short, 20, n0=n0, seed=0)
    assert (d.layer, d.edits) == (hv.chosen, hv.n_edits) and d.edits <= max(2 * L, full_schedule_edits(8, 1, 20))
    with pytest.raises(ValueError, match="exactly one"):
        hybrid_lookup()
    with pytest.raises(ValueError, match="exactly one"):
        hybrid_lookup(lga=np.zeros((2, 2)), shortlist=[1])


def test_hybrid_shortlist_from_per_fact_lga():
    pool = _pool(n=30)
    lga = np.tile(np.arange(L, dtype=float), (30, 1))  # LGA ranks high layers first
    lga[:, 11] = 1000.0  # an outlier: the Tukey filter drops it
    rows = np.arange(16)

    pick = hybrid_lookup(lga=lga, c=4)(pool, rows, 0)
    assert pick.info["shortlist"] == [10, 9, 8, 7]
    assert pick.layer == 7  # the planted best is in the shortlist, last; trial edits find it
    only = lga_only(lga)(pool, rows, 0)
    assert only.layer == 10 and only.edits == 0
    nofilter = hybrid_lookup(lga=lga, c=4, tukey_k=None)(pool, rows, 0)
    assert nofilter.info["shortlist"] == [11, 10, 9, 8] and nofilter.layer != 7
    with pytest.raises(ValueError, match="do not match"):
        hybrid_lookup(lga=lga[:5], c=4)(pool, rows, 0)


def test_resample_hit_rates_and_costs():
    pool = _pool(n=60, lift=0.4, noise=0.1)
    band = pool.band(n_boot=500)
    assert band.band == [7]
    locs = {"brute": proxy_brute(), "hybrid": hybrid_lookup(shortlist=[3, 7, 1, 9, 5, 11, 0, 2])}
    rep = resample_locators(pool, locs, band, sizes=(5, 10, 20, 50, 100), draws=6, seed=1)
    assert rep.skipped == [100] and rep.golden == 7 and rep.band == [7]
    assert [(r["locator"], r["size"]) for r in rep.rows] == [
        (n, s) for s in (5, 10, 20, 50) for n in ("brute", "hybrid")
    ]
    for s in (10, 20, 50):
        assert rep.row("brute", s)["hit_rate"] == 1.0 and rep.row("hybrid", s)["hit_rate"] == 1.0
        assert rep.row("brute", s)["mean_edits"] == s * L
        assert rep.row("hybrid", s)["mean_edits"] < s * L
        assert max(rep.row("hybrid", s)["edits"]) <= full_schedule_edits(8, 4, s)
    r = rep.row("hybrid", 20)
    assert r["hits"] == sum(c in band for c in r["chosen"]) and r["draws"] == 6
    assert "in band" in rep.table() and json.dumps(rep.to_dict())
    again = resample_locators(pool, locs, band, sizes=(5, 10, 20, 50, 100), draws=6, seed=1)
    assert again.rows == rep.rows


def test_every_locator_sees_the_same_proxy_sets():
    pool = _pool(n=30)
    seen: dict[str, list] = {"a": [], "b": []}

    def spy(name):
        def pick(p, rows, seed):
            seen[name].append((tuple(rows), seed))
            return proxy_brute()(p, rows, seed)

        return pick

    resample_locators(pool, {"a": spy("a"), "b": spy("b")}, [7], sizes=(5, 10), draws=4, seed=3)
    assert seen["a"] == seen["b"] and len(seen["a"]) == 8
    assert all(len(set(rows)) == len(rows) for rows, _ in seen["a"])  # without replacement
    assert len({rows for rows, _ in seen["a"]}) == 8
    first = list(seen["a"])
    seen["a"].clear()
    resample_locators(pool, {"a": spy("a")}, [7], sizes=(5, 10), draws=4, seed=3)
    assert seen["a"] == first  # seeded
    seen["a"].clear()
    resample_locators(pool, {"a": spy("a")}, [7], sizes=(5, 10), draws=4, seed=4)
    assert [r for r, _ in seen["a"]] != [r for r, _ in first]


def _write_pairs(path, M, layers, metrics, keys, skip=()):
    with open(path, "w") as f:
        for i, k in enumerate(keys):
            for j, layer in enumerate(layers):
                if (i, layer) in skip:
                    continue
                row = {m: (None if np.isnan(M[i, j, q]) else float(M[i, j, q])) for q, m in enumerate(metrics)}
                row = {m: v for m, v in row.items() if v is not None}
                f.write(json.dumps({"key": k, "layer": layer, "ref": k, "metrics": row, "seconds": 1.0}) + "\n")


def test_pool_from_pairs_and_from_result(tmp_path):
    rng = np.random.default_rng(6)
    metrics = ["rewrite_acc", "rephrase_acc", "locality"]
    layers = [0, 1, 2, 3]
    keys = ["case:1", "case:2", "case:3", "case:4"]
    M = rng.uniform(size=(4, 4, 3))
    M[1, :, 2] = np.nan  # no locality probe for this fact
    _write_pairs(tmp_path / "pairs.jsonl", M, layers, metrics, keys, skip={(3, 2)})  # case:4 incomplete
    pool = Pool.from_pairs(tmp_path)
    assert pool.keys == keys[:3] and pool.dropped == ["case:4"] and pool.layers == layers
    np.testing.assert_allclose(pool.values, overall(M[:3], metrics))
    loc = Pool.from_pairs(tmp_path / "pairs.jsonl", metric="locality")
    assert loc.keys == ["case:1", "case:3"] and set(loc.dropped) == {"case:4", "case:2"}
    np.testing.assert_allclose(loc.values, M[[0, 2], :, 2])
    res = BruteForceResult(M[:3], layers, metrics, keys[:3], keys[:3], np.ones((3, 4)), {}, 0.0)
    pr = Pool.from_result(res)
    np.testing.assert_allclose(pr.values, pool.values)
    assert pr.keys == pool.keys
    assert pool.band(n_boot=100) == golden_band(pool.values, layers, n_boot=100)
    sub = Pool.from_pairs(tmp_path, layers=[0, 1])  # case:4 has those
    assert sub.keys == keys and sub.layers == [0, 1]


def test_lga_matrix_from_layer_scores(tmp_path):
    rng = np.random.default_rng(7)
    n, layers = 5, [0, 1, 2, 3, 4]
    ab, aa, bb = rng.normal(size=(n, 5)), rng.uniform(1, 2, (n, 5)), rng.uniform(1, 2, (n, 5))
    from golden_fast.locate.lga import variant_scores

    reqs = [{"index": i, "case_id": 10 + i, "subject": "s"} for i in range(n)]
    s = LayerScores.build(
        "lga",
        layers,
        variant_scores(ab, aa, bb, [None] * n, layers),
        "cosine",
        tukey_k=1.0,
        top_k=1,
        wall_time=1.0,
        settings={},
        n_requests=n,
        n_used=n,
        extra={"per_sample": {"ab": ab, "aa": aa, "bb": bb}, "requests": reqs},
    )
    s.to_json(tmp_path / "lga.json")
    pool = Pool(rng.uniform(size=(3, 3)), [1, 2, 4], ["case:13", "case:10", "case:11"])
    got = lga_matrix(tmp_path / "lga.json", pool)
    np.testing.assert_allclose(got, (ab / np.sqrt(aa * bb))[np.ix_([3, 0, 1], [1, 2, 4])])
    # the mean over every fact ranks the layers as LGA's own scores do, per variant
    full = Pool(np.zeros((n, 5)), layers, [f"case:{10 + i}" for i in range(n)])
    for v in ("signed", "cosine", "new_norm"):
        per = lga_matrix(s, full, variant=v)
        assert np.argsort(per.mean(0)).tolist() == np.argsort(s.variants[v]).tolist()
    np.testing.assert_allclose(lga_per_fact(ab, aa, bb, "new_norm"), np.sqrt(bb))
    with pytest.raises(ValueError, match="did not score"):
        lga_matrix(s, Pool(np.zeros((1, 1)), [1], ["case:99"]))


def test_hybrid_lookup_every_layer_within_the_budget():
    pool = _pool(n=40, lift=0.4, noise=0.05)
    rows = np.arange(20)
    for eta in (2, 3, 4):
        pick = hybrid_lookup(c="all", eta=eta)(pool, rows, 0)
        hv = successive_halving(LookupScorer(pool.values, pool.layers, rows), list(range(L)), 20,
                                n0=budget_n0(L, L, 20, eta=eta), seed=0, eta=eta, budget=2 * L)
        assert pick.info["shortlist"] == list(range(L)) and (pick.layer, pick.edits) == (hv.chosen, hv.n_edits)
        assert pick.layer == 7 and pick.edits <= 2 * L and pick.info["budget_spent"] == hv.budget_spent
    # a given n0 runs its schedule in full (no cap)
    full = hybrid_lookup(c="all", n0=2, early_stop=False)(pool, rows, 0)
    assert full.edits == full_schedule_edits(L, 2, 20) > 2 * L
    with pytest.raises(ValueError, match="c='all' takes every layer"):
        hybrid_lookup(lga=np.zeros((2, 2)), c="all")
