"""Models placed by an accelerate device_map, with decoder layers on "cpu" and on "disk": edits,
reverts, replays and evaluation give what they give on the same model in one piece."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from golden_fast.data import EditRequest, Probe
from golden_fast.edit import EditJournal, Editor, apply_journal
from golden_fast.evaluate import evaluate
from golden_fast.models import (
    build_tiny,
    execution_device,
    get_adapter,
    load_model,
    place_model,
    placement,
)
from golden_fast.models.identity import model_identity

# Small settings as in test_editor_api (few v* steps, two short templates), with given statistics.
FAST = {"mom2_adjustment": True, "v_num_grad_steps": 4, "context_template_length_params": [[3, 2]]}
PROMPT = "The capital of France is"

# (model, method, edited layer, layers on disk): the edited layer on disk, then only another one
CASES = [
    pytest.param("tiny-llama", "r-rome", 1, (1, 3), id="llama-edited-layer-on-disk"),
    pytest.param("tiny-llama", "r-rome", 1, (2,), id="llama-other-layer-on-disk"),
    pytest.param("tiny-gpt2", "rome", 1, (1, 2), id="gpt2-edited-layer-on-disk"),
]


def _requests() -> list[EditRequest]:
    return [
        EditRequest(
            "The capital of {} is", "France", "Rome", ground_truth="Paris",
            rephrase_prompts=("Which city is the capital of France? It is",),
            locality=(Probe("The capital of Italy is", ("Rome",)),),
            portability=(Probe("The language of the capital of France is", ("French",)),),
            index=0,
        ),
        EditRequest("{} plays the", "Toko Yasuda", "piano", ground_truth="guitar",
                    locality=(Probe("Michel Rocard plays the", ("violin",)),), index=1),
    ]


def _stats(model, layer: int) -> dict[int, torch.Tensor]:
    """A fixed, well-conditioned second moment C for the edited layer (the same for both models)."""
    m = get_adapter(model).d_ff
    x = torch.randn(4 * m, m, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return {layer: x.T @ x / x.shape[0]}


def _device_map(model, disk: tuple[int, ...]) -> dict[str, str]:
    """Every decoder layer on "cpu" except those in `disk`; everything else on "cpu"."""
    adapter = get_adapter(model)
    parent, attr = adapter.layer_list_owner()
    names = {id(m): n for n, m in model.named_modules()}
    layers_name = f"{names[id(parent)]}.{attr}".lstrip(".")
    dmap = {f"{layers_name}.{i}": "disk" if i in disk else "cpu" for i in range(adapter.n_layers)}
    owner = layers_name.rsplit(".", 1)[0] if "." in layers_name else ""
    for n, _ in (parent.named_children()):
        if n != attr:
            dmap[f"{owner}.{n}".lstrip(".")] = "cpu"
    for n, _ in model.named_children():
        if n != layers_name.split(".", 1)[0]:
            dmap[n] = "cpu"
    return dmap


def _placed(name: str, disk: tuple[int, ...], folder):
    model, tok = build_tiny(name)
    return place_model(model, _device_map(model, disk), offload_folder=folder), tok


def _state(model) -> dict[str, torch.Tensor]:
    """Every tensor's values, offloaded or not."""
    with placement.onloaded(model):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def _logits(model, tok) -> torch.Tensor:
    return model(**tok([PROMPT, "Toko Yasuda plays the"], return_tensors="pt", padding=True)).logits


@pytest.fixture()
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))
    return tmp_path


def test_placement_is_reported_and_forward_is_unchanged(tmp_path):
    whole, tok = build_tiny("tiny-llama")
    placed, _ = _placed("tiny-llama", (1, 3), tmp_path / "off")
    assert get_adapter(placed).layer_devices() == {0: "cpu", 1: "disk", 2: "cpu", 3: "disk"}
    assert get_adapter(whole).layer_devices() == {i: "cpu" for i in range(4)}
    a = get_adapter(placed)
    assert a.down_proj(1).weight.device.type == "meta"  # the values live in the offload folder
    assert placement.is_offloaded(placed, a.down_proj(1)) and not placement.is_offloaded(placed, a.down_proj(0))
    assert execution_device(a.down_proj(1)) == torch.device("cpu") == execution_device(placed)
    assert torch.equal(a.down_weight(1), get_adapter(whole).down_weight(1))
    assert (a.d_model, a.d_ff) == (get_adapter(whole).d_model, get_adapter(whole).d_ff)
    assert model_identity(placed) == model_identity(whole)
    assert torch.equal(_logits(placed, tok), _logits(whole, tok))
    with pytest.raises(ValueError, match="already holds offloaded weights"):
        _placed("tiny-llama", (1,), tmp_path / "off")
    with pytest.raises(ValueError, match="offload_folder"):
        _placed("tiny-llama", (1,), None)


