"""Fluency: n-gram entropy against a hand computation, the word tokenizer, seeded sampling."""

from __future__ import annotations

import math

import pytest

from golden_fast.data import EditRequest
from golden_fast.evaluate import evaluate, generate_samples, ngram_entropy, word_tokenize


def test_ngram_entropy_by_hand():
    text = "the cat sat on the mat. the cat sat"
    # words: the cat sat on the mat . the cat sat  (10)
    # bigrams (9): (the,cat) x2, (cat,sat) x2, then 5 singletons
    h2 = 2 * (2 / 9) * math.log2(9 / 2) + 5 * (1 / 9) * math.log2(9)
    # trigrams (8): (the,cat,sat) x2, then 6 singletons
    h3 = (2 / 8) * math.log2(8 / 2) + 6 * (1 / 8) * math.log2(8)
    assert h3 == pytest.approx(2.75)
    assert ngram_entropy(text) == pytest.approx((2 / 3 * h2 + 4 / 3 * h3) / 2, abs=1e-12)


def test_ngram_entropy_degenerate_texts():
    assert ngram_entropy("") == 0.0
    assert ngram_entropy("one") == 0.0  # no bigram, no trigram
    # two words: one bigram (entropy 0), no trigram
    assert ngram_entropy("two words") == 0.0
    # a repeated word: every n-gram identical, entropy 0 however long
    assert ngram_entropy("la " * 50) == 0.0


def test_word_tokenize_splits_punctuation():
    assert word_tokenize("Hello, world! It's 3.5 km.") == [
        "Hello",
        ",",
        "world",
        "!",
        "It",
        "'",
        "s",
        "3",
        ".",
        "5",
        "km",
        ".",
    ]


def test_samples_are_seeded_and_full_length(tiny, monkeypatch):
    _, model, tok = tiny
    prompts = ["The capital of France is", "A"]
    a = generate_samples(model, tok, prompts, max_new_tokens=12, seed=1)
    b = generate_samples(model, tok, prompts, max_new_tokens=12, seed=1)
    c = generate_samples(model, tok, prompts, max_new_tokens=12, seed=2)
    assert a == b and a != c
    # every decoded row is the unpadded prompt plus exactly 12 tokens (EOS suppressed until then)
    decoded = []
    real_decode = tok.decode
    monkeypatch.setattr(tok, "decode", lambda ids, **kw: decoded.append(len(ids)) or real_decode(ids, **kw))
    generate_samples(model, tok, prompts, max_new_tokens=12, seed=1)
    assert decoded == [len(tok(p)["input_ids"]) + 12 for p in prompts]


def test_fluency_rows_only_when_asked(tiny):
    _, model, tok = tiny
    reqs = [
        EditRequest("The capital of {} is", "France", "Rome", generation_prompts=("France is", "In France")),
        EditRequest("{} is", "Lyon", "Paris"),  # no generation prompts: the filled prompt is used
    ]
    assert "fluency" not in evaluate(model, tok, reqs).metrics
    rep = evaluate(model, tok, reqs, fluency=True, fluency_tokens=10, seed=4)
    texts = generate_samples(model, tok, ["France is", "In France", "Lyon is"], max_new_tokens=10, seed=4)
    assert rep.value(0, "fluency") == pytest.approx((ngram_entropy(texts[0]) + ngram_entropy(texts[1])) / 2)
    assert rep.value(1, "fluency") == pytest.approx(ngram_entropy(texts[2]))
    assert "fluency" in rep.conventions
    # fluency belongs to no single suite: ROME's generation entropy is the same measure
    cf = evaluate(model, tok, reqs, suites=("counterfact",), fluency=True, fluency_tokens=10, seed=4)
    assert cf.values("fluency") == rep.values("fluency")
