"""Second moments on SmolLM2-135M (30 layers, m = 1536): a few layers over a few hundred tokens.

The one early-stopped pass equals one full pass per layer (the anchors' route); the cache and the
model-sampled fallback work on a real model and tokenizer.
"""

from __future__ import annotations

import json

import pytest
import torch

from golden_fast.stats import StatsConfig, per_layer_second_moments, second_moments

TEXTS = [
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
    "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.",
    "Danielle Darrieux was a French actress of stage, television and film, as well as a singer and dancer.",
    "Toko Yasuda is a Japanese-American musician who plays the guitar and sings.",
    "The official language of Italy is Italian. Rome is the capital city of Italy.",
    "Python is a high-level, general-purpose programming language. Its design philosophy emphasizes "
    "code readability with the use of significant indentation.",
    "What is the capital of Japan? The capital of Japan is Tokyo, one of the largest cities in the world.",
]
LAYERS = [0, 14, 29]


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "texts.jsonl"
    p.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return str(p)


def test_one_pass_equals_per_layer_on_smollm2(smollm2, corpus, tmp_path, monkeypatch):
    model, tok = smollm2  # loaded before GOLDEN_FAST_HOME moves: the model stays in the real cache
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))
    cfg = StatsConfig(corpus=corpus, n_samples=len(TEXTS), batch_tokens=128)
    one = second_moments(model, tok, LAYERS, cfg, progress=False)
    per = per_layer_second_moments(model, tok, LAYERS, cfg, progress=False)
    n_tokens = sum(len(tok(t)["input_ids"]) for t in TEXTS)
    for layer in LAYERS:
        s = one[layer]
        assert s.sum.shape == (1536, 1536) and s.count == per[layer].count == n_tokens
        torch.testing.assert_close(s.sum, per[layer].sum, rtol=1e-6, atol=1e-6)
    c = one[14].conditioning()  # fewer tokens than m: singular, reported as such, never NaN
    assert c.max_eig > 0 and c.rank <= n_tokens and c.singular
    again = second_moments(model, tok, LAYERS, cfg, progress=False)
    assert all(again[layer].from_cache and torch.equal(again[layer].sum, one[layer].sum) for layer in LAYERS)


def test_model_sampled_fallback_on_smollm2(smollm2, tmp_path, monkeypatch):
    model, tok = smollm2
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))
    cfg = StatsConfig(corpus="model-sampled", n_samples=16, sample_length=12, batch_tokens=512)
    s = second_moments(model, tok, [3], cfg, progress=False)[3]
    assert s.n_texts == 16 and s.count >= 16 * 2  # at least a prefix and one sampled token each
    assert torch.isfinite(s.mean()).all()
    assert list((tmp_path / "home" / "corpora").rglob("sampled-*.jsonl"))