def test_load_model_with_a_device_map(tmp_path):
    whole, tok = load_model("tiny-gpt2")
    dmap = _device_map(whole, (2, 3))
    placed, _ = load_model("tiny-gpt2", device_map=dmap, offload_folder=tmp_path / "off")
    assert get_adapter(placed).layer_devices() == {0: "cpu", 1: "cpu", 2: "disk", 3: "disk"}
    assert placed.hf_device_map == dmap and not placed.training
    assert sorted(json.loads((tmp_path / "off" / "index.json").read_text())) == sorted(
        k for k in whole.state_dict() if k.startswith(("transformer.h.2.", "transformer.h.3."))
    )
    assert torch.equal(_logits(placed, tok), _logits(whole, tok))


def test_inferred_device_map_offloads_what_does_not_fit(tmp_path):
    whole, tok = build_tiny("tiny-llama")
    size = sum(p.numel() * p.element_size() for p in whole.parameters())
    placed, _ = load_model("tiny-llama", device_map="sequential", max_memory={"cpu": int(size * 0.7)},
                           offload_folder=tmp_path / "off")
    assert get_adapter(placed).layer_devices() == {0: "cpu", 1: "cpu", 2: "disk", 3: "disk"}
    assert placement.where(placed, get_adapter(placed).lm_head()) == "disk"  # the forward still gives the same logits
    assert torch.equal(_logits(placed, tok), _logits(whole, tok))


