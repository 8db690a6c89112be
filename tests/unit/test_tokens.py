"""Subject-last-token and target spans, exact for every tokenizer family (hand-made cases).

Expected tokens are written out by hand per family: a change of tokenisation logic that
shifts an index by one fails here."""

from __future__ import annotations

import pytest
import torch

from golden_fast.models import load_model
from golden_fast.tokens import SubjectNotFoundError, encode_batch, fill, subject_last_token, target_span

# (prompt, subject) -> expected last subject token (as the tokenizer spells it) and index
CASES = {
    "tiny-gpt2": [
        ("{} is located in", "Eiffel Tower", "ĠTower", 3),  # subject at the start, no BOS
        ("The mother tongue of {} is", "Danielle Darrieux", "arrieux", 6),
        ("Paris and Paris again", "Paris", "ĠParis", 4),  # twice: the last occurrence
        ("{}'s capital is", "France", "ance", 1),  # subject glued to punctuation
        ("The A5 of {} was", "Apple A5", "5", 6),  # subject ends like an earlier word
    ],
    "tiny-llama": [
        ("{} is located in", "Eiffel Tower", "▁Tower", 2),  # BOS shifts by one
        ("The mother tongue of {} is", "Danielle Darrieux", "▁Darrieux", 6),
        ("Paris and Paris again", "Paris", "▁Paris", 4),
        ("{}'s capital is", "France", "▁France", 1),
        ("The A5 of {} was", "Apple A5", "▁A5", 5),
    ],
    "tiny-gemma3": [
        ("{} is located in", "Eiffel Tower", "▁Tower", 4),
        ("The mother tongue of {} is", "Danielle Darrieux", "arrieux", 7),
        ("Paris and Paris again", "Paris", "▁Paris", 5),
        ("{}'s capital is", "France", "ance", 2),
        ("The A5 of {} was", "Apple A5", "▁A5", 5),
    ],
}

REAL_CASES = {
    "smollm2-135m": [
        ("{} is located in", "Eiffel Tower", "ĠTower", 2),
        ("The mother tongue of {} is", "Danielle Darrieux", "ux", 8),
        ("Paris and Paris again", "Paris", "ĠParis", 2),
        ("{}'s capital is", "France", "France", 0),
        ("The A5 of {} was", "Apple A5", "5", 6),
    ],
    "gemma3-270m": [
        ("{} is located in", "Eiffel Tower", "▁Tower", 3),
        ("The mother tongue of {} is", "Danielle Darrieux", "ux", 8),
        ("Paris and Paris again", "Paris", "▁Paris", 3),
        ("{}'s capital is", "France", "France", 1),
        ("The A5 of {} was", "Apple A5", "5", 7),
    ],
}


def _check(tok, prompt, subject, token, index):
    ids, idx = subject_last_token(tok, prompt, subject)
    assert idx == index, (prompt, subject, tok.convert_ids_to_tokens(ids))
    assert tok.convert_ids_to_tokens(ids[idx]) == token
    text, _ = fill(prompt, subject)
    assert ids == tok(text)["input_ids"]  # the ids are those the model sees


@pytest.mark.parametrize("name", list(CASES))
def test_subject_last_token_tiny(name):
    _, tok = load_model(name)
    for case in CASES[name]:
        _check(tok, *case)


@pytest.mark.integration
@pytest.mark.parametrize("name", list(REAL_CASES))
def test_subject_last_token_real_tokenizers(name):
    from transformers import AutoTokenizer

    from golden_fast.models import fetch

    tok = AutoTokenizer.from_pretrained(str(fetch(name)))
    for case in REAL_CASES[name]:
        _check(tok, *case)


def test_subject_missing_and_bad_templates():
    _, tok = load_model("tiny-llama")
    with pytest.raises(SubjectNotFoundError, match="Berlin"):
        subject_last_token(tok, "The capital of France is", "Berlin")
    with pytest.raises(ValueError, match="placeholders"):
        fill("{} and {}", "x")


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("target", ["Paris", "Rome, Italy", "1990", "-yes", "  Paris  "])
def test_target_span_is_the_suffix(name, target):
    _, tok = load_model(name)
    prompt = "The capital of France is"
    span = target_span(tok, prompt, target)
    full = tok(prompt + " " + target.strip())["input_ids"]
    assert span.ids == full
    prompt_ids = tok(prompt)["input_ids"]
    # the prompt's tokens are an exact prefix here, and the target is everything after them
    assert span.ids[: span.start] == prompt_ids
    assert tok.decode(span.target_ids).strip() == target.strip()


def test_target_span_rejects_empty():
    _, tok = load_model("tiny-gpt2")
    with pytest.raises(ValueError, match="empty target"):
        target_span(tok, "The capital is", "   ")


def test_encode_batch_left_pads_with_positions(tiny):
    _, model, tok = tiny
    seqs = [tok("The capital of France is")["input_ids"], tok("Rome")["input_ids"]]
    b = encode_batch(tok, seqs)
    T = max(map(len, seqs))
    assert b.input_ids.shape == (2, T)
    for row, s in enumerate(seqs):
        assert b.input_ids[row, b.offsets[row] :].tolist() == s
        assert b.attention_mask[row].tolist() == [0] * b.offsets[row] + [1] * len(s)
        assert b.position_ids[row, b.offsets[row] :].tolist() == list(range(len(s)))
    # padded scoring equals unpadded scoring
    with torch.no_grad():
        logits = model(**b.model_inputs()).logits
        for row, s in enumerate(seqs):
            alone = model(input_ids=torch.tensor([s])).logits[0]
            torch.testing.assert_close(logits[row, b.offsets[row] :], alone, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        encode_batch(tok, [])
