"""The second-moment pass (golden_fast.stats; FORMULAS.md, section Second-moment statistics C_l):
every requested layer in ONE forward pass that stops after the deepest one, against the anchors'
route (ROME's layer_stats, MEMIT, EasyEdit): one full forward pass per layer, logits included
(`per_layer_second_moments`). Same model, texts and batches for both, so the ratio is the single
pass's gain alone. The one pass is timed with the automatic mom2 backend (panels on the CPU) and
with the torch reference.

The real SmolLM2-135M (float32; the statistics need the real activations only for realism, the costs
are the architecture's), a small corpus written from golden-fast's built-in facts (offline,
deterministic), two layer sets: MEMIT's preset layers 4-8 (4 texts of 32 tokens) and all 30 layers
(2 texts of 32 tokens: the per-layer route makes 30 full passes per round). bench/bench_stats.py runs
the same comparison at corpus scale (16 x 128 tokens, 30 layers: minutes).

Correctness before timing: the one-pass sums of the first, middle and last layer equal the
per-layer sums (same token counts, max relative error <= 1e-5).

    pytest bench/test_bench_stats.py --benchmark-enable
"""

from __future__ import annotations

import pytest
from conftest import measure

from golden_fast.data import builtin_facts
from golden_fast.ops import get_op, use_backend
from golden_fast.stats import StatsConfig, per_layer_second_moments, second_moments
from golden_fast.tokens import fill

MAX_LENGTH = 32
CASES = {  # name -> (layers, texts)
    "memit-layers-4-8": (list(range(4, 9)), 4),
    "all-30-layers": (list(range(30)), 2),
}
ROUTES = ("per_layer", "one_pass_torch", "one_pass")  # the baseline first


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Paragraphs of six built-in facts each ("The capital of France is Paris. ..."): > 32 tokens."""
    facts = [f"{fill(r.prompt, r.subject)[0]} {r.ground_truth}." for r in builtin_facts() if r.ground_truth]
    paragraphs = [" ".join(facts[i : i + 6]) for i in range(0, len(facts) - 5, 6)]
    path = tmp_path_factory.mktemp("corpus") / "facts.txt"
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return path


def config(corpus, texts: int) -> StatsConfig:
    return StatsConfig(corpus=str(corpus), n_samples=texts, max_length=MAX_LENGTH, cache=False, checkpoint_every=0)


def max_rel_err(a: dict, b: dict) -> tuple[float, bool]:
    """(max over layers of max|a - b| / max|b|, token counts all equal)."""
    err, same = 0.0, True
    for layer in b:
        scale = b[layer].sum.abs().max().item() or 1.0
        err = max(err, (a[layer].sum.double() - b[layer].sum.double()).abs().max().item() / scale)
        same &= a[layer].count == b[layer].count
    return err, same


@pytest.fixture(scope="module")
def checked(smollm2, corpus):
    model, tok = smollm2
    out = {}
    for case, (layers, texts) in CASES.items():
        cfg = config(corpus, texts)
        one = second_moments(model, tok, layers, cfg, progress=False)
        # first, middle and last layer: a full pass each (all 30 would take as long as a timed round)
        check = sorted({layers[0], layers[len(layers) // 2], layers[-1]})
        per = per_layer_second_moments(model, tok, check, cfg, progress=False)
        err, same = max_rel_err({layer: one[layer] for layer in check}, per)
        assert same and err <= 1e-5, f"{case}: one pass != per-layer passes (counts equal {same}, err {err:.2e})"
        out[case] = (err, one[layers[0]].count)
    return out


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", list(CASES))
def test_stats(benchmark, smollm2, corpus, checked, case, route):
    model, tok = smollm2
    layers, texts = CASES[case]
    err, tokens = checked[case]
    cfg = config(corpus, texts)
    benchmark.group = f"statistics: SmolLM2-135M, {case}, {texts} texts / {tokens} tokens, float32"
    auto = get_op("mom2_update").choose("cpu")
    if route == "per_layer":
        fn = lambda: per_layer_second_moments(model, tok, layers, cfg, progress=False)  # noqa: E731
        label = f"one full pass per layer, logits included ({len(layers)} passes; mom2 {auto})"
    else:
        backend = "torch" if route == "one_pass_torch" else auto

        def fn():
            with use_backend(backend):
                second_moments(model, tok, layers, cfg, progress=False)

        label = f"one pass, stops after layer {max(layers)} (mom2 {backend})"
    many_passes = route == "per_layer" and len(layers) > 10  # ~10 s per call on one loaded core
    measure(
        benchmark,
        fn,
        role="baseline" if route == "per_layer" else "candidate",
        rounds=2 if many_passes else 3,
        warmup=0 if many_passes else 1,
        candidate=label,
        layers=f"{layers[0]}-{layers[-1]}",
        tokens=tokens,
        max_rel_err_one_vs_per_layer=err,
    )
