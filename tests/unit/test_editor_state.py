"""A stateful (lifelong) editor through the `Editor`: its state carries across edit() calls, goes
back with a revert or a failed edit, is saved with the journal, and a reloaded model goes on
being edited exactly as the original would have been."""

from __future__ import annotations

import pytest
import torch

from golden_fast.data import EditRequest
from golden_fast.edit import EditError, EditJournal, Editor, apply_journal
from golden_fast.edit.methods.alphaedit import preserved_key
from golden_fast.models import get_adapter, load_model

FACTS = [
    EditRequest(prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new="English"),
    EditRequest(prompt="{} is located in", subject="Eiffel Tower", target_new="Rome"),
    EditRequest(prompt="{} plays the", subject="Toko Yasuda", target_new="piano"),
    EditRequest(prompt="{} was born in", subject="Ada Lovelace", target_new="Tokyo"),
    EditRequest(prompt="The capital of {} is", subject="France", target_new="Berlin"),
    EditRequest(prompt="{} works for", subject="Tim Cook", target_new="Google"),
]
HP = dict(context_template_length_params=[[3, 2]], v_num_grad_steps=4, nullspace_rel_threshold=0.9, L2=1.0)
LAYERS = [1, 2]


def _stats(model):
    g = torch.Generator().manual_seed(0)
    m = get_adapter(model).d_ff
    out = {}
    for layer in LAYERS:
        X = torch.randn(4 * m, m, generator=g, dtype=torch.float64)
        out[layer] = X.T @ X / (4 * m)
    return out


def _editor(model, tok, state=None):
    return Editor(model, tok, "alphaedit", layers=LAYERS, hparams=HP, stats=_stats(model), progress=False,
                  state=state)


def _weights(model):
    a = get_adapter(model)
    return {layer: a.down_weight(layer).detach().clone() for layer in LAYERS}


def test_state_carries_and_reverts():
    model, tok = load_model("tiny-llama")
    ed = _editor(model, tok)
    assert ed.spec.stateful and ed.state == {}
    first = ed.edit(FACTS[:2])
    kp1 = {k: v.clone() for k, v in ed.state.items()}
    assert set(kp1) == {preserved_key(layer) for layer in LAYERS}
    assert first.journal.editor_state.keys() == kp1.keys()
    second = ed.edit(FACTS[2:4])
    for k in kp1:  # the second batch's keys were added
        assert float((ed.state[k] - kp1[k]).norm()) > 0
    second.revert()
    for k in kp1:
        assert torch.equal(ed.state[k], kp1[k])
    ed.revert()
    assert ed.state == {}


def test_lifelong_chunks_accumulate_like_separate_calls():
    """edit(facts, mode="sequential", batch_size=2) equals three edit() calls of two facts each."""
    model, tok = load_model("tiny-llama")
    ed = _editor(model, tok)
    ed.edit(FACTS, mode="sequential", batch_size=2)
    one_call, state_one = _weights(model), dict(ed.state)
    ed.revert()
    for start in range(0, len(FACTS), 2):
        ed.edit(FACTS[start:start + 2])
    for layer, w in _weights(model).items():
        torch.testing.assert_close(w, one_call[layer], rtol=0, atol=1e-6)
    for k, v in ed.state.items():
        torch.testing.assert_close(v, state_one[k], rtol=1e-9, atol=0)


def test_failed_edit_restores_state(monkeypatch):
    model, tok = load_model("tiny-llama")
    ed = _editor(model, tok)
    ed.edit(FACTS[:2])
    before_state, before_w = {k: v.clone() for k, v in ed.state.items()}, _weights(model)
    import golden_fast.edit.methods.alphaedit as alphaedit

    real = alphaedit.keys_at_subject
    calls = {"n": 0}

    def fail_late(*args, **kwargs):  # the second chunk fails after its updates, before its state change
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(alphaedit, "keys_at_subject", fail_late)
    with pytest.raises(EditError, match="boom"):
        ed.edit(FACTS[2:], mode="sequential", batch_size=2)
    assert calls["n"] == 2
    for k, v in before_state.items():
        assert torch.equal(ed.state[k], v)
    for layer, w in _weights(model).items():
        assert torch.equal(w, before_w[layer])


def test_saved_journal_carries_state_and_editing_continues_identically(tmp_path):
    model, tok = load_model("tiny-llama")
    twin, _ = load_model("tiny-llama")
    ed = _editor(model, tok)
    res = ed.edit(FACTS[:4], mode="sequential", batch_size=2)
    res.journal.save(tmp_path / "j")
    loaded = EditJournal.load(tmp_path / "j")
    assert loaded.editor_state.keys() == ed.state.keys()
    for k, v in ed.state.items():
        assert torch.equal(loaded.editor_state[k], v)
    apply_journal(twin, loaded)
    with torch.no_grad():  # the replay is bitwise: same logits
        ids = torch.tensor([[5, 9, 3, 7]])
        assert torch.equal(model(input_ids=ids).logits, twin(input_ids=ids).logits)
    ed.edit(FACTS[4:])
    ed_twin = _editor(twin, tok, state=loaded.editor_state)
    ed_twin.edit(FACTS[4:])
    for layer, w in _weights(model).items():
        assert torch.equal(w, _weights(twin)[layer])


@pytest.mark.parametrize("method", ["alphaedit", "r-rome"])
def test_resume_solves_with_the_unedited_models_statistics(tmp_path, method):
    """A run resumed from its journal on a reloaded model goes on exactly as the uninterrupted run: C
    comes from the statistics cache of the unedited weights, not from a pass over the replayed ones."""
    hp = {**HP, "mom2_n_samples": 6} if method == "alphaedit" else {
        "context_template_length_params": [[3, 2]], "v_num_grad_steps": 4, "mom2_n_samples": 6}
    model, tok = load_model("tiny-llama")
    layers = LAYERS if method == "alphaedit" else LAYERS[:1]
    ed = Editor(model, tok, method, layers=layers, hparams=hp, progress=False, revert_each=False)
    first = ed.edit(FACTS[:2], mode="sequential", batch_size=2)
    first.journal.save(tmp_path / "j")
    ed.edit(FACTS[2:4], mode="sequential", batch_size=2)
    want = {layer: get_adapter(model).down_weight(layer).detach().clone() for layer in layers}
    C0 = {layer: ed._stats().C(layer, get_adapter(model).d_ff).clone() for layer in layers}

    twin, _ = load_model("tiny-llama")
    ed2 = Editor(twin, tok, method, layers=layers, hparams=hp, progress=False, revert_each=False)
    replayed = ed2.resume([EditJournal.load(tmp_path / "j")])
    for layer in layers:
        assert torch.equal(ed2._stats().C(layer, get_adapter(twin).d_ff), C0[layer])
    ed2.edit(FACTS[2:4], mode="sequential", batch_size=2)
    for layer in layers:
        torch.testing.assert_close(get_adapter(twin).down_weight(layer), want[layer], rtol=0, atol=0)
    ed2.revert()
    for live in reversed(replayed):
        live.revert(twin)

    # replaying first and building C afterwards (what resume prevents) gives another C
    twin3, _ = load_model("tiny-llama")
    apply_journal(twin3, EditJournal.load(tmp_path / "j"))
    ed3 = Editor(twin3, tok, method, layers=layers, hparams=hp, progress=False)
    assert not torch.equal(ed3._stats().C(layers[0], get_adapter(twin3).d_ff), C0[layers[0]])
