"""The edit journal: bitwise revert, save/load, replay on a fresh model, refusal of other models,
atomic saves. Every model here is built fresh (the session-scoped `tiny` fixture is read-only)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from golden_fast.edit.journal import (
    EditJournal,
    JournalMismatchError,
    apply_journal,
    weight_sha256,
)
from golden_fast.models import TINY_NAMES, build_tiny, get_adapter

DTYPES = [torch.float32, torch.bfloat16]


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(model, snap) -> None:
    state = model.state_dict()
    bad = [k for k, v in snap.items() if not torch.equal(state[k], v)]
    assert not bad, f"differ bitwise: {bad}"


def _factors(model, n: int, seed: int, scale: float = 0.5):
    a = get_adapter(model)
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(a.d_model, n, generator=g) * scale  # (d, n)
    v = torch.randn(a.d_ff, n, generator=g) * scale  # (m, n)
    return u, v


def _record_several(model, journal: EditJournal) -> None:
    """Entries on the same layer (twice, different ranks, a 1-D pair) and on another layer."""
    u, v = _factors(model, 1, 1)
    journal.record_and_apply(model, 1, u, v)
    u, v = _factors(model, 3, 2)
    journal.record_and_apply(model, 2, u, v)
    u, v = _factors(model, 1, 3)
    journal.record_and_apply(model, 1, u[:, 0], v[:, 0])
    u, v = _factors(model, 2, 4)
    journal.record_and_apply(model, 1, u.double(), v.double())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", TINY_NAMES)
def test_revert_is_bitwise_after_several_entries(name, dtype):
    model, _ = build_tiny(name, dtype=dtype)
    snap = _snapshot(model)
    j = EditJournal(method="test")
    _record_several(model, j)
    a = get_adapter(model)
    # the edits happened (else the revert test proves nothing) and only on the touched layers
    for layer in (1, 2):  # storage layout on both sides
        assert not torch.equal(a.down_proj(layer).weight, snap[j.layers[layer].param])
    untouched = [k for k in snap if k not in (j.layers[1].param, j.layers[2].param)]
    assert all(torch.equal(model.state_dict()[k], snap[k]) for k in untouched)
    assert len(j) == 4 and j.touched_layers == [1, 2]
    j.revert(model)
    _assert_same(model, snap)
    j.revert(model)  # a second revert does nothing
    _assert_same(model, snap)


def test_one_original_copy_per_layer():
    model, _ = build_tiny("tiny-llama")
    j = EditJournal()
    _record_several(model, j)
    assert sorted(j.layers) == [1, 2]
    assert all(r.original is not None and r.original.device.type == "cpu" for r in j.layers.values())


@pytest.mark.parametrize("name", TINY_NAMES)
def test_update_is_u_v_transpose_in_the_d_by_m_view(name):
    """Conv1D (GPT-2) stores (m, d): the journal must still add U Vᵀ to the (d, m) view."""
    model, _ = build_tiny(name, dtype=torch.float64)
    a = get_adapter(model)
    before = a.down_weight(1).detach().clone()
    u, v = _factors(model, 2, 7)
    EditJournal().record_and_apply(model, 1, u, v)
    torch.testing.assert_close(a.down_weight(1) - before, u.double() @ v.double().T, rtol=1e-12, atol=1e-12)


def test_update_norms_match_the_dense_update():
    model, _ = build_tiny("tiny-gpt2")
    j = EditJournal()
    _record_several(model, j)
    dense = {}
    for e in j.entries:
        dense[e.layer] = dense.get(e.layer, 0) + e.u.double() @ e.v.double().T
    norms = j.update_norms()
    assert norms.keys() == dense.keys()
    for layer, delta in dense.items():
        assert norms[layer] == pytest.approx(float(torch.linalg.matrix_norm(delta)), rel=1e-10)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", TINY_NAMES)
def test_saved_journal_replays_bitwise_on_a_fresh_model(tmp_path, name, dtype):
    edited, tok = build_tiny(name, dtype=dtype)
    j = EditJournal(method="test", hparams={"layers": [1, 2]}, requests=["record 0"])
    _record_several(edited, j)
    j.seal(edited)
    j.save(tmp_path / "j")

    fresh, _ = build_tiny(name, dtype=dtype)
    snap = _snapshot(fresh)
    live = apply_journal(fresh, EditJournal.load(tmp_path / "j"))
    _assert_same(fresh, _snapshot(edited))
    batch = tok(["The capital of France is", "Toko Yasuda plays the"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(fresh(**batch).logits, edited(**batch).logits)
    assert len(live) == len(j) and live.sealed
    live.revert(fresh)
    _assert_same(fresh, snap)


def test_save_load_round_trip(tmp_path):
    model, _ = build_tiny("tiny-gpt2", dtype=torch.bfloat16)
    j = EditJournal(method="r-rome", hparams={"layers": [1], "v_lr": 0.5}, requests=[{"ref": "record 3"}],
                    meta={"mode": "sequential"})
    _record_several(model, j)
    j.seal(model)
    path = j.save(tmp_path / "j")
    assert sorted(os.listdir(path)) == ["journal.json", "updates.safetensors"]  # no originals by default
    data = json.loads((path / "journal.json").read_text())
    assert data["method"] == "r-rome" and data["hparams"]["v_lr"] == 0.5
    assert data["meta"]["mode"] == "sequential"
    assert data["model_identity"].startswith("tiny-gpt2-")
    assert set(data["versions"]) >= {"torch", "golden_fast"}
    assert data["layers"]["1"]["dtype"] == "bfloat16" and data["layers"]["1"]["transposed"] is True

    k = EditJournal.load(path)
    assert k.method == j.method and k.hparams == j.hparams and k.requests == j.requests
    assert k.model_identity == j.model_identity
    assert len(k.entries) == len(j.entries)
    for a, b in zip(j.entries, k.entries):
        fields = ("layer", "dtype", "transposed", "param", "backend")
        assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields]
        assert a.u.dtype == b.u.dtype and torch.equal(a.u, b.u) and torch.equal(a.v, b.v)
    for layer, r in j.layers.items():
        assert k.layers[layer].sha256_before == r.sha256_before
        assert k.layers[layer].sha256_after == r.sha256_after
        assert k.layers[layer].original is None
    with pytest.raises(RuntimeError, match="loaded from disk"):
        k.record_and_apply(model, 1, *_factors(model, 1, 0))
    with pytest.raises(RuntimeError, match="no copy of the original"):
        k.revert(model)


def test_saved_originals_let_a_loaded_journal_revert(tmp_path):
    model, _ = build_tiny("tiny-llama", dtype=torch.bfloat16)
    snap = _snapshot(model)
    j = EditJournal()
    _record_several(model, j)
    j.seal(model)
    j.save(tmp_path / "j", include_originals=True)
    k = EditJournal.load(tmp_path / "j")
    k.revert(model)  # sealed: checks the model is the edited one first
    _assert_same(model, snap)
    with pytest.raises(JournalMismatchError, match="changed after"):  # now it is not
        EditJournal.load(tmp_path / "j").revert(model)


def test_revert_refuses_while_a_later_edit_of_the_layer_is_applied():
    model, _ = build_tiny("tiny-gemma3")
    snap = _snapshot(model)
    first, second = EditJournal(), EditJournal()
    first.record_and_apply(model, 1, *_factors(model, 1, 0))
    first.seal(model)
    second.record_and_apply(model, 1, *_factors(model, 1, 1))
    second.seal(model)
    with pytest.raises(JournalMismatchError, match="layer 1"):
        first.revert(model)
    second.revert(model)
    first.revert(model)
    _assert_same(model, snap)


def test_revert_refuses_another_model_object():
    model, _ = build_tiny("tiny-llama")
    other, _ = build_tiny("tiny-llama")
    j = EditJournal()
    j.record_and_apply(model, 1, *_factors(model, 1, 0))
    with pytest.raises(ValueError, match="another model"):
        j.revert(other)


# ---- apply_journal refuses models that are not the one recorded on --------------------------


@pytest.fixture()
def saved(tmp_path):
    model, _ = build_tiny("tiny-llama")
    j = EditJournal()
    j.record_and_apply(model, 2, *_factors(model, 1, 0))
    j.seal(model)
    return EditJournal.load(j.save(tmp_path / "j"))


def _refused(model, journal, match: str, **kw) -> None:
    snap = _snapshot(model)
    with pytest.raises(JournalMismatchError, match=match):
        apply_journal(model, journal, **kw)
    _assert_same(model, snap)  # nothing written


def test_apply_journal_refuses_other_weights(saved):
    other, _ = build_tiny("tiny-llama", seed=1)
    _refused(other, saved, r"layer 2 \(model\.layers\.2\.mlp\.down_proj\.weight\).*sha256")


def test_apply_journal_refuses_other_dtype(saved):
    other, _ = build_tiny("tiny-llama", dtype=torch.bfloat16)
    _refused(other, saved, "layer 2.*bfloat16")


def test_apply_journal_refuses_other_family(saved):
    other, _ = build_tiny("tiny-gpt2")
    _refused(other, saved, "layer 2")


def test_apply_journal_refuses_an_already_edited_model(saved):
    model, _ = build_tiny("tiny-llama")
    apply_journal(model, saved)
    _refused(model, saved, "layer 2.*already edited")


def test_apply_journal_strict_identity(saved):
    """Touched layers equal, another weight different: refused unless strict=False."""
    model, _ = build_tiny("tiny-llama")
    with torch.no_grad():
        get_adapter(model).down_proj(0).weight.mul_(2)
    _refused(model, saved, "identity")
    apply_journal(model, saved, strict=False)


def test_apply_journal_detects_a_replay_that_is_not_bitwise(saved):
    """The after-checksums prove the replay exact: a tampered one is caught and undone."""
    model, _ = build_tiny("tiny-llama")
    saved.layers[2].sha256_after = "0" * 64
    _refused(model, saved, "differ bitwise")


# ---- saving ---------------------------------------------------------------------------------


def test_save_is_atomic(tmp_path, monkeypatch):
    import safetensors.torch

    model, _ = build_tiny("tiny-gpt2")
    j = EditJournal()
    _record_several(model, j)
    real = safetensors.torch.save_file

    def fail_after_writing(tensors, filename, *a, **kw):  # a crash half-way through the save
        real(tensors, filename, *a, **kw)
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", fail_after_writing)
    with pytest.raises(OSError, match="disk full"):
        j.save(tmp_path / "j")
    assert os.listdir(tmp_path) == []  # neither the directory nor a temporary one

    # overwriting: a failed save leaves the old journal intact
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    j.save(tmp_path / "j")
    before = (tmp_path / "j" / "journal.json").read_bytes()
    monkeypatch.setattr(safetensors.torch, "save_file", fail_after_writing)
    with pytest.raises(OSError):
        j.save(tmp_path / "j", overwrite=True)
    assert os.listdir(tmp_path) == ["j"] and (tmp_path / "j" / "journal.json").read_bytes() == before


def test_save_refuses_an_existing_path_unless_overwrite(tmp_path):
    model, _ = build_tiny("tiny-gpt2")
    j = EditJournal()
    j.record_and_apply(model, 0, *_factors(model, 1, 0))
    j.save(tmp_path / "j")
    with pytest.raises(FileExistsError):
        j.save(tmp_path / "j")
    j.record_and_apply(model, 1, *_factors(model, 1, 1))
    j.save(tmp_path / "j", overwrite=True)
    assert len(EditJournal.load(tmp_path / "j")) == 2
    assert sorted(os.listdir(tmp_path)) == ["j"]


def test_weight_sha256_is_of_the_bytes():
    t = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
    assert weight_sha256(t) == weight_sha256(t.clone())
    assert weight_sha256(t) != weight_sha256(t.float())  # other bytes
    u = t.clone()
    u.view(torch.int16)[1, 2] += 1  # the last bit of one element
    assert not torch.equal(t, u)
    assert weight_sha256(t) != weight_sha256(u)


def test_replay_uses_the_recorded_backend_and_warns_when_it_cannot(tmp_path):
    import dataclasses

    model, _ = build_tiny("tiny-llama", dtype=torch.bfloat16)
    j = EditJournal()
    j.record_and_apply(model, 1, *_factors(model, 2, 0), backend="torch")
    j.seal(model)
    assert j.entries[0].backend == "torch"
    loaded = EditJournal.load(j.save(tmp_path / "j"))
    fresh, _ = build_tiny("tiny-llama", dtype=torch.bfloat16)
    live = apply_journal(fresh, loaded)  # the automatic choice on CPU may be cpp: torch must be asked for
    assert live.entries[0].backend == "torch"
    assert torch.equal(get_adapter(fresh).down_weight(1), get_adapter(model).down_weight(1))

    loaded.entries[0] = dataclasses.replace(loaded.entries[0], backend="triton")  # cannot run on CPU
    other, _ = build_tiny("tiny-llama", dtype=torch.bfloat16)
    with pytest.warns(RuntimeWarning, match="triton"):
        apply_journal(other, loaded)
