"""UltraEdit (golden_fast/edit/methods/ultraedit.py) against a plain float64 implementation written here
(own hooks, one unpadded forward per request, autograd on a hand-made group loss, own running
statistics, own ridge solve with an explicit inverse), and through the `Editor`: batch edits, lifelong
chunks, revert, the journal's state and continuing after a reload; on the tiny models of all three
families."""

from __future__ import annotations

import math

import pytest
import torch

from golden_fast.data import EditRequest
from golden_fast.edit import EditError, EditJournal, Editor, apply_journal
from golden_fast.edit.base import run_method
from golden_fast.edit.methods.ultraedit import UltraEditConfig, norm_keys, ridge_factors
from golden_fast.edit.registry import get_editor
from golden_fast.models import TINY_NAMES, get_adapter, load_model
from golden_fast.tokens import target_span

FACTS = [
    EditRequest(prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new="English"),
    EditRequest(prompt="{} is located in", subject="Eiffel Tower", target_new="Rome, Italy"),
    EditRequest(prompt="{} was born in", subject="Ada Lovelace", target_new="Tokyo"),  # one token
    EditRequest(prompt="{} plays the", subject="Toko Yasuda", target_new="piano"),
    EditRequest(prompt="The capital of {} is", subject="France", target_new="Berlin"),
]
LAYERS = [1, 2]
LR, RIDGE, GROUP = 1e-3, 0.5, 2
HP = dict(lr=LR, ridge=RIDGE, group_size=GROUP)
REL = 1e-6
EPS = float(torch.finfo(torch.float32).eps)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(params=TINY_NAMES)
def model64(request):
    model, tok = load_model(request.param, dtype=torch.float64)
    return model, tok


def _apply_into(adapter):
    def apply(layer, U, V):
        with torch.no_grad():
            adapter.down_weight(layer).add_(U.to(torch.float64) @ V.to(torch.float64).T)

    return apply


def _weights(model):
    a = get_adapter(model)
    return {layer: a.down_weight(layer).detach().clone() for layer in LAYERS}


# ---- the plain implementation -----------------------------------------------------------------


def _group_rows(model, tok, group):
    """{layer: (K (n_b, m), G (n_b, d))}: one unpadded forward per request, hooks on the down-projection
    keeping its input and output, G = d(mean target cross-entropy of the group) / d(output)."""
    a = get_adapter(model)
    assert all(p.requires_grad for p in model.parameters())  # the outputs must carry a graph
    seen = {}
    handles = [a.down_proj(layer).register_forward_hook(
        lambda mod, i, o, layer=layer: seen.__setitem__(layer, (i[0], o))) for layer in LAYERS]
    total, count, ks, outs, positions = 0.0, 0, {l: [] for l in LAYERS}, [], []
    try:
        with torch.enable_grad():
            for req in group:
                sp = target_span(tok, req.text, req.target_new)
                ids = sp.ids[: sp.end]
                logits = model(input_ids=torch.tensor([ids])).logits[0]
                pos = list(range(sp.start - 1, sp.end - 1))  # predicts ids[p + 1], a target token
                for p in pos:
                    total = total - torch.log_softmax(logits[p], -1)[ids[p + 1]]
                count += len(pos)
                for layer in LAYERS:
                    k, o = seen[layer]
                    ks[layer].append(k[0, pos].detach())
                    outs.append(o)
                positions.append(pos)
            loss = total / count
            grads = torch.autograd.grad(loss, outs)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for j, layer in enumerate(LAYERS):
        G = torch.cat([grads[r * len(LAYERS) + j][0, positions[r]] for r in range(len(group))])
        out[layer] = (torch.cat(ks[layer]).double(), G.double())
    return out


def _plain_stats_update(stat, x):
    n, mean, m2 = stat
    nb = x.shape[0]
    mean_b = x.sum(0) / nb
    var_b = ((x - mean_b) ** 2).sum(0) / (nb - 1) if nb > 1 else torch.zeros_like(mean_b)
    n_new = n + nb
    delta = mean_b - mean
    return n_new, mean + nb * delta / n_new, m2 + nb * var_b + n * nb * delta**2 / n_new


