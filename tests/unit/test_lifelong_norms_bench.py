"""bench/lifelong_norms.py's accumulated updates against the weights a replay actually gives."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from golden_fast.data.builtin import builtin_facts
from golden_fast.edit import Editor
from golden_fast.models import get_adapter, load_model

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import lifelong_norms  # noqa: E402

FAST = {"mom2_adjustment": False, "v_num_grad_steps": 4, "context_template_length_params": [[3, 2]]}


def test_update_norms_written_out():
    W = torch.diag(torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64))
    dW = torch.zeros(3, 3, dtype=torch.float64)
    dW[0, 0], dW[1, 1] = 2.0, 2.0
    n = lifelong_norms.update_norms(dW, W)
    assert abs(n["rel_fro"] - (8**0.5) / (21**0.5)) < 1e-12
    assert abs(n["rel_spec"] - 2.0 / 4.0) < 1e-12
    assert abs(n["stable_rank"] - 2.0) < 1e-12  # two equal directions


def test_accumulated_update_equals_the_weight_change_of_the_run(tmp_path):
    """Journals of a sequential run, summed: the change the edits made to the weights, at every chunk."""
    model, tok = load_model("tiny-llama", dtype=torch.float64)  # the applied change free of float32 rounding
    a = get_adapter(model)
    layers = [1, 2]
    W0 = {l: a.down_weight(l).detach().to(torch.float64).clone() for l in range(a.n_layers)}
    ed = Editor(model, tok, "memit", layers=layers, hparams=FAST, progress=False, revert_each=False)
    seen = {}
    for n, req in enumerate(builtin_facts()[:3], start=1):
        ed.edit([req], mode="batch").journal.save(tmp_path / f"journal-{n:05d}")
        seen[n] = {l: a.down_weight(l).detach().to(torch.float64) - W0[l] for l in layers}
    rows = lifelong_norms.run_folder(tmp_path, W0, step=2)
    assert [r["edits"] for r in rows] == [2, 3]  # every 2nd, and the last
    for r in rows:
        assert sorted(r["layers"]) == ["1", "2"]
        for l in layers:
            want = lifelong_norms.update_norms(seen[r["edits"]][l], W0[l])
            for k in want:
                assert abs(r["layers"][str(l)][k] - want[k]) <= 1e-6 * abs(want[k])
    ed.revert()
