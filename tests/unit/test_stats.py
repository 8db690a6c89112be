"""The one-pass second moments (golden_fast.stats; golden_fast/FORMULAS.md, section Second-moment
statistics C_l) on tiny models: equal to the anchors' one-pass-per-layer route and to a direct
per-text computation; cache, resume, conditioning, CLI."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

import golden_fast.stats.second_moment as sm
from golden_fast.hooks import capture, n_hooks
from golden_fast.models import get_adapter, load_model
from golden_fast.models.identity import model_identity
from golden_fast.stats import (
    StatsConfig,
    conditioning,
    get_second_moment,
    per_layer_second_moments,
    second_moments,
)
from golden_fast.stats.second_moment import SecondMoment

TEXTS = [
    "The capital of France is Paris. The Eiffel Tower is located in Paris, France.",
    "Toko Yasuda plays the guitar.",
    "What is the capital of Japan? Tokyo.",
    "The official language of Italy is Italian! Rome is the capital of Italy and Berlin of Germany.",
    "Apple A5 was created by Apple.",
    "Einstein",
    "The mother tongue of Danielle Darrieux is French. She was born in France and died in 2017.",
    "Nintendo, Sony and Toyota are companies of Japan; Nokia is one of Finland.",
    "Michel Rocard was a French politician.",
    "The Colosseum is in Rome.",
]


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def llama():
    return load_model("tiny-llama")


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "texts.jsonl"
    p.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return str(p)


def _cfg(corpus, **kw):
    # a small token budget: several batches of several rows each, with left padding
    return StatsConfig(corpus=corpus, **{"n_samples": 100, "batch_tokens": 64, "cache": False, **kw})


def _direct(model, tok, layers, texts, max_len=None):
    """Truth: each text alone (no padding at all), keys captured, float64 sums."""
    a = get_adapter(model)
    sums = {layer: torch.zeros(a.d_ff, a.d_ff, dtype=torch.float64) for layer in layers}
    count = 0
    sites = [f"layers.{layer}.mlp.down.in" for layer in layers]
    for text in texts:
        ids = tok(text, truncation=max_len is not None, max_length=max_len)["input_ids"]
        with torch.no_grad(), capture(a, sites) as cap:
            model(input_ids=torch.tensor([ids]))
        for layer, site in zip(layers, sites):
            k = cap[site][0].double()  # (T, m)
            sums[layer] += k.T @ k
        count += len(ids)
    return sums, count


def _close(a: torch.Tensor, b: torch.Tensor, rel: float) -> None:
    scale = b.abs().max().item()
    err = (a.double() - b.double()).abs().max().item()
    assert err <= rel * scale, f"max error {err:.3e} > {rel:.0e} x {scale:.3e}"


def test_one_pass_equals_per_layer_passes(tiny, corpus):
    """The acceptance check: all layers in one (early-stopped) pass == one full pass per layer."""
    _, model, tok = tiny
    n = get_adapter(model).n_layers
    layers = list(range(n))
    cfg = _cfg(corpus)
    one = second_moments(model, tok, layers, cfg, progress=False)
    per = per_layer_second_moments(model, tok, layers, cfg, progress=False)
    for layer in layers:
        assert one[layer].count == per[layer].count > 0
        # same batches, same ops: equal up to float rounding (bitwise on the CPU in practice)
        torch.testing.assert_close(one[layer].sum, per[layer].sum, rtol=1e-6, atol=1e-7)
    assert n_hooks(model) == 0, "the pass must leave no hook behind"


def test_matches_direct_computation_and_drops_padding(tiny, corpus):
    _, model, tok = tiny
    layers = [0, 2]
    out = second_moments(model, tok, layers, _cfg(corpus, dtype="float64"), progress=False)
    truth, count = _direct(model, tok, layers, TEXTS)
    for layer in layers:
        s = out[layer]
        assert s.count == count, "every non-padding token counted once, padding never"
        assert s.n_texts == len(TEXTS) and s.dtype == torch.float64 and s.sum.shape == (s.m, s.m)
        assert torch.equal(s.sum, s.sum.T), "returned sums are full and symmetric"
        _close(s.sum, truth[layer], 1e-5)  # batched left-padded attention vs alone: rounding only
        torch.testing.assert_close(s.mean(), s.sum / count)


def test_float32_default_close_to_float64(llama, corpus):
    model, tok = llama
    f32 = second_moments(model, tok, [1], _cfg(corpus), progress=False)[1]
    f64 = second_moments(model, tok, [1], _cfg(corpus, dtype="float64"), progress=False)[1]
    assert f32.dtype == torch.float32 and f32.count == f64.count
    _close(f32.sum, f64.sum, 1e-5)


def test_truncation_to_max_length(llama, corpus):
    model, tok = llama
    out = second_moments(model, tok, [1], _cfg(corpus, max_length=5, dtype="float64"), progress=False)[1]
    truth, count = _direct(model, tok, [1], TEXTS, max_len=5)
    assert out.count == count <= 5 * len(TEXTS)
    _close(out.sum, truth[1], 1e-5)


def test_long_texts_are_cut_before_tokenising_without_changing_tokens(llama):
    _, tok = llama
    texts = [
        " ".join(["Paris is the capital of France."] * 40),  # 1,279 characters, cut to 32 x 8
        "=" * 600 + " Paris",  # few tokens per character: the cut is too short, tokenised again whole
        "",
        "Rome",
    ]
    got = sm._tokenize(tok, iter(texts), 8, True)
    want = [tok(t, truncation=True, max_length=8)["input_ids"] for t in texts]
    assert [g.tolist() for g in got] == [w for w in want if w]
    assert all(g.dtype == torch.int32 for g in got)


def test_early_stop_skips_upper_layers(llama, corpus):
    """Blocks above the deepest requested layer never run."""
    model, tok = llama
    a = get_adapter(model)
    ran = []
    hooks = [a.block(i).register_forward_hook(lambda m, i_, o, i=i: ran.append(i)) for i in range(a.n_layers)]
    try:
        second_moments(model, tok, [0, 1], _cfg(corpus), progress=False)
    finally:
        for h in hooks:
            h.remove()
    assert ran and set(ran) == {0, 1}


def test_bad_layers(llama, corpus):
    model, tok = llama
    with pytest.raises(IndexError, match="out of range"):
        second_moments(model, tok, [0, 99], _cfg(corpus), progress=False)
    with pytest.raises(ValueError, match="no layer"):
        second_moments(model, tok, [], _cfg(corpus), progress=False)


# -- cache ---------------------------------------------------------------------------------------
def test_cache_roundtrip_and_partial_reuse(llama, corpus, monkeypatch, tmp_path):
    model, tok = llama
    cfg = _cfg(corpus, cache=True)
    first = second_moments(model, tok, [1, 3], cfg, progress=False)
    s = first[1]
    assert not s.from_cache and s.path is not None and s.path.is_file()
    assert s.path.parts[-3] == model_identity(model)
    assert s.path.name == "layer001-n100-float32.safetensors"
    assert not list(s.path.parent.glob("*.tmp")) and not list(s.path.parent.glob("partial-*"))

    calls = []
    real = sm._accumulate
    monkeypatch.setattr(sm, "_accumulate", lambda *a, **k: calls.append(list(a[2])) or real(*a, **k))
    again = second_moments(model, tok, [0, 1, 2, 3], cfg, progress=False)
    assert calls == [[0, 2]], "only the missing layers are computed, in one pass"
    assert again[1].from_cache and torch.equal(again[1].sum, s.sum) and again[1].count == s.count
    assert torch.equal(again[3].sum, first[3].sum)
    # another sample count or dtype is another entry
    calls.clear()
    second_moments(model, tok, [1], cfg.replace(n_samples=5), progress=False)
    second_moments(model, tok, [1], cfg.replace(dtype="float64"), progress=False)
    assert calls == [[1], [1]]
    # the accessor for editors: one layer, or several, plus the layers to compute alongside
    calls.clear()
    one = get_second_moment(model, tok, 2, cfg, progress=False, layers=[0, 1, 2, 3])
    assert isinstance(one, SecondMoment) and one.from_cache and calls == []
    several = get_second_moment(model, tok, [0, 3], cfg, progress=False)
    assert sorted(several) == [0, 3]


def test_corrupt_cache_file_is_recomputed(llama, corpus):
    model, tok = llama
    cfg = _cfg(corpus, cache=True)
    s = second_moments(model, tok, [1], cfg, progress=False)[1]
    s.path.write_bytes(b"garbage")
    again = second_moments(model, tok, [1], cfg, progress=False)[1]
    assert not again.from_cache and torch.equal(again.sum, s.sum)


def test_model_id_override_keys_the_cache(llama, corpus):
    model, tok = llama
    cfg = _cfg(corpus, cache=True)
    s = second_moments(model, tok, [1], cfg, progress=False, model_id="unedited-0123")[1]
    assert s.path.parts[-3] == "unedited-0123"


def test_interrupted_pass_resumes_from_checkpoint(llama, corpus, monkeypatch, tmp_path):
    model, tok = llama
    layers = [0, 2, 3]
    # batch_tokens 32: about 8 batches; checkpoint every 2 texts: after nearly every batch
    cfg = _cfg(corpus, cache=True, batch_tokens=32, checkpoint_every=2)
    clean = second_moments(model, tok, layers, cfg.replace(cache=False), progress=False)

    real = sm._forward
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # an interruption in the middle of the fifth batch
        return real(*args, **kwargs)

    monkeypatch.setattr(sm, "_forward", failing)
    with pytest.raises(KeyboardInterrupt):
        second_moments(model, tok, layers, cfg, progress=False)
    ckpts = list((tmp_path / "home" / "stats").rglob("partial-*.safetensors"))
    assert len(ckpts) == 1, "the interrupted pass leaves its checkpoint"
    assert not list((tmp_path / "home" / "stats").rglob("layer*.safetensors"))

    calls.clear()
    monkeypatch.setattr(sm, "_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    resumed = second_moments(model, tok, layers, cfg, progress=False)
    max_len = sm.effective_max_length(model, cfg)
    n_batches = len(sm._plan(sm._tokenize(tok, TEXTS, max_len, True), 32).bounds)
    assert n_batches >= 6
    assert len(calls) == n_batches - 4, "the resumed pass starts after the 4 checkpointed batches"
    for layer in layers:
        assert resumed[layer].count == clean[layer].count
        assert torch.equal(resumed[layer].sum, clean[layer].sum)
    assert not list((tmp_path / "home" / "stats").rglob("partial-*")), "checkpoint removed when done"


def test_checkpoint_of_another_plan_is_ignored(llama, corpus, monkeypatch, tmp_path):
    model, tok = llama
    cfg = _cfg(corpus, cache=True, batch_tokens=32, checkpoint_every=2)
    real = sm._forward
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(sm, "_forward", failing)
    with pytest.raises(RuntimeError, match="boom"):
        second_moments(model, tok, [1], cfg, progress=False)
    monkeypatch.setattr(sm, "_forward", real)
    # a different batching: the checkpoint's batch indices mean nothing, start again
    other = second_moments(model, tok, [1], cfg.replace(batch_tokens=48), progress=False)[1]
    clean = second_moments(model, tok, [1], cfg.replace(cache=False, batch_tokens=48), progress=False)[1]
    assert other.count == clean.count
    torch.testing.assert_close(other.sum, clean.sum)


# -- conditioning --------------------------------------------------------------------------------
def test_conditioning_reports_without_nan():
    c = conditioning(torch.diag(torch.tensor([4.0, 2.0, 1.0])))
    assert (c.min_eig, c.max_eig, c.cond, c.rank, c.singular) == (1.0, 4.0, 4.0, 3, False)
    k = torch.randn(2, 5, dtype=torch.float64)
    low = conditioning(k.T @ k)  # rank 2 of 5
    assert low.rank == 2 and low.singular and low.cond > 1e10  # inf, or huge from rounding
    with pytest.raises(ValueError, match="NaN or Inf"):
        conditioning(torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="no tokens"):
        SecondMoment(0, torch.zeros(3, 3), 0).mean()
    assert "rank=3" in str(c)


def test_stats_conditioning_on_a_model(llama, corpus):
    model, tok = llama
    s = second_moments(model, tok, [1], _cfg(corpus), progress=False)[1]
    c = s.conditioning()
    assert c.m == s.m and c.max_eig > 0 and c.rank <= min(s.m, s.count)


# -- CLI ---------------------------------------------------------------------------------------------
def _cli(argv):
    from golden_fast.cli import stats as cli_stats

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli_stats.register(sub)
    args = parser.parse_args(["stats", *argv])
    return args.func(args)


def test_cli_stats(corpus, capsys):
    rc = _cli(["--model", "tiny-llama", "--layers", "0-1,3", "--corpus", corpus, "--n-samples", "6",
               "--no-progress", "--condition"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "cache:" in out and "/stats/tiny-llama-" in out
    assert "computed 3, from cache 0" in out and "tokens:" in out and "time:" in out and "cond" in out
    rc = _cli(["--model", "tiny-llama", "--layers", "1", "--corpus", corpus, "--n-samples", "6", "--json",
               "--no-progress"])
    info = json.loads(capsys.readouterr().out)
    assert info["from_cache"] == [1] and info["texts"] == 6 and info["tokens"] > 0


def test_cli_layer_parsing():
    from golden_fast.cli import CLIError
    from golden_fast.cli.stats import parse_layers

    assert parse_layers("0-3,7", 30) == [0, 1, 2, 3, 7]
    assert parse_layers("all", 4) == [0, 1, 2, 3]
    for bad in ("3-1", "x", "0-30", "-1"):
        with pytest.raises(CLIError):
            parse_layers(bad, 30)


def test_cache_only_lookup_raises_for_missing_layers(llama, corpus):
    model, tok = llama
    cfg = _cfg(corpus, cache=True)
    with pytest.raises(LookupError, match=r"layers \[2\]"):
        second_moments(model, tok, [2], cfg, progress=False, compute=False)
    second_moments(model, tok, [2], cfg, progress=False)
    assert 2 in second_moments(model, tok, [2], cfg, progress=False, compute=False)


def test_editor_moments_never_measure_edited_weights_under_the_unedited_name(corpus):
    """An editor's C is keyed by the unedited model's identity: once the weights change, a layer that
    is not cached is refused (a pass would measure the edited weights), and a cached one is served."""
    from golden_fast.edit.config import ROMEConfig
    from golden_fast.edit.moments import Moments

    model, tok = load_model("tiny-llama")
    a = get_adapter(model)
    hp = ROMEConfig(layers=[1, 2], mom2_dataset=corpus, mom2_n_samples=100)
    moments = Moments.from_stats(model, tok, hp)
    w0 = a.down_weight(0).detach().clone()
    with torch.no_grad():
        a.down_weight(0).mul_(1.5)  # an edit before C was loaded
    with pytest.raises(LookupError, match="layer 1: C of the unedited model"):
        moments.C(1, a.d_ff)
    with torch.no_grad():
        a.down_weight(0).copy_(w0)  # the unedited weights again: the pass may run
    C1 = moments.C(1, a.d_ff)  # computes layers 1 and 2 in one pass, cached
    with torch.no_grad():
        a.down_weight(0).mul_(1.5)
    C2 = moments.C(2, a.d_ff)  # from the cache, though the weights changed
    with torch.no_grad():
        a.down_weight(0).copy_(w0)
    want = second_moments(model, tok, [1, 2], _cfg(corpus), progress=False)
    torch.testing.assert_close(C1, want[1].mean().double())
    torch.testing.assert_close(C2, want[2].mean().double())
