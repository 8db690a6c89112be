"""Mass editing is undone and replayed exactly: revert() after a 1,000-fact batch leaves every weight
bitwise as it was, and the journal of a lifelong run (1,000 facts in chunks of 100) applied to a
fresh copy of the model gives identical logits; for the lifelong editors (AlphaEdit, UltraEdit) on
the tiny models of all three families."""

from __future__ import annotations

import pytest
import torch

from golden_fast.data import EditRequest
from golden_fast.edit import EditJournal, Editor, apply_journal
from golden_fast.models import TINY_NAMES, get_adapter, load_model

N = 1000
CHUNK = 100
LAYERS = [1, 2]
WORDS = ["Paris", "Rome", "Tokyo", "piano", "English", "Berlin", "football", "Lisbon", "violin", "Madrid"]
PROMPTS = ["{} lives in", "{} plays the", "The home of {} is", "{} speaks"]
#: small settings that keep 1,000 targets cheap on a tiny model; C = I (no statistics pass)
HPARAMS = {
    "alphaedit": {"layers": LAYERS, "v_num_grad_steps": 1, "mom2_adjustment": False,
                  "context_template_length_params": []},
    "ultraedit": {"layers": LAYERS, "lr": 1e-3, "ridge": 1.0},
}


def _facts(n: int) -> list[EditRequest]:
    return [EditRequest(prompt=PROMPTS[i % len(PROMPTS)], subject=f"Person {i}", target_new=WORDS[(7 * i) % len(WORDS)])
            for i in range(n)]


def _weights(model) -> list[torch.Tensor]:
    a = get_adapter(model)
    return [a.down_weight(layer).detach().clone() for layer in range(a.n_layers)]


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([[5, 9, 3, 7, 11, 2], [4, 4, 8, 1, 6, 10]])).logits


@pytest.mark.parametrize("method", ["alphaedit", "ultraedit"])
@pytest.mark.parametrize("name", TINY_NAMES)
def test_revert_after_a_1000_fact_batch_is_bitwise(name, method):
    model, tok = load_model(name)
    before = _weights(model)
    ed = Editor(model, tok, method, hparams=HPARAMS[method], progress=False)
    res = ed.edit(_facts(N), mode="batch")
    changed = [not torch.equal(w, b) for w, b in zip(_weights(model), before)]
    assert changed[1] and changed[2]  # the edit did change the edited layers
    res.revert()
    for w, b in zip(_weights(model), before):
        assert torch.equal(w, b)
    assert ed.state == {}  # the lifelong state goes back with the weights


@pytest.mark.parametrize("method", ["alphaedit", "ultraedit"])
@pytest.mark.parametrize("name", TINY_NAMES)
def test_journal_of_a_lifelong_run_gives_identical_logits(tmp_path, name, method):
    model, tok = load_model(name)
    fresh, _ = load_model(name)
    base = _logits(fresh)
    ed = Editor(model, tok, method, hparams=HPARAMS[method], progress=False, revert_each=False)
    res = ed.edit(_facts(N), mode="sequential", batch_size=CHUNK)
    assert len(res.journal) >= N // CHUNK  # an entry per chunk at least
    res.journal.save(tmp_path / "lifelong")
    apply_journal(fresh, EditJournal.load(tmp_path / "lifelong"))
    edited = _logits(model)
    assert not torch.equal(edited, base)
    assert torch.equal(_logits(fresh), edited)
    for w, v in zip(_weights(fresh), _weights(model)):
        assert torch.equal(w, v)
