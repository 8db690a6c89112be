"""bench/soft_grid.py and bench/trial_score_resample.py: shard parsing, the check that the re-run grid repeats
the study's knowedit values, and the table (synthetic rows, no model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import soft_grid  # noqa: E402
import trial_score_resample as tsr  # noqa: E402

from golden_fast.locate.resample import Pool  # noqa: E402


def test_parse_shard():
    assert soft_grid.parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(SystemExit, match="--shard"):
            soft_grid.parse_shard(bad)


def _row(key, layer, **metrics):
    return {"key": key, "layer": layer, "metrics": metrics, "seconds": 1.0}


def test_agreement_counts_the_values_that_differ(tmp_path):
    # key -> layer -> metrics, as read from results files (absent values left out)
    study = {"a": {0: {"rewrite_acc": 1.0, "rephrase_acc": 0.5},
                   1: {"rewrite_acc": 0.0, "rephrase_acc": 1.0, "locality": 1.0}}}
    soft = {"a": {0: {"rewrite_acc": 1.0, "rephrase_acc": 0.5, "locality": 0.0, "rewrite_prob": 0.9},
                  1: {"rewrite_acc": 0.0, "rephrase_acc": 0.5, "locality": 1.0, "rewrite_prob": 0.1}},
            "b": {0: {"rewrite_acc": 0.0}}}  # not among the keys compared
    got = tsr.agreement(study, soft, ["a"])
    # 5 values the study has (its absent locality at layer 0 is not compared), one differs
    assert got["values"] == 5 and got["differ"] == 1 and got["examples"] == [["a", 1, "rephrase_acc", 1.0, 0.5]]


def test_read_grid_merges_shards_and_leaves_a_torn_last_line_out(tmp_path):
    f, g = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    f.write_text(json.dumps(_row("a", 0, rewrite_acc=1.0)) + "\n" + '{"key": "a", "lay')
    g.write_text(json.dumps(_row("a", 1, rewrite_acc=0.0)) + "\n")
    assert tsr.read_grid([f, g]) == {"a": {0: {"rewrite_acc": 1.0}, 1: {"rewrite_acc": 0.0}}}


def test_pool_of_named_metrics_and_the_table(tmp_path):
    f = tmp_path / "pairs.jsonl"
    rows = [_row(k, layer, rewrite_acc=float(layer == 1), rephrase_acc=0.0, locality=1.0,
                 rewrite_prob=0.2 + 0.1 * layer, rephrase_prob=0.4, locality_prob=1.0)
            for k in ("a", "b", "c") for layer in (0, 1, 2)]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pools = {name: Pool.from_pairs(f, metric=ms) for name, ms in tsr.SCORES.items()}
    np.testing.assert_allclose(pools["accuracies"].values[0], [1 / 3, 2 / 3, 1 / 3])
    np.testing.assert_allclose(pools["probabilities"].values[0], [(0.2 + 0.4 + 1) / 3, (0.3 + 0.4 + 1) / 3,
                                                                 (0.4 + 0.4 + 1) / 3])
    np.testing.assert_allclose(pools["mixed"].values[0], pools["probabilities"].values[0])
    result = {
        "model": "m", "band": {"golden": 1, "band": [1], "pool": 3}, "facts": 3,
        "agreement": {"values": 27, "differ": 0},
        "settings": {"sizes": [2]},
        "rows": [{"locator": "hybrid", "score": "mixed", "size": 2, "hit_rate": 0.75, "edit_ratio": 0.1}],
    }
    table = tsr.markdown(result)
    assert "| hybrid | mixed | 75% | 0.100 |" in table and "27 of 27" in table


def test_separation_is_the_paired_effect_size_outside_the_band():
    v = np.array([[0.9, 0.8, 0.5], [0.7, 0.7, 0.6], [0.8, 0.5, 0.7], [1.0, 0.9, 0.6]])
    pool = Pool(v, [0, 1, 2], ["a", "b", "c", "d"])
    sep = tsr.separation(pool, golden=0, band=[0, 1])
    d = v[:, 0] - v[:, 2]
    assert list(sep["effect_size"]) == [2]
    assert sep["effect_size"][2] == pytest.approx(d.mean() / d.std(ddof=1))
    assert sep["median"] == sep["smallest"] == sep["effect_size"][2]


def test_interaction_noise_splits_the_rerun_part():
    rng = np.random.default_rng(0)
    stable = rng.normal(size=(30, 6))
    truth = Pool(stable, list(range(6)), [f"k{i}" for i in range(30)])
    same = tsr.interaction_noise(truth, truth.subset(truth.keys))
    assert same["rerun_noise_var"] == pytest.approx(0.0) and same["stable_share"] == pytest.approx(1.0)
    noisy = Pool(stable + rng.normal(scale=0.5, size=stable.shape), list(range(6)), truth.keys)
    got = tsr.interaction_noise(truth, noisy)
    assert 0 < got["rerun_noise_var"] < got["interaction_var"] and 0 < got["stable_share"] < 1


def test_tied_share_counts_equal_scores_of_layer_pairs():
    import tie_order

    v = np.array([[1.0, 1.0, 0.5], [0.0, 1.0, 1.0]])
    # pairs (0,1), (0,2), (1,2): fact 0 ties on (0,1); fact 1 ties on (1,2): 2 of 6
    assert tie_order.tied_share(v) == pytest.approx(2 / 6)