@pytest.mark.parametrize("name, method, layer, disk", CASES)
def test_edit_matches_one_piece_and_revert_is_bitwise(cache_home, name, method, layer, disk):
    whole, tok = build_tiny(name)
    placed, _ = _placed(name, disk, cache_home / "off")
    original = _state(placed)
    before = _logits(placed, tok)
    hp = dict(FAST)

    res_w = Editor(whole, tok, method, layers=layer, hparams=hp, stats=_stats(whole, layer), progress=False).edit(
        _requests()
    )
    ed = Editor(placed, tok, method, layers=layer, hparams=hp, stats=_stats(placed, layer), progress=False)
    res_p = ed.edit(_requests())

    assert len(res_p.journal) == len(res_w.journal) == 2
    for ep, ew in zip(res_p.journal.entries, res_w.journal.entries):
        torch.testing.assert_close(ep.u, ew.u, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ep.v, ew.v, rtol=1e-5, atol=1e-6)
    a_p, a_w = get_adapter(placed), get_adapter(whole)
    torch.testing.assert_close(a_p.down_weight(layer), a_w.down_weight(layer), rtol=1e-5, atol=1e-6)
    after = _logits(placed, tok)
    torch.testing.assert_close(after, _logits(whole, tok), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(after, before)  # the edit reached the forward pass
    assert model_identity(placed) == model_identity(whole)

    if layer in disk:
        # the offload folder's copy is the edited weight; the module itself holds none
        assert a_p.down_proj(layer).weight.device.type == "meta"
        key = next(k for k in original if k.endswith(f".{layer}.mlp.{a_p.down_attr}.weight"))
        info = json.loads((cache_home / "off" / "index.json").read_text())[key]
        dat = cache_home / "off" / f"{key}.dat"
        on_disk = np.memmap(dat, dtype=info["dtype"], mode="r", shape=tuple(info["shape"]))
        assert torch.equal(torch.from_numpy(np.array(on_disk)), a_p.down_param(layer))
        assert not torch.equal(a_p.down_param(layer), original[key])

    ed.revert()
    restored = _state(placed)
    assert set(restored) == set(original)
    assert all(torch.equal(restored[k], v) for k, v in original.items())
    assert torch.equal(_logits(placed, tok), before)
    assert torch.equal(before, _logits(build_tiny(name)[0], tok))


@pytest.mark.parametrize("name, method, layer, disk", CASES[:1] + CASES[2:])
def test_journal_replays_bitwise_onto_a_placed_model(cache_home, name, method, layer, disk):
    whole, tok = build_tiny(name)
    res = Editor(whole, tok, method, layers=layer, hparams=FAST, stats=_stats(whole, layer), progress=False).edit(
        _requests()
    )
    res.journal.save(cache_home / "j")
    placed, _ = _placed(name, disk, cache_home / "off")
    original = _state(placed)
    live = apply_journal(placed, EditJournal.load(cache_home / "j"))  # sha256-checked before and after
    assert torch.equal(get_adapter(placed).down_param(layer), get_adapter(whole).down_param(layer))
    assert torch.equal(_logits(placed, tok), _logits(whole, tok))
    live.revert(placed)
    assert all(torch.equal(_state(placed)[k], v) for k, v in original.items())


def test_evaluate_gives_the_same_metrics(cache_home):
    name, layer, disk = "tiny-llama", 1, (1, 3)
    whole, tok = build_tiny(name)
    placed, _ = _placed(name, disk, cache_home / "off")
    reqs = _requests()
    suites = ("knowedit", "counterfact")
    pre_w = evaluate(whole, tok, reqs, suites=suites, batch_size=4)
    pre_p = evaluate(placed, tok, reqs, suites=suites, batch_size=4)
    assert pre_p.by_request() == pre_w.by_request()
    for model in (whole, placed):
        Editor(model, tok, "r-rome", layers=layer, hparams=FAST, stats=_stats(model, layer), progress=False).edit(reqs)
    post_w = evaluate(whole, tok, reqs, pre=pre_w, suites=suites, batch_size=4).by_request()
    post_p = evaluate(placed, tok, reqs, pre=pre_p, suites=suites, batch_size=4).by_request()
    assert post_p.keys() == post_w.keys() and post_w[0].keys() == pre_w.by_request()[0].keys() | {"locality"}
    for i in post_w:
        assert post_p[i].keys() == post_w[i].keys()
        for metric, value in post_w[i].items():
            assert post_p[i][metric] == pytest.approx(value, rel=1e-5, abs=1e-6), (i, metric)


def test_in_memory_offload_map_is_written_and_restored():
    """accelerate.cpu_offload keeps every weight in an in-memory map: updates and reverts go there."""
    from accelerate import cpu_offload

    whole, tok = build_tiny("tiny-llama")
    placed = cpu_offload(build_tiny("tiny-llama")[0], execution_device="cpu")
    placement.refresh_identity(placed)
    original = _state(placed)
    a = get_adapter(placed)
    assert a.down_proj(2).weight.device.type == "meta" and placement.is_offloaded(placed, a.down_proj(2))
    g = torch.Generator().manual_seed(1)
    u, v = torch.randn(a.d_model, 1, generator=g), torch.randn(a.d_ff, 1, generator=g)
    jp, jw = EditJournal(), EditJournal()
    jp.record_and_apply(placed, 2, u, v)
    jw.record_and_apply(whole, 2, u, v)
    assert torch.equal(a.down_param(2), get_adapter(whole).down_param(2))
    assert torch.equal(_logits(placed, tok), _logits(whole, tok))
    jp.seal(placed)
    jp.revert(placed)
    assert all(torch.equal(_state(placed)[k], t) for k, t in original.items())
    assert torch.equal(_logits(placed, tok), _logits(build_tiny("tiny-llama")[0], tok))


def test_write_refuses_another_shape_or_dtype(tmp_path):
    placed, _ = _placed("tiny-llama", (1,), tmp_path / "off")
    a = get_adapter(placed)
    w = a.down_param(1)
    with pytest.raises(ValueError, match="cannot write"):
        a.write_down_param(1, w.to(torch.float64))
    with pytest.raises(ValueError, match="cannot write"):
        a.write_down_param(1, w[:-1])


def test_embeddings_and_head_on_disk(cache_home):
    whole, tok = build_tiny("tiny-llama")
    dmap = _device_map(whole, (1,))
    dmap.update({"model.embed_tokens": "disk", "lm_head": "disk"})
    placed = place_model(build_tiny("tiny-llama")[0], dmap, offload_folder=cache_home / "off")
    reqs = _requests()
    for model in (whole, placed):
        Editor(model, tok, "r-rome", layers=1, hparams=FAST, stats=_stats(model, 1), progress=False).edit(reqs)
    torch.testing.assert_close(_logits(placed, tok), _logits(whole, tok), rtol=1e-5, atol=1e-5)
    got = evaluate(placed, tok, reqs).by_request()
    want = evaluate(whole, tok, reqs).by_request()
    assert got.keys() == want.keys()
    for i in want:
        assert got[i] == pytest.approx(want[i], rel=1e-5, abs=1e-6)


def test_adapter_writes_reach_the_forward_and_the_identity(tmp_path):
    whole, tok = build_tiny("tiny-gpt2")
    placed, _ = _placed("tiny-gpt2", (1,), tmp_path / "off")
    a_p, a_w = get_adapter(placed), get_adapter(whole)
    w = a_p.down_weight(1).clone()  # (d, m), transposed storage behind it
    assert tuple(w.shape) == (a_p.d_model, a_p.d_ff)
    for adapter in (a_p, a_w):
        adapter.write_down_weight(1, w * 1.5)
    assert torch.equal(a_p.down_weight(1), a_w.down_weight(1))
    assert torch.equal(_logits(placed, tok), _logits(whole, tok))
    assert model_identity(placed) == model_identity(whole)
