"""Brute force: M[request, layer, metric] from edit / evaluate / revert, resumable from its results
file; one run with the real R-ROME on a tiny model."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch

from golden_fast.data import EditRequest
from golden_fast.edit.base import RequestTrace
from golden_fast.locate import locate
from golden_fast.locate.brute_force import brute_force
from golden_fast.models import build_tiny, get_adapter

FACTS = [
    ("The capital of {} is", "France", "Rome", "Paris"),
    ("{} plays the", "Toko Yasuda", "piano", "guitar"),
    ("The mother tongue of {} is", "Danielle Darrieux", "English", "French"),
]
LAYERS = [0, 1, 3]


def _requests():
    return [
        EditRequest(p, s, t, ground_truth=g, case_id=100 + i, index=i, rephrase_prompts=[p.replace("{}", s) + ","])
        for i, (p, s, t, g) in enumerate(FACTS)
    ]


class Fake:
    """A deterministic custom method: a large rank-one update seeded by (subject, layer), so M depends
    on both; `fail_at` raises on that call, as an interrupted run would stop."""

    __name__ = "fake"

    def __init__(self, fail_at: int | None = None):
        self.calls = 0
        self.fail_at = fail_at

    def __call__(self, model, tok, requests, hparams, stats, apply, progress=True):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of a long run
        a = get_adapter(model)
        layer = hparams.layers[0]
        out = []
        for i, req in enumerate(requests):
            g = torch.Generator().manual_seed(zlib.crc32(f"{req.subject}/{layer}".encode()))
            u, v = torch.randn(a.d_model, 1, generator=g) * 3, torch.randn(a.d_ff, 1, generator=g) * 3
            apply(layer, u, v)
            out.append(RequestTrace(index=i, loss_curve=[1.0], update_norm=float(u.norm() * v.norm())))
        return out


@pytest.fixture()
def llama():
    return build_tiny("tiny-llama")


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_m_tensor_and_model_restored(llama, tmp_path):
    model, tok = llama
    before = _state(model)
    res = brute_force(model, tok, _requests(), LAYERS, {"method": Fake()}, out=tmp_path, progress=False)
    assert res.M.shape == (3, 3, len(res.metrics))
    assert set(res.metrics) == {"rewrite_acc", "rephrase_acc"}  # no locality probes in these requests
    assert np.isfinite(res.M).all() and (res.seconds > 0).all()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # reverted bitwise
    lines = (tmp_path / "pairs.jsonl").read_text().splitlines()
    assert len(lines) == 9 and {json.loads(x)["key"] for x in lines} == {"case:100", "case:101", "case:102"}
    rep = res.golden(n_boot=200)
    assert rep.golden["overall"] in LAYERS and "overall" in rep.gap


def test_resume_after_an_interruption_computes_only_what_is_missing(llama, tmp_path):
    model, tok = llama
    reqs = _requests()
    fresh = brute_force(model, tok, reqs, LAYERS, {"method": Fake()}, progress=False)  # no file at all

    with pytest.raises(KeyboardInterrupt):
        brute_force(model, tok, reqs, LAYERS, {"method": Fake(fail_at=5)}, out=tmp_path, progress=False)
    assert len((tmp_path / "pairs.jsonl").read_text().splitlines()) == 4  # 4 finished pairs were kept
    with (tmp_path / "pairs.jsonl").open("a") as f:
        f.write('{"key": "case:10')  # a line torn by the interruption
    again = Fake()
    res = brute_force(model, tok, reqs, LAYERS, {"method": again}, out=tmp_path, progress=False)
    assert again.calls == 5  # 9 pairs - 4 done
    assert np.array_equal(res.M, fresh.M) and res.metrics == fresh.metrics
    # a subset of requests and layers is served from the file alone
    none = Fake()
    sub = brute_force(model, tok, reqs[1:], [3, 0], {"method": none}, out=tmp_path, progress=False)
    assert none.calls == 0
    assert np.array_equal(sub.M, fresh.M[1:][:, [2, 0]])


def test_other_settings_refuse_the_directory(llama, tmp_path):
    model, tok = llama
    brute_force(model, tok, _requests()[:1], [0], {"method": Fake()}, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="other settings.*suites"):
        brute_force(
            model, tok, _requests()[:1], [0], {"method": Fake()}, out=tmp_path, progress=False, suites=("counterfact",)
        )


def test_bad_input(llama):
    model, tok = llama
    reqs = _requests()
    with pytest.raises(ValueError, match="same request"):
        brute_force(model, tok, [reqs[0], reqs[0]], [0], {"method": Fake()}, progress=False)
    with pytest.raises(ValueError, match="unknown editor key"):
        brute_force(model, tok, reqs, [0], {"method": Fake(), "layer": 3}, progress=False)
    trace_only = EditRequest("{} is in", "Paris", None, ground_truth="France", case_id=9)
    with pytest.raises(ValueError, match=r"case_id 9.*'target_new'"):
        brute_force(model, tok, [trace_only], [0], progress=False)


def test_real_r_rome_through_locate(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))  # context templates cache
    model, tok = build_tiny("tiny-gpt2")
    before = _state(model)
    fast = {"mom2_adjustment": False, "v_num_grad_steps": 3, "context_template_length_params": [[3, 2]]}
    s = locate(
        model,
        tok,
        _requests()[:2],
        "brute",
        layers=[1, 2],
        editor={"method": "r-rome", "hparams": fast},
        out=tmp_path / "bf",
        progress=False,
        n_boot=100,
    )
    assert s.method == "brute" and s.chosen in (1, 2) and s.variant == "overall"
    assert s.extra["golden"]["golden"]["overall"] == s.chosen
    assert s.settings["method"] == "r-rome" and s.settings["stats"] == "identity (mom2_adjustment off)"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert s.wall_time > 0 and len(s.extra["brute_force"]["M"]) == 2