def _plain_call(model, tok, requests, stats, lr=LR, ridge=RIDGE, group=GROUP):
    """One call of the plain UltraEdit: {layer: ΔW} and the new statistics (dict shape -> (n, mean, m2))."""
    groups = [_group_rows(model, tok, requests[i:i + group]) for i in range(0, len(requests), group)]
    stats = dict(stats)
    for rows in groups:
        for layer in LAYERS:
            K, G = rows[layer]
            shape = (K.shape[1], G.shape[1])
            width = shape[0] + shape[1]
            old = stats.get(shape, (0.0, torch.zeros(width, dtype=torch.float64),
                                    torch.zeros(width, dtype=torch.float64)))
            stats[shape] = _plain_stats_update(old, torch.cat([K, G], 1))
    deltas = {}
    for layer in LAYERS:
        K = torch.cat([rows[layer][0] for rows in groups])
        G = torch.cat([rows[layer][1] for rows in groups])
        m = K.shape[1]
        n, mean, m2 = stats[(m, G.shape[1])]
        std = torch.sqrt(m2 / (n - 1 + EPS))
        x = (torch.cat([K, G], 1) - mean) / (std + EPS)
        kh, gh = x[:, :m], x[:, m:]
        V = torch.stack([-lr * float(kh[t] @ kh[t]) * gh[t] for t in range(K.shape[0])])
        deltas[layer] = V.T @ K @ torch.linalg.inv(K.T @ K + ridge * torch.eye(m, dtype=torch.float64))
    return deltas, stats


# ---- against the formula ----------------------------------------------------------------------


def test_ultraedit_matches_formula_over_two_lifelong_calls(model64):
    """Two calls through one state (groups of 2; the first call's second group, one request with a
    one-token target, has a single row): ΔW of every layer and the final statistics as the plain
    implementation has them."""
    model, tok = model64
    a = get_adapter(model)
    cfg = UltraEditConfig(layers=LAYERS, **HP)
    calls = [FACTS[:3], FACTS[3:]]
    W0 = _weights(model)
    state: dict = {}
    got = []
    for call in calls:
        traces = run_method("ultraedit", model, tok, call, cfg, None, _apply_into(a), progress=False, state=state)
        assert len(traces) == len(call) and [t.index for t in traces] == list(range(len(call)))
        updates = traces[0].extras["layer_updates"]
        assert set(updates) == set(LAYERS)
        assert traces[0].extras["targets_seconds"] > 0 and traces[0].extras["solve_seconds"] >= 0
        total = math.sqrt(sum(float((U @ V.T).norm()) ** 2 for U, V in updates.values()))
        assert all(abs(t.update_norm - total) <= 1e-9 * total for t in traces)
        got.append({layer: U @ V.T for layer, (U, V) in updates.items()})
        m, d = a.d_ff, a.d_model
        assert set(state) == set(norm_keys(m, d))
    assert target_span(tok, FACTS[2].text, FACTS[2].target_new).end - target_span(
        tok, FACTS[2].text, FACTS[2].target_new).start == 1
    W_after = _weights(model)
    # replay from W0 with the plain implementation
    with torch.no_grad():
        for layer in LAYERS:
            a.down_weight(layer).copy_(W0[layer])
    stats: dict = {}
    for call, updates in zip(calls, got):
        deltas, stats = _plain_call(model, tok, call, stats)
        for layer in LAYERS:
            assert float(deltas[layer].norm()) > 0
            assert _rel(updates[layer], deltas[layer]) < REL, layer
            with torch.no_grad():
                a.down_weight(layer).add_(deltas[layer])
    for layer in LAYERS:
        assert _rel(W_after[layer] - W0[layer], a.down_weight(layer).detach() - W0[layer]) < REL
    (shape, (n, mean, m2)), = stats.items()
    kn, km, k2 = norm_keys(*shape)
    spans = [target_span(tok, r.text, r.target_new) for r in FACTS]
    assert float(state[kn]) == n == len(LAYERS) * sum(sp.end - sp.start for sp in spans)
    assert _rel(state[km], mean) < REL and _rel(state[k2], m2) < REL


