"""The study's target cache (golden_fast/edit/target_cache.py): targets served from it give the same
updates as targets optimised afresh, are never served on other weights, and keep their cost."""

from __future__ import annotations

import pytest
import torch

from golden_fast.data import EditRequest
from golden_fast.edit import Editor
from golden_fast.edit.target_cache import TargetCache, reuse_targets
from golden_fast.models import get_adapter, load_model

FAST = {"mom2_adjustment": False, "v_num_grad_steps": 4, "context_template_length_params": [[3, 2]]}
REQS = [
    EditRequest(prompt="{} is located in", subject="Eiffel Tower", target_new="Rome", ground_truth="Paris"),
    EditRequest(prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new="English",
                ground_truth="French"),
    EditRequest(prompt="{} plays the", subject="Toko Yasuda", target_new="piano", ground_truth="guitar"),
]


@pytest.fixture()
def llama():
    return load_model("tiny-llama")


def _delta(llama, method: str, reqs, layers, hp=FAST):
    """The weight change `method` makes (then reverted), and the edit result."""
    model, tok = llama
    a = get_adapter(model)
    before = {l: a.down_weight(l).detach().clone() for l in layers}
    res = Editor(model, tok, method, layers=layers, hparams=hp, progress=False).edit(reqs, mode="batch")
    change = {l: a.down_weight(l).detach() - before[l] for l in layers}
    res.revert()
    return change, res


@pytest.mark.parametrize("first,second", [("r-rome", "rome"), ("rome", "r-rome")])
def test_rome_variants_share_v_star_and_get_the_same_update(llama, first, second):
    alone, _ = _delta(llama, second, REQS, [1])
    with reuse_targets() as cache:
        _delta(llama, first, REQS, [1])
        assert (cache.hits, cache.misses) == (0, len(REQS))
        shared, res = _delta(llama, second, REQS, [1])
        assert (cache.hits, cache.misses) == (len(REQS), len(REQS))
    torch.testing.assert_close(shared[1], alone[1], rtol=0, atol=0)  # the very same v*, the same solve
    # each request's v* is timed at what it cost the first method
    assert all(t.extras["targets_reused_seconds"] > 0 for t in res.traces)


def test_smaller_batch_and_other_mass_method_reuse_z(llama):
    layers = [1, 2]
    alone, _ = _delta(llama, "emmet", REQS[:2], layers)
    with reuse_targets() as cache:
        _delta(llama, "memit", REQS, layers)
        shared, res = _delta(llama, "emmet", REQS[:2], layers)
        assert cache.hits == 2
    for l in layers:
        torch.testing.assert_close(shared[l], alone[l], rtol=1e-5, atol=1e-7)  # batched vs alone: rounding only
    assert res.traces[0].extras["targets_reused_seconds"] > 0


def test_edited_weights_or_other_settings_miss(llama):
    from golden_fast.edit.config import ROMEConfig
    from golden_fast.edit.values import optimise_targets

    model, tok = llama
    w = get_adapter(model).down_weight(0)  # a layer below the site: changes what the site sees
    templates = ["{}", "The capital is. {}"]  # fixed: sampled templates would differ on edited weights anyway
    hp = ROMEConfig(v_num_grad_steps=3)
    cache = TargetCache()
    with reuse_targets(cache):
        first = optimise_targets(model, tok, REQS[:1], 1, "mlp.down.out", templates, hp)
        w0 = w.detach().clone()
        with torch.no_grad():
            w.add_(1e-3 * torch.outer(torch.ones(w.shape[0]), torch.ones(w.shape[1])))  # a rank-one edit
        try:
            optimise_targets(model, tok, REQS[:1], 1, "mlp.down.out", templates, hp)  # optimised again
            assert (cache.hits, cache.misses) == (0, 2)
        finally:
            with torch.no_grad():
                w.copy_(w0)  # bitwise back (w + x - x would differ by rounding, and rightly miss)
        again = optimise_targets(model, tok, REQS[:1], 1, "mlp.down.out", templates, hp)  # back: served
        assert cache.hits == 1 and again.n_reused == 1
        torch.testing.assert_close(again.delta, first.delta, rtol=0, atol=0)
        optimise_targets(model, tok, REQS[:1], 1, "mlp.down.out", templates, ROMEConfig(v_num_grad_steps=4))
        optimise_targets(model, tok, REQS[:1], 2, "mlp.down.out", templates, hp)  # other layer
        optimise_targets(model, tok, REQS[:1], 1, "out", templates, hp)  # other site
        optimise_targets(model, tok, REQS[:1], 1, "mlp.down.out", templates[:1], hp)  # other templates
        assert (cache.hits, cache.misses) == (1, 6)


