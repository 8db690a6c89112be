"""Perplexity against a plain full-vocabulary log-softmax, and the WikiText detokeniser."""

from __future__ import annotations

import math

import pytest
import torch

from golden_fast.data.wikitext import detokenize, wikitext_paragraphs
from golden_fast.evaluate.perplexity import perplexity
from golden_fast.models import TINY_NAMES, load_model

TEXT = ("The quick brown fox jumps over the lazy dog. " * 12).strip()


def _plain(model, tok, text, window):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    bos = tok.bos_token_id
    adds_bos = bos is not None and tok("a")["input_ids"][:1] == [bos]
    step = window - 1 if adds_bos else window
    nll, n = 0.0, 0
    for i in range(len(ids) // step):
        row = ([bos] if adds_bos else []) + ids[i * step:(i + 1) * step]
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([row])).logits[0].double().log_softmax(-1)
        for t in range(1, len(row)):
            nll -= float(logp[t - 1, row[t]])
            n += 1
    return nll / n, n


@pytest.mark.parametrize("name", TINY_NAMES)
def test_perplexity_matches_full_log_softmax(name):
    model, tok = load_model(name)
    res = perplexity(model, tok, TEXT, window=16, max_tokens=None, batch_size=3, progress=False)
    nll, n = _plain(model, tok, TEXT, 16)
    assert res.tokens == n and res.windows * 15 == n
    assert abs(res.nll - nll) < 1e-5 * max(1.0, abs(nll))
    assert math.isclose(res.perplexity, math.exp(res.nll))
    assert res.settings["window"] == 16


def test_perplexity_rejects_bad_settings():
    model, tok = load_model("tiny-llama")
    with pytest.raises(ValueError, match="window"):
        perplexity(model, tok, TEXT, window=1)
    with pytest.raises(ValueError, match="fewer than one window"):
        perplexity(model, tok, "a b", window=64, max_tokens=None, progress=False)


def test_detokenize_undoes_the_release_markers():
    line = ' The 1 @,@ 000 @-@ year @-@ old tree , " tall " ( 12 @.@ 5 m ) , isn \'t it ? '
    assert detokenize(line) == 'The 1,000-year-old tree, "tall" (12.5 m), isn\'t it?'


def test_wikitext_paragraphs_drop_headings(tmp_path):
    f = tmp_path / "w.txt"
    f.write_text(" \n = Title = \n \n Some text , here . \n \n = = Section = = \n More @-@ text . \n")
    assert list(wikitext_paragraphs(f)) == ["Some text, here.", "More-text."]
    assert list(wikitext_paragraphs(f, keep_headings=True))[0] == "Title"