def test_second_call_uses_the_first_calls_statistics(model64):
    """The same second call from a fresh state gives another update: the state is read."""
    model, tok = model64
    a = get_adapter(model)
    cfg = UltraEditConfig(layers=LAYERS, **HP)
    W0 = _weights(model)
    state: dict = {}
    run_method("ultraedit", model, tok, FACTS[:3], cfg, None, _apply_into(a), progress=False, state=state)
    first = dict(state)
    carried = run_method("ultraedit", model, tok, FACTS[3:], cfg, None, lambda *args: None, progress=False,
                         state=state)[0].extras["layer_updates"]
    for k, v in first.items():  # replaced, not written into
        assert state[k] is not v
    fresh = run_method("ultraedit", model, tok, FACTS[3:], cfg, None, lambda *args: None, progress=False,
                       state={})[0].extras["layer_updates"]
    for layer in LAYERS:
        U, V = carried[layer]
        U2, V2 = fresh[layer]
        assert _rel(U @ V.T, U2 @ V2.T) > 1e-3
    with torch.no_grad():
        for layer in LAYERS:
            a.down_weight(layer).copy_(W0[layer])


@pytest.mark.parametrize("n_rows", [7, 40])
def test_ridge_factors_both_branches(n_rows):
    """N <= m: factors (d, N), (m, N) from the N x N system; N > m: the dense ΔW and I. Both equal
    Vᵀ K (KᵀK + ridge I)⁻¹."""
    g = torch.Generator().manual_seed(n_rows)
    m, d, ridge = 20, 9, 0.3
    K = torch.randn(n_rows, m, generator=g, dtype=torch.float64)
    V = torch.randn(n_rows, d, generator=g, dtype=torch.float64)
    U, W, cond, fell_back = ridge_factors(K, V, ridge)
    assert U.shape == (d, min(n_rows, m)) and W.shape == (m, min(n_rows, m)) and not fell_back
    ref = V.T @ K @ torch.linalg.inv(K.T @ K + ridge * torch.eye(m, dtype=torch.float64))
    assert _rel(U @ W.T, ref) < 1e-10
    assert cond >= 1 and math.isfinite(cond)


# ---- through the Editor -------------------------------------------------------------------------


def _editor(model, tok, state=None):
    return Editor(model, tok, "ultraedit", layers=LAYERS, hparams=HP, progress=False, state=state)


def test_registered():
    spec = get_editor("ultraedit")
    assert spec.config is UltraEditConfig and spec.stateful and not spec.native_batch
    assert (spec.default_mode, spec.targets, spec.uses_moments, spec.single) == ("batch", "none", False, False)
    cfg = UltraEditConfig()
    assert (cfg.lr, cfg.ridge, cfg.group_size, cfg.layers) == (1e-6, 1.0, 10, (3, 4, 5, 6, 7, 8))
    assert cfg.to_dict()["method"] == "ultraedit"


def test_editor_batch_edit_changes_weights_by_the_formula(model64):
    model, tok = model64
    W0 = _weights(model)
    expected, _ = _plain_call(model, tok, FACTS[:3], {})
    ed = _editor(model, tok)
    res = ed.edit(FACTS[:3])
    assert res.mode == "batch" and len(res.traces) == 3
    for layer, w in _weights(model).items():
        assert _rel(w - W0[layer], expected[layer]) < REL
    assert res.journal.editor_state.keys() == set(norm_keys(get_adapter(model).d_ff, get_adapter(model).d_model))


