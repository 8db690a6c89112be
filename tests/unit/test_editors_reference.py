"""Each editor's update against a plain float64 implementation of its formula (FORMULAS.md),
written here independently (own hooks, one unpadded forward per text), on tiny models of
all three families run in float64."""

from __future__ import annotations

import copy

import pytest
import torch

from golden_fast.data import EditRequest
from golden_fast.edit.base import run_method
from golden_fast.edit.config import EMMETConfig, MEMITConfig, ROMEConfig, RROMEConfig
from golden_fast.edit.context import context_templates
from golden_fast.models import TINY_NAMES, get_adapter, load_model
from golden_fast.tokens import subject_last_token

REQUESTS = [
    EditRequest(
        prompt="The mother tongue of {} is",
        subject="Danielle Darrieux",
        target_new="English",
        ground_truth="French",
    ),
    EditRequest(
        prompt="{} is located in", subject="Eiffel Tower", target_new="Rome, Italy", ground_truth="Paris"
    ),
    EditRequest(
        prompt="Toko Yasuda plays the", subject="Toko Yasuda", target_new="piano", ground_truth="guitar"
    ),
]
FAST = dict(context_template_length_params=[[3, 2]], v_num_grad_steps=5)
REL = 1e-6


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _spd(dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(4 * dim, dim, generator=g, dtype=torch.float64)
    return X.T @ X / (4 * dim)


def _module_io(model, adapter, layer, text_template, subject, site="down"):
    """(input, output) of the down-projection (site="down") or the residual after the block
    (site="out") at the subject's last token: one unpadded forward with a hand-made hook."""
    ids, idx = subject_last_token(model.tok, text_template, subject)
    got = {}
    if site == "down":
        mod = adapter.down_proj(layer)
        h = mod.register_forward_hook(lambda m, i, o: got.update(k=i[0][0, idx].clone(), v=o[0, idx].clone()))
    else:
        mod = adapter.block(layer)
        h = mod.register_forward_hook(
            lambda m, i, o: got.update(v=(o[0] if isinstance(o, tuple) else o)[0, idx].clone())
        )
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
    finally:
        h.remove()
    return got.get("k"), got["v"]


def _through_gemma_norm(norm, model, adapter, layer, R):
    return _through_gemma_norm_for(norm, model, adapter, layer, R, REQUESTS)


def _through_gemma_norm_for(norm, model, adapter, layer, R, batch):
    """Plain formula: Gemma's N(x) = x / sqrt(mean(x^2) + eps) * (1 + w). Per request (columns of R):
    y = N(x) + r - t N(x) / (1 + w)^2 with t the smaller root of rms(y / (1 + w)) = 1, found here by
    numpy's polynomial roots, then x' = y / (1 + w) scaled to the rms of x."""
    import numpy as np

    w, eps = norm.weight.detach().double(), float(norm.eps)
    g = (1 + w) / (1 + eps) ** 0.5
    cols = []
    for j, r in enumerate(batch):
        x = _module_io(model, adapter, layer, r.template, r.subject)[1].double()
        y = x / torch.sqrt(x.pow(2).mean() + eps) * (1 + w)
        a_, b_ = (y + R[:, j]) / g, y / g**3
        roots = np.roots([float(b_.pow(2).mean()), -2 * float((a_ * b_).mean()), float(a_.pow(2).mean()) - 1])
        t = float(min(roots.real, key=abs))
        u = a_ - t * b_
        cols.append(u * torch.sqrt(x.pow(2).mean()) / torch.sqrt(u.pow(2).mean()) - x)
    return torch.stack(cols, 1)


def _k_star(model, adapter, layer, req, templates):
    keys = [_module_io(model, adapter, layer, t[:-2] + req.template, req.subject)[0] for t in templates]
    return torch.stack(keys).mean(0)


@pytest.fixture(params=TINY_NAMES)
def model64(request):
    model, tok = load_model(request.param, dtype=torch.float64)
    model.tok = tok
    return model, tok


def _apply_into(adapter):
    def apply(layer, U, V):
        with torch.no_grad():
            adapter.down_weight(layer).add_(U.to(torch.float64) @ V.to(torch.float64).T)

    return apply


@pytest.mark.parametrize("method", ["rome", "r-rome"])
def test_rome_family_matches_formula(model64, method):
    model, tok = model64
    a = get_adapter(model)
    layer = 1
    cfg = (ROMEConfig if method == "rome" else RROMEConfig)(layers=[layer], **FAST)
    C = _spd(a.d_ff, 0)
    templates = context_templates(model, tok, cfg.context_template_length_params)
    W0 = a.down_weight(layer).detach().clone()
    b = a.down_bias(layer)
    traces = run_method(method, model, tok, REQUESTS, cfg, {layer: C}, _apply_into(a), progress=False)
    total = torch.zeros_like(W0)
    for req, tr in zip(REQUESTS, traces):
        # keys on the unedited weights: recompute them on a copy holding W0
        with torch.no_grad():
            W_now = a.down_weight(layer).detach().clone()
            a.down_weight(layer).copy_(W0)
        k_star = _k_star(model, a, layer, req, templates)
        k_bare, _ = _module_io(model, a, layer, req.template, req.subject)
        with torch.no_grad():
            a.down_weight(layer).copy_(W_now)
        assert _rel(tr.extras["k_star"], k_star) < 1e-9
        k = k_bare if method == "rome" else k_star
        u = torch.linalg.solve(C, k_star)
        out = W0 @ k + (0 if b is None else b.detach())
        lam = (tr.extras["v_star"] - out) / (u @ k)
        ref = torch.outer(lam, u)
        got = tr.extras["U"] @ tr.extras["V"].T
        assert _rel(got, ref) < REL, method
        total += ref
    # all updates were computed on W0 and applied together (one call = batch semantics)
    assert _rel(a.down_weight(layer).detach() - W0, total) < REL


@pytest.mark.parametrize("method", ["memit", "emmet"])
def test_mass_editors_match_formula(model64, method):
    model, tok = model64
    a = get_adapter(model)
    layers = [1, 2]
    lam = 5.0
    cls = MEMITConfig if method == "memit" else EMMETConfig
    extra = dict(emmet_lambda=0.1, update_norm_lambda=0.5) if method == "emmet" else dict(update_norm_lambda=0.3)
    cfg = cls(layers=layers, mom2_update_weight=lam, **FAST, **extra)
    Cs = {l: _spd(a.d_ff, l) for l in layers}
    templates = context_templates(model, tok, cfg.context_template_length_params)
    W0 = {l: a.down_weight(l).detach().clone() for l in layers}
    traces = run_method(method, model, tok, REQUESTS, cfg, Cs, _apply_into(a), progress=False)
    got_updates = traces[0].extras["layer_updates"]
    assert traces[0].extras["targets_seconds"] > 0  # the time split edit_quality.py reports
    Z = torch.stack([tr.extras["z"] for tr in traces])  # (n, d)
    # replay on the original weights with the plain formula, layer by layer
    with torch.no_grad():
        W_after = {l: a.down_weight(l).detach().clone() for l in layers}
        for l in layers:
            a.down_weight(l).copy_(W0[l])
    n = len(REQUESTS)
    for i, l in enumerate(layers):
        K = torch.stack([_k_star(model, a, l, r, templates) for r in REQUESTS]).T  # (m, n)
        H = torch.stack(
            [_module_io(model, a, layers[-1], r.template, r.subject, site="out")[1] for r in REQUESTS]
        )
        R = (Z - H).T / (len(layers) - i)
        if a.post_mlp_norm(l) is not None:  # Gemma: R is asked of the residual, after the post-MLP RMSNorm
            R = _through_gemma_norm(a.post_mlp_norm(l), model, a, l, R)
        if method == "memit":
            ref = R @ K.T @ torch.linalg.inv(lam * Cs[l] + 0.3 * torch.eye(a.d_ff, dtype=torch.float64) + K @ K.T)
        else:
            C0 = lam * Cs[l] + 0.5 * torch.eye(a.d_ff, dtype=torch.float64)
            D = K.T @ torch.linalg.inv(C0) @ K + 0.1 * torch.eye(n, dtype=torch.float64)
            ref = R @ torch.linalg.inv(D) @ K.T @ torch.linalg.inv(C0)
        U, V = got_updates[l]
        assert _rel(U @ V.T, ref) < REL, (method, l)
        with torch.no_grad():
            a.down_weight(l).add_(ref)
    for l in layers:
        assert _rel(W_after[l] - W0[l], a.down_weight(l).detach() - W0[l]) < REL


def test_fast_and_full_target_optimisation_agree(tiny):
    """The prefix-reuse path (KV cache + top layers only) gives the same v* and z as
    recomputing every token of every layer at every step."""
    from golden_fast.edit.values import optimise_targets

    name, model, tok = tiny
    templates = ["{}", "The capital is. {}", "I think that the world is big. {}"]
    for site, cfg in [
        ("mlp.down.out", ROMEConfig(v_num_grad_steps=6)),
        ("out", MEMITConfig(v_num_grad_steps=6)),
    ]:
        fast = optimise_targets(model, tok, REQUESTS, 1, site, templates, cfg, prefix_reuse=True)
        full = optimise_targets(model, tok, REQUESTS, 1, site, templates, cfg, prefix_reuse=False)
        torch.testing.assert_close(fast.init, full.init, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast.delta, full.delta, rtol=1e-4, atol=1e-5)
        for c1, c2 in zip(fast.loss_curves, full.loss_curves):
            assert len(c1) == len(c2)
            torch.testing.assert_close(torch.tensor(c1), torch.tensor(c2), rtol=1e-4, atol=1e-5)
        for res in (fast, full):  # the time breakdown bench_edit.py reports
            assert res.setup_seconds > 0 and res.loop_seconds > 0


def test_target_optimisation_lowers_nll():
    """With no decay or KL, the optimisation must drive the target NLL down (a random tiny
    model's logits barely move, hence the small margin; a sign error would raise the NLL)."""
    from golden_fast.edit.values import optimise_targets

    model, tok = load_model("tiny-llama")
    cfg = ROMEConfig(
        v_num_grad_steps=15, v_weight_decay=0.0, kl_factor=0.0, clamp_norm_factor=100.0, v_lr=0.5
    )
    res = optimise_targets(model, tok, REQUESTS, 2, "mlp.down.out", ["{}"], cfg)
    for curve in res.loss_curves:
        assert all(b <= a + 1e-6 for a, b in zip(curve, curve[1:]))
        assert curve[-1] < curve[0] - 0.02


@pytest.mark.parametrize("prefix_reuse", [True, False])
def test_batched_targets_with_early_stop_equal_separate_loops(tiny, prefix_reuse):
    """Requests that reach the stopping NLL are dropped from the batch (compaction); the batched
    loop must still equal one loop per request: same deltas, same loss curves, same step counts."""
    import dataclasses

    from golden_fast.edit.values import optimise_targets

    name, model, tok = tiny
    templates = ["{}", "The capital is. {}"]
    probe = ROMEConfig(v_num_grad_steps=12, v_weight_decay=0.0, kl_factor=0.0, nll_stop=0.0, v_lr=0.5)
    curve = optimise_targets(model, tok, REQUESTS[:1], 1, "mlp.down.out", templates, probe,
                             prefix_reuse=prefix_reuse).loss_curves[0]
    assert curve[4] < curve[3], "the probe's NLL must fall for the stop to land mid-run"
    stop = (curve[3] + curve[4]) / 2  # request 0 stops after a few steps, the others whenever their NLL says
    exercised = False
    for kl in (0.0, 0.5):
        cfg = dataclasses.replace(probe, nll_stop=stop, kl_factor=kl)
        batch = optimise_targets(model, tok, REQUESTS, 1, "mlp.down.out", templates, cfg, prefix_reuse=prefix_reuse)
        for i, req in enumerate(REQUESTS):
            one = optimise_targets(model, tok, [req], 1, "mlp.down.out", templates, cfg, prefix_reuse=prefix_reuse)
            assert len(batch.loss_curves[i]) == len(one.loss_curves[0])
            torch.testing.assert_close(batch.delta[i], one.delta[0], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(torch.tensor(batch.loss_curves[i]), torch.tensor(one.loss_curves[0]),
                                       rtol=1e-4, atol=1e-6)
        exercised |= len({len(c) for c in batch.loss_curves}) > 1
    assert exercised, "no request stopped before another: the compaction path did not run"


def test_emmet_with_ridge_equals_memit_at_scaled_lambda(model64):
    """EMMET's Delta = R (K^T C0^-1 K + eps I)^-1 K^T C0^-1 with C0 = lam C equals, by the push-through
    identity, MEMIT's R K^T (eps lam C + K K^T)^-1: the same weights after both (what the smollm2
    lambda sweep shows to the last digit)."""
    model, tok = model64
    a = get_adapter(model)
    layers = [1, 2]
    lam, eps = 40.0, 0.1
    Cs = {l: _spd(a.d_ff, l) for l in layers}
    W0 = {l: a.down_weight(l).detach().clone() for l in layers}
    after = {}
    for method, cfg in (("emmet", EMMETConfig(layers=layers, mom2_update_weight=lam, emmet_lambda=eps, **FAST)),
                        ("memit", MEMITConfig(layers=layers, mom2_update_weight=eps * lam, **FAST))):
        run_method(method, model, tok, REQUESTS, cfg, Cs, _apply_into(a), progress=False)
        after[method] = {l: a.down_weight(l).detach().clone() for l in layers}
        with torch.no_grad():
            for l in layers:
                a.down_weight(l).copy_(W0[l])
    for l in layers:
        assert _rel(after["emmet"][l] - W0[l], after["memit"][l] - W0[l]) < 1e-8


def test_through_post_norm_makes_the_reachable_part_of_r():
    """Through Gemma's post-MLP norm, the mapped change moves the norm's output by R less its component
    along the surface normal (unreachable: the norm ignores x's scale), to first order; adding R to the
    output, as before, does not."""
    from golden_fast.edit.methods.memit import through_post_norm

    model, _ = load_model("tiny-gemma3")
    norm = get_adapter(model).post_mlp_norm(1)
    assert norm is not None and get_adapter(load_model("tiny-llama")[0]).post_mlp_norm(1) is None
    norm = copy.deepcopy(norm).double()  # the mapping, not float32 rounding, is what is measured
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(3, norm.weight.shape[0], generator=gen, dtype=torch.float64)
    with torch.no_grad():
        Y = norm(X)
        g = norm(torch.ones(1, X.shape[1], dtype=torch.float64))[0]
    nu = Y / g**2
    nu = nu / nu.norm(dim=1, keepdim=True)
    R0 = torch.randn(X.shape, generator=gen, dtype=torch.float64)
    R0 = R0 * Y.norm(dim=1, keepdim=True) / X.shape[1] ** 0.5  # |R0| about |Y|
    errs = {}
    for scale in (1e-3, 0.1):
        R = R0 * scale
        reachable = R - (R * nu).sum(1, keepdim=True) * nu
        dX = through_post_norm(norm, X, R)
        with torch.no_grad():
            got = norm(X + dX) - Y
            naive = norm(X + R) - Y  # what adding R to the output did before
        errs[scale] = (got - reachable).norm(dim=1) / R.norm(dim=1)
        assert (errs[scale] < (naive - reachable).norm(dim=1) / R.norm(dim=1)).all()
    # a zero gain (gemma3-270m's norms have some): that coordinate is unreachable, the rest is still made
    with torch.no_grad():
        norm.weight[0] = -1.0  # Gemma's gain is 1 + w
    R = R0 * 1e-3
    R[:, 0] = 0
    with torch.no_grad():
        Y0, g0 = norm(X), norm(torch.ones(1, X.shape[1], dtype=torch.float64))[0]
        got = norm(X + through_post_norm(norm, X, R)) - Y0
    nu0 = torch.where(g0.abs() > 0, Y0 / torch.where(g0.abs() > 0, g0, torch.ones_like(g0)) ** 2, torch.zeros_like(Y0))
    nu0 = nu0 / nu0.norm(dim=1, keepdim=True)
    assert float(got[:, 0].abs().max()) == 0.0
    assert _rel(got, R - (R * nu0).sum(1, keepdim=True) * nu0) < 0.01
    # first order: a small R is made to within 1% of its length (the norm's eps limits this, not the
    # mapping); R a tenth of N(X) to within 10% (the curvature of the norm's surface)
    assert (errs[1e-3] < 0.01).all() and (errs[0.1] < 0.1).all(), errs


def test_alphaedit_matches_formula_over_two_lifelong_batches(model64):
    """AlphaEdit: ΔW = R Kᵀ P (Kp Kpᵀ P + K Kᵀ P + α I)⁻¹ per layer, P onto C's eigenvectors with
    eigenvalue <= t x the largest, Kp the keys of the earlier batch recomputed on the edited model.
    Two batches through one state: the second must see the first's preserved keys."""
    from golden_fast.edit.methods.alphaedit import AlphaEditConfig, preserved_key

    model, tok = model64
    a = get_adapter(model)
    layers = [1, 2]
    alpha, t = 2.0, 0.5
    cfg = AlphaEditConfig(layers=layers, nullspace_rel_threshold=t, L2=alpha, **FAST)
    Cs = {l: _spd(a.d_ff, l) for l in layers}
    templates = context_templates(model, tok, cfg.context_template_length_params)
    batches = [REQUESTS[:2], REQUESTS[2:]]
    W0 = {l: a.down_weight(l).detach().clone() for l in layers}
    state: dict = {}
    got = []
    for batch in batches:
        traces = run_method("alphaedit", model, tok, batch, cfg, Cs, _apply_into(a), progress=False, state=state)
        got.append((traces[0].extras["layer_updates"], torch.stack([tr.extras["z"] for tr in traces])))
        assert set(state) == {preserved_key(l) for l in layers}
    W_after = {l: a.down_weight(l).detach().clone() for l in layers}
    # replay from W0 with the plain formula
    with torch.no_grad():
        for l in layers:
            a.down_weight(l).copy_(W0[l])
    P = {}
    for l in layers:
        ev, Q = torch.linalg.eigh(Cs[l])
        Q0 = Q[:, ev <= t * ev.max()]
        assert 0 < Q0.shape[1] < a.d_ff, "the threshold must leave a proper null space for the test to mean much"
        P[l] = Q0 @ Q0.T
    Kp = {l: torch.zeros(a.d_ff, a.d_ff, dtype=torch.float64) for l in layers}
    eye = torch.eye(a.d_ff, dtype=torch.float64)
    for (updates, Z), batch in zip(got, batches):
        for i, l in enumerate(layers):
            K = torch.stack([_k_star(model, a, l, r, templates) for r in batch]).T  # (m, n)
            H = torch.stack([_module_io(model, a, layers[-1], r.template, r.subject, site="out")[1] for r in batch])
            R = (Z - H).T / (len(layers) - i)
            if a.post_mlp_norm(l) is not None:  # Gemma: the residual change through the post-MLP norm
                R = _through_gemma_norm_for(a.post_mlp_norm(l), model, a, l, R, batch)
            ref = R @ K.T @ P[l] @ torch.linalg.inv(Kp[l] @ P[l] + K @ K.T @ P[l] + alpha * eye)
            U, V = updates[l]
            assert _rel(U @ V.T, ref) < REL, l
            with torch.no_grad():
                a.down_weight(l).add_(ref)
        for l in layers:  # the batch's keys on the edited model are preserved from now on
            K = torch.stack([_k_star(model, a, l, r, templates) for r in batch]).T
            Kp[l] = Kp[l] + K @ K.T
    for l in layers:
        assert _rel(W_after[l] - W0[l], a.down_weight(l).detach() - W0[l]) < REL
        assert _rel(state[preserved_key(l)], Kp[l]) < REL


def test_alphaedit_update_leaves_the_null_space_complement_alone(model64):
    """ΔW P⊥ = 0: keys in the span of C's large eigenvectors (the preserved knowledge) see no change."""
    from golden_fast.edit.methods.alphaedit import AlphaEditConfig

    model, tok = model64
    a = get_adapter(model)
    cfg = AlphaEditConfig(layers=[1], nullspace_rel_threshold=0.5, L2=1.0, **FAST)
    C = _spd(a.d_ff, 7)
    W0 = a.down_weight(1).detach().clone()
    run_method("alphaedit", model, tok, REQUESTS, cfg, {1: C}, _apply_into(a), progress=False, state={})
    dW = a.down_weight(1).detach() - W0
    ev, Q = torch.linalg.eigh(C)
    Q1 = Q[:, ev > 0.5 * ev.max()]  # the preserved directions
    assert float(dW.norm()) > 0
    assert float((dW @ Q1).norm()) < 1e-9 * float(dW.norm())