def test_no_cache_outside_the_block(llama):
    with reuse_targets() as cache:
        pass
    _delta(llama, "r-rome", REQS[:1], [1])
    assert (cache.hits, cache.misses, len(cache)) == (0, 0, 0)


def test_target_cache_saves_and_loads(tmp_path):
    """A saved cache serves the same entries, under the same keys, in another process."""
    from golden_fast.edit.target_cache import CachedTarget, TargetCache

    cache = TargetCache()
    key = ((1.5, 2.25), 3, "out", ("{}", "A. {}"), '{"v_lr": 0.5}', "{} is in", "Paris", "Rome")
    cache.put(key, CachedTarget(torch.arange(4.0), torch.ones(4, dtype=torch.float64), [3.0, 1.0], 1.0, 2.5))
    path = cache.save(tmp_path / "targets.safetensors")
    back = TargetCache.load(path)
    e = back.get(key)
    assert e is not None and len(back) == 1
    assert torch.equal(e.delta, torch.arange(4.0)) and e.init.dtype == torch.float64
    assert e.loss_curve == [3.0, 1.0] and e.nll_final == 1.0 and e.seconds == 2.5
    assert len(TargetCache.load(tmp_path / "missing.safetensors")) == 0


def test_two_writers_of_one_store_keep_both_entries(tmp_path):
    """Two runs on one model load the store, each adds its own target and saves: none is lost, and a
    key both hold keeps the saving cache's entry."""
    from golden_fast.edit.target_cache import CachedTarget, TargetCache

    path = tmp_path / "targets.safetensors"
    a, b = TargetCache.load(path), TargetCache.load(path)
    ka, kb, both = ("a",), ("b",), ("both",)
    a.put(ka, CachedTarget(torch.zeros(2), torch.zeros(2, dtype=torch.float64), [1.0], 1.0, 1.0))
    a.put(both, CachedTarget(torch.zeros(2), torch.zeros(2, dtype=torch.float64), [1.0], 1.0, 1.0))
    b.put(kb, CachedTarget(torch.ones(2), torch.ones(2, dtype=torch.float64), [2.0], 2.0, 2.0))
    b.put(both, CachedTarget(torch.ones(2), torch.ones(2, dtype=torch.float64), [2.0], 2.0, 2.0))
    a.save(path)
    b.save(path)
    back = TargetCache.load(path)
    assert len(back) == 3 and back.get(ka) is not None and back.get(kb) is not None
    assert torch.equal(back.get(both).delta, torch.ones(2))  # b saved last: its entry


def test_autosaving_cache_keeps_finished_groups_of_an_interrupted_optimisation(llama, tmp_path, monkeypatch):
    """Targets optimised a group at a time: when the third group fails, the store holds the first two,
    and a rerun serves them and optimises only the rest, to the same targets as one uninterrupted run."""
    from golden_fast.edit import values

    model, tok = llama
    hp = Editor(model, tok, "memit", layers=[1], hparams=FAST, progress=False).hparams
    args = (model, tok, REQS, 1, "out", ["{}", "The {}"], hp)
    whole = values.optimise_targets(*args, group_size=1)

    path = tmp_path / "targets.safetensors"
    real, calls = values._optimise_group, []

    def failing_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(values, "_optimise_group", failing_third)
    with reuse_targets(TargetCache().autosave(path, every_s=0)), pytest.raises(KeyboardInterrupt):
        values.optimise_targets(*args, group_size=1)
    assert len(TargetCache.load(path)) == 2

    monkeypatch.setattr(values, "_optimise_group", real)
    with reuse_targets(TargetCache.load(path)) as cache:
        resumed = values.optimise_targets(*args, group_size=1)
    assert (cache.hits, cache.misses) == (2, 1)
    torch.testing.assert_close(resumed.delta, whole.delta, rtol=0, atol=0)


def test_autosave_waits_for_its_interval(tmp_path):
    """checkpoint() writes nothing before the interval has passed, nor when nothing is new."""
    from golden_fast.edit.target_cache import CachedTarget

    path = tmp_path / "targets.safetensors"
    cache = TargetCache().autosave(path, every_s=3600)
    cache.put(("a",), CachedTarget(torch.zeros(2), torch.zeros(2, dtype=torch.float64), [1.0], 1.0, 1.0))
    cache.checkpoint()
    assert not path.exists()
    cache.autosave(path, every_s=0)
    cache.checkpoint()
    assert len(TargetCache.load(path)) == 1
    path.unlink()
    cache.checkpoint()  # nothing new since the save
    assert not path.exists()
