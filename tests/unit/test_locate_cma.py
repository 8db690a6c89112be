"""Causal tracing on tiny models of every family: cases where the outcome is known exactly, and an
independent re-implementation of ROME's `trace_with_patch` (clean row 0 copied into the noisy rows
inside one batch) that the batched, pre-computed restoration must agree with."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from golden_fast.data import EditRequest
from golden_fast.hooks import capture, edit_module_output, edit_site
from golden_fast.locate import locate
from golden_fast.locate.causal_trace import CMAConfig, _restored, _subject_range, plot_heatmap, trace_heatmap
from golden_fast.models import TINY_NAMES, build_tiny, get_adapter

FACTS = [
    ("The capital of {} is", "France", "Rome", "Paris"),
    ("{} plays the", "Toko Yasuda", "piano", "guitar"),
    ("The mother tongue of {} is", "Danielle Darrieux", "English", "French"),
]


def _requests():
    return [EditRequest(p, s, t, ground_truth=g, index=i) for i, (p, s, t, g) in enumerate(FACTS)]


@pytest.fixture(scope="module", params=TINY_NAMES)
def model_tok(request):
    model, tok = build_tiny(request.param)
    return request.param, model, tok


def test_restoring_the_only_noised_token_restores_the_clean_probability(model_tok):
    """A one-token subject at the end of the prompt: restoring its residual after any layer gives back
    exactly the clean computation (every other position is clean), so P_restored = P_clean everywhere,
    while the noise moves P_corrupted away from it."""
    _, model, tok = model_tok
    req = EditRequest("The capital city is {}", "France", "Rome", ground_truth="Paris")
    ids, b, e = _subject_range(tok, req)
    assert (b, e) == (len(ids) - 1, len(ids))  # the precondition of this case
    cfg = CMAConfig(kind="hidden", window=1, answer="greedy", noise_std=1.0, noise=3.0)
    s = locate(model, tok, [req], "cma", **{k: getattr(cfg, k) for k in ("kind", "window", "answer", "noise_std")})
    clean, corrupted = s.extra["p_clean"][0], s.extra["p_corrupted"][0]
    restored = np.asarray(s.extra["p_restored"][0])
    assert abs(corrupted - clean) > 1e-3 * clean
    assert np.allclose(restored, clean, rtol=1e-4)
    lo, hi = min(clean, corrupted), max(clean, corrupted)
    assert bool(((restored >= lo * (1 - 1e-4)) & (restored <= hi * (1 + 1e-4))).all())


def test_tokens_before_the_subject_restore_nothing(model_tok):
    """Noise enters at the subject; in a causal model the positions before it never see it, so
    restoring them changes nothing. The heatmap relies on this (it fills those cells with the
    corrupted probability without running them): check it on real runs of such cells."""
    _, model, tok = model_tok
    req = _requests()[2]
    adapter = get_adapter(model)
    cfg = CMAConfig(answer="greedy", window=3, noise_std=1.0)
    ids, b, e = _subject_range(tok, req)
    assert b >= 2
    site = [f"layers.{j}.mlp.out" for j in range(adapter.n_layers)]
    with capture(adapter, site) as cap:
        model(input_ids=torch.tensor([ids]))
    clean = {j: cap[s] for j, s in enumerate(site)}
    configs = [(t, [layer]) for t in range(b) for layer in range(adapter.n_layers)]  # every pre-subject cell
    configs += [(e - 1, [layer]) for layer in range(adapter.n_layers)]  # and the subject's last token
    low, probs = _restored(adapter, ids, (b, e), 0, configs, clean, cfg, 3.0)
    before = np.abs(probs[: -adapter.n_layers] - low).max()
    assert before <= 1e-5 * low  # float rounding of a different batch, nothing more
    # the subject's cells do restore something (random tiny models: a small effect, far above rounding)
    assert np.abs(probs[-adapter.n_layers :] - low).max() > 10 * max(before, 1e-12)
    tr = trace_heatmap(model, tok, req, cfg)
    assert tr.scores.shape == (len(ids), adapter.n_layers) and bool((tr.scores[:b] == tr.low).all())


def test_zero_noise_has_no_effect():
    model, tok = build_tiny("tiny-llama")
    s = locate(model, tok, _requests(), "cma", answer="greedy", noise=0.0)
    assert np.allclose(s.extra["p_corrupted"], s.extra["p_clean"], rtol=1e-5)
    assert np.allclose(s.scores, 0.0, atol=1e-7)


def _rome_trace(model, tok, req, layer, cfg: CMAConfig, sigma: float) -> tuple[float, float]:
    """ROME's trace_with_patch for one layer: (P_restored, P_corrupted), averaged over the copies."""
    adapter = get_adapter(model)
    ids, b, e = _subject_range(tok, req)
    S, L = cfg.samples, adapter.n_layers
    g = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn(S, e - b, adapter.d_model, generator=g) * sigma
    x = torch.tensor([ids] * (S + 1))

    def corrupt(t):
        t = t.clone()
        t[1:, b:e] += noise
        return t

    def copy_clean(t):
        t = t.clone()
        t[1:, e - 1] = t[0, e - 1]
        return t

    window = range(max(0, layer - cfg.window // 2), min(L, layer - (-cfg.window // 2)))
    out = []
    for restore in (True, False):
        with torch.no_grad(), contextlib.ExitStack() as stack:
            stack.enter_context(edit_module_output(adapter.embeddings(), corrupt))
            if restore:
                for j in window:
                    stack.enter_context(edit_site(adapter, f"layers.{j}.mlp.out", copy_clean))
            logits = model(input_ids=x).logits[:, -1].float()
        answer = int(logits[0].argmax())
        out.append(float(logits[1:].softmax(-1)[:, answer].mean()))
    return out[0], out[1]


def test_matches_romes_trace_with_patch(model_tok):
    _, model, tok = model_tok
    reqs = _requests()
    cfg = CMAConfig(answer="greedy", window=2, samples=4, noise_std=0.5, batch_rows=6)  # chunks split layers
    s = locate(
        model,
        tok,
        reqs,
        "cma",
        **{k: getattr(cfg, k) for k in ("answer", "window", "samples", "noise_std", "batch_rows")},
    )
    sigma = cfg.noise * cfg.noise_std
    for i, req in enumerate(reqs):
        for j, layer in enumerate(s.layers):
            restored, corrupted = _rome_trace(model, tok, req, layer, cfg, sigma)
            assert s.extra["p_restored"][i][j] == pytest.approx(restored, rel=1e-4)
            assert s.extra["p_corrupted"][i] == pytest.approx(corrupted, rel=1e-4)
    ie = np.asarray(s.extra["p_restored"]) - np.asarray(s.extra["p_corrupted"])[:, None]
    assert np.allclose(s.scores, ie.mean(0))


def test_wrong_samples_are_skipped_and_counted():
    model, tok = build_tiny("tiny-gpt2")
    reqs = _requests()
    ids, _, _ = _subject_range(tok, reqs[0])
    top = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    assert tok.decode([top]) == " is"  # precondition: this tiny model "knows" request 0's answer
    reqs[0] = EditRequest(reqs[0].prompt, reqs[0].subject, "Rome", ground_truth="is", index=0)
    s = locate(model, tok, reqs, "cma", noise_std=1.0)
    assert s.n_used == 1 and s.extra["n_skipped"] == 2
    assert [x["ref"] for x in s.extra["skipped"]] == ["record 1", "record 2"]
    assert locate(model, tok, reqs, "cma", noise_std=1.0, skip_wrong=False).n_used == 3
    with pytest.raises(ValueError, match="all 2 request"):
        locate(model, tok, reqs[1:], "cma", noise_std=1.0)
    no_answer = EditRequest("{} plays the", "Toko Yasuda", "piano", case_id=5)
    with pytest.raises(ValueError, match=r"case_id 5.*'ground_truth'"):
        locate(model, tok, [no_answer], "cma")


def test_noise_scale_from_known_subjects():
    model, tok = build_tiny("tiny-llama")
    a = locate(model, tok, _requests()[:1], "cma", answer="greedy", noise_subjects=["France", "Paris"])
    emb = get_adapter(model).embeddings()
    with torch.no_grad():
        x = torch.cat(
            [emb(torch.tensor([tok(s, add_special_tokens=False)["input_ids"]]))[0] for s in ("France", "Paris")]
        )
    assert a.extra["sigma"] == pytest.approx(3 * float(x.std()), rel=1e-5)
    assert a.extra["noise_source"] == "given subjects"


def test_heatmap_png(tmp_path):
    model, tok = build_tiny("tiny-gemma3")
    tr = trace_heatmap(model, tok, _requests()[0], CMAConfig(answer="greedy", kind="attn", window=2))
    path = plot_heatmap(tr, tmp_path / "trace.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
