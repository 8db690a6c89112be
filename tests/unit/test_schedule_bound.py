"""bench/schedule_bound.py: schedule costs and search, the plain halving against the library's, brute force
on k facts, and the interaction removal (synthetic matrices, no model)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import schedule_bound as sb  # noqa: E402

from golden_fast.locate.resample import Pool, hybrid_lookup  # noqa: E402

# the library's every-layer halving with eta 4 on 18 layers and a budget of 36: 18 x 1, then 5 layers to
# 4 facts, then the 2 left get the one more fact each that the 3 remaining edits pay for
ETA4_18 = ((1, 5), (4, 2), (5, 1))


def test_schedule_cost():
    assert sb.schedule_cost(ETA4_18, 18) == 18 + 5 * 3 + 2 * 1
    assert sb.schedule_cost(((2, 1),), 18) == 36  # brute force on 2 facts


def test_schedules_are_within_budget_and_well_formed():
    found = list(sb.schedules(18, 36))
    assert ETA4_18 in found
    assert len(found) == len(set(found))
    for s in found:
        assert sb.schedule_cost(s, 18) <= 36
        assert s[-1][1] == 1 and len(s) in (2, 3)
        facts = [f for f, _ in s]
        kept = [k for _, k in s]
        assert facts == sorted(set(facts)) and kept == sorted(set(kept), reverse=True)
    assert not any(sb.schedule_cost(s, 18) > 36 for s in sb.schedules(18, 36, first=(1, 2, 3)))


@pytest.mark.parametrize("n_facts", [5, 20])
def test_halve_matches_the_library_halving(n_facts):
    rng = np.random.default_rng(n_facts)
    loc = hybrid_lookup(c="all", eta=4)
    for trial in range(30):
        values = rng.choice([0.0, 0.5, 1.0], size=(n_facts, 18), p=[0.2, 0.3, 0.5])  # many ties
        pool = Pool(values, list(range(18)), [f"f{i}" for i in range(n_facts)])
        pick = loc(pool, np.arange(n_facts), trial)
        assert sb.halve(values, ETA4_18) == (pick.layer, pick.edits)


def test_halve_tie_rule():
    values = np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    assert sb.halve(values, ((1, 2), (2, 1)))[0] == 0
    assert sb.halve(values, ((1, 2), (2, 1)), descending=True)[0] == 2


def test_brute_rates_and_draws():
    values = np.zeros((6, 4))
    values[:3, 2] = 1.0  # the first three facts favour layer 2, the others are tied everywhere
    sets = {3: [np.array([0, 1, 2]), np.array([3, 4, 5])]}
    assert sb.brute_rates(values, {2}, sets, 1) == {3: 0.5}  # second set: a tie, to layer 0
    assert sb.brute_rates(values, {3}, sets, 1, descending=True) == {3: 0.5}
    a, b = sb.draw_sets(10, [5], 3, 0), sb.draw_sets(10, [5], 3, 0)
    assert all(np.array_equal(x, y) for x, y in zip(a[5], b[5]))
    assert all(len(set(x)) == 5 for x in a[5])


def test_interaction_removal_keeps_every_layer_mean():
    rng = np.random.default_rng(1)
    parts = {m: rng.random((7, 5)) for m in sb.METRICS}
    fit = sb.additive(parts["rephrase_acc"])
    np.testing.assert_allclose(fit.mean(0), parts["rephrase_acc"].mean(0))
    np.testing.assert_allclose(fit.mean(1), parts["rephrase_acc"].mean(1))
    resid = fit - fit.mean(1, keepdims=True) - fit.mean(0, keepdims=True) + fit.mean()
    np.testing.assert_allclose(resid, 0.0, atol=1e-12)
    overall = np.mean(list(parts.values()), axis=0)
    np.testing.assert_allclose(sb.without_interaction(parts, "rephrase_acc").mean(0), overall.mean(0))
    # the other metrics are left as they are
    got = sb.without_interaction(parts, "locality")
    np.testing.assert_allclose(got, (parts["rewrite_acc"] + parts["rephrase_acc"] + sb.additive(parts["locality"])) / 3)