def test_editor_lifelong_chunks_equal_separate_calls_and_revert(model64):
    model, tok = model64
    W0 = _weights(model)
    ed = _editor(model, tok)
    ed.edit(FACTS[:4], mode="sequential", batch_size=2)
    one_call, state_one = _weights(model), dict(ed.state)
    ed.revert()
    assert ed.state == {}
    for layer, w in _weights(model).items():
        assert torch.equal(w, W0[layer])
    first = ed.edit(FACTS[:2])
    after_first, state_first = _weights(model), {k: v.clone() for k, v in ed.state.items()}
    second = ed.edit(FACTS[2:4])
    for layer, w in _weights(model).items():
        assert torch.equal(w, one_call[layer])
    assert ed.state.keys() == state_one.keys()
    for k, v in ed.state.items():
        assert torch.equal(v, state_one[k])
    second.revert()
    for layer, w in _weights(model).items():
        assert torch.equal(w, after_first[layer])
    for k, v in state_first.items():
        assert torch.equal(ed.state[k], v)
    assert not first.reverted
    ed.revert()
    assert ed.state == {}
    for layer, w in _weights(model).items():
        assert torch.equal(w, W0[layer])


def test_failed_edit_restores_weights_and_state(model64, monkeypatch):
    model, tok = model64
    ed = _editor(model, tok)
    ed.edit(FACTS[:2])
    before_state, before_w = {k: v.clone() for k, v in ed.state.items()}, _weights(model)
    import golden_fast.edit.methods.ultraedit as ultraedit

    real, calls = ultraedit.ridge_factors, {"n": 0}

    def fail_late(*args, **kwargs):  # the second chunk fails; the first chunk's updates are applied
        calls["n"] += 1
        if calls["n"] > len(LAYERS):
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(ultraedit, "ridge_factors", fail_late)
    with pytest.raises(EditError, match="boom"):
        ed.edit(FACTS[2:], mode="sequential", batch_size=2)
    assert ed.state.keys() == before_state.keys()
    for k, v in before_state.items():
        assert torch.equal(ed.state[k], v)
    for layer, w in _weights(model).items():
        assert torch.equal(w, before_w[layer])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", TINY_NAMES)
def test_saved_journal_carries_state_and_editing_continues_identically(tmp_path, name, dtype):
    # float64 too: its update goes through a BLAS GEMM whose bits can depend on where the factors sit
    # in memory, so the journal applies and replays fresh copies
    model, tok = load_model(name, dtype=dtype)
    twin, _ = load_model(name, dtype=dtype)
    ed = _editor(model, tok)
    res = ed.edit(FACTS[:4], mode="sequential", batch_size=2)
    res.journal.save(tmp_path / "j")
    loaded = EditJournal.load(tmp_path / "j")
    assert loaded.editor_state.keys() == ed.state.keys()
    for k, v in ed.state.items():
        assert torch.equal(loaded.editor_state[k], v)
    apply_journal(twin, loaded)
    with torch.no_grad():
        ids = torch.tensor([[5, 9, 3, 7]])
        assert torch.equal(model(input_ids=ids).logits, twin(input_ids=ids).logits)
    ed.edit(FACTS[4:])
    ed_twin = _editor(twin, tok, state=loaded.editor_state)
    ed_twin.edit(FACTS[4:])
    for layer, w in _weights(model).items():
        assert torch.equal(w, _weights(twin)[layer])
    for k, v in ed.state.items():
        assert torch.equal(ed_twin.state[k], v)


# ---- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, field",
    [
        (dict(lr=0.0), "lr"),
        (dict(lr=-1e-6), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(ridge=0.0), "ridge"),
        (dict(ridge=float("inf")), "ridge"),
        (dict(group_size=0), "group_size"),
        (dict(group_size=2.5), "group_size"),
        (dict(layers=()), "layers"),
        (dict(layers=(1, 1)), "layers"),
    ],
)
def test_validation_names_the_field(values, field):
    with pytest.raises(ValueError, match=field):
        UltraEditConfig(**values)


def test_editor_rejects_bad_hparams():
    model, tok = load_model("tiny-llama")
    with pytest.raises(ValueError, match="group_size"):
        Editor(model, tok, "ultraedit", layers=LAYERS, hparams={"group_size": 0})
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        Editor(model, tok, "ultraedit", layers=LAYERS, hparams={"v_lr": 0.1})
