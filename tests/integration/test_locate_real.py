"""Locating on real models: causal tracing of a fact both models know (SmolLM2-135M, Gemma-3-270M),
with the heatmap saved; LGA on CounterFact facts.

known_1000 and CounterFact come from the data folder ($GOLDEN_FAST_DATA, golden_fast.data.location);
the tests skip, saying why, when a file is absent. Record 6 of known_1000 ("Catalonia belongs to the
continent of" -> Europe) is answered correctly by both models (checked below, not assumed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from golden_fast.data import load
from golden_fast.data.location import data_dir
from golden_fast.locate import locate
from golden_fast.locate.causal_trace import CMAConfig, plot_heatmap, trace_heatmap

_ROOT = Path(__file__).resolve().parents[2]


def _data(name: str) -> Path:
    path = (data_dir() or _ROOT / "data") / name
    if not path.is_file():
        pytest.skip(f"{path} not found (set GOLDEN_FAST_DATA)")
    return path


@pytest.fixture(scope="module")
def known():
    return load(_data("known_1000.json"), format="known1000", limit=10)[6]


@pytest.mark.parametrize("which", ["smollm2", "gemma3"])
def test_causal_trace_restores_between_corrupted_and_clean(which, known, request, tmp_path):
    model, tok = request.getfixturevalue(which)
    s = locate(model, tok, [known], "cma")  # ROME's settings: 10 copies, window 10, noise 3 x std (known_1000)
    assert s.n_used == 1 and s.extra["n_skipped"] == 0  # the model knows the fact
    assert s.extra["noise_source"] == "known_1000"
    clean, corrupted = s.extra["p_clean"][0], s.extra["p_corrupted"][0]
    restored = np.asarray(s.extra["p_restored"][0])
    assert corrupted < 0.9 * clean  # the noise destroys the fact...
    best = restored[s.layers.index(s.chosen)]
    assert corrupted < best <= clean  # ...and restoring the best window brings part of it back
    assert s.scores[s.layers.index(s.chosen)] == pytest.approx(best - corrupted)

    cfg = CMAConfig(samples=5)  # the heatmap: every (token, layer) cell
    tr = trace_heatmap(model, tok, known, cfg)
    assert tr.scores.shape == (len(tr.tokens), len(s.layers)) and tr.high == pytest.approx(clean, rel=1e-4)
    png = plot_heatmap(tr, tmp_path / f"{which}-trace.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_lga_on_counterfact(smollm2):
    model, tok = smollm2
    reqs = load(_data("counterfact/counterfact-edit.json"), limit=4)
    s = locate(model, tok, reqs, "lga")
    n_layers = len(s.layers)
    assert n_layers == 30 and s.chosen in s.layers and s.kept[s.layers.index(s.chosen)]
    for name in ("signed", "cosine", "new_norm"):
        assert np.isfinite(s.variants[name]).all()
    assert all(-1 <= c <= 1 for c in s.variants["cosine"])
    ckpt = locate(model, tok, reqs, "lga", checkpoint=True)  # recomputed blocks: the same products
    ab, ab2 = np.asarray(s.extra["per_sample"]["ab"]), np.asarray(ckpt.extra["per_sample"]["ab"])
    scale = np.sqrt(np.asarray(s.extra["per_sample"]["aa"]) * np.asarray(s.extra["per_sample"]["bb"]))
    assert (np.abs(ab - ab2) / scale).max() < 1e-5
