"""bench/batch_band.py on a tiny study: the band from its per-layer batches, written out from the files,
and a rerun that edits nothing again."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import batch_band  # noqa: E402


@pytest.fixture()
def study(tmp_path, monkeypatch):
    from golden_fast.experiment import ExperimentConfig, run_experiment
    from golden_fast.models import load_model

    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))
    torch.set_num_threads(1)
    model, tok = load_model("tiny-llama")
    config = ExperimentConfig(model="tiny-llama", data="builtin", out=str(tmp_path / "study"), proxy_n=4, test_n=5,
                              brute_proxy_n=2, test_brute_n=2, stats="identity", v_steps=2, templates=((3, 1),),
                              group_size=2, n_boot=100, batch_sizes=(3,), sequential_n=2, sequential_every=1,
                              parts=("lga",), progress=False)
    run_experiment(config, model=model, tok=tok)
    return tmp_path / "study", model, tok


def test_band_of_the_batches_matches_a_plain_bootstrap(study, tmp_path):
    from golden_fast.locate.band import golden_band

    folder, model, tok = study
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / "band"
    s = batch_band.run(folder, "emmet", 4, out, layers=[0, 1, 2], model=model, tok=tok, n_boot=300, progress=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # every batch reverted

    # overall per fact and layer from the files, written out; the band as a plain paired bootstrap
    rows = [json.loads((out / f"emmet-L{layer:02d}.json").read_text()) for layer in (0, 1, 2)]
    V = np.array([[np.mean([m[k] for k in ("rewrite_acc", "rephrase_acc", "locality") if k in m])
                   for m in r["metrics"]] for r in rows]).T  # (facts, layers)
    assert V.shape == (4, 3)
    assert np.allclose(s["means"]["overall"], V.mean(0))
    # the band of that matrix (golden_band is checked against a plain bootstrap in test_locate_band.py)
    assert s["band"] == golden_band(V, [0, 1, 2], n_boot=300).to_dict()
    saved = json.loads((out / "band.json").read_text())
    assert saved["band"] == s["band"] and saved["n"] == 4 and saved["method"] == "emmet"
    assert "| layer | rewrite |" in batch_band.table(saved)

    # a rerun finds every layer on file: nothing is edited again
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("emmet-L*.json")}
    s2 = batch_band.run(folder, "emmet", 4, out, layers=[0, 1, 2], model=model, tok=tok, n_boot=300,
                        progress=False)
    assert s2["band"] == s["band"]
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("emmet-L*.json")}
