"""Fluency: n-gram entropy of sampled continuations (ROME's "GE", EasyEdit's "fluency").

Per text, with H_n the entropy in bits of the frequency distribution of its word
n-grams (ROME's `compute_n_gram_entropy`; FORMULAS.md, section "Fluency"):

    fluency(text) = (2/3 * H_2 + 4/3 * H_3) / 2

Words come from a regular expression (`word_tokenize`), not nltk's Treebank tokenizer,
which needs a download: runs of word characters, and every other non-space character
on its own. It splits "don't" as "don", "'", "t" where Treebank gives "do", "n't";
on generated prose the two rarely differ by more than a few n-grams.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import torch

from golden_fast.models.placement import execution_device
from golden_fast.tokens import encode_texts, pad_id

__all__ = ["generate_samples", "ngram_entropy", "word_tokenize"]

_WORD = re.compile(r"\w+|[^\w\s]")


def word_tokenize(text: str) -> list[str]:
    """Words and punctuation marks of `text` (see the module docstring)."""
    return _WORD.findall(text)


def _entropy_bits(counts: Counter) -> float:
    total = sum(counts.values())
    if total == 0:  # fewer words than n: no n-grams, entropy 0 (numpy's sum over nothing)
        return 0.0
    return -sum(c / total * math.log2(c / total) for c in counts.values())


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """Weighted mean of n-gram entropies (bits) of one text: mean_i(weights[i] * H_{ns[i]}).

    The defaults give ROME's (2/3 H2 + 4/3 H3) / 2. Not x100: the anchors print x100.
    """
    if len(ns) != len(weights) or not ns:
        raise ValueError("ns and weights must be non-empty and of the same length")
    words = word_tokenize(text)
    terms = []
    for n, w in zip(ns, weights):
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        terms.append(w * _entropy_bits(grams))
    return sum(terms) / len(terms)


@torch.no_grad()
def generate_samples(
    model: torch.nn.Module,
    tok,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 100,
    top_k: int = 5,
    seed: int = 0,
    batch_size: int = 16,
) -> list[str]:
    """Sample `max_new_tokens` tokens per prompt, top-k, seeded; return the decoded prompt + sample.

    Batched with left padding (generate derives position ids from the attention mask).
    End-of-sequence is suppressed until `max_new_tokens` (min_new_tokens), so every
    sample has the same length, as ROME's sampler (which ignores EOS) does. The global
    RNG state is left untouched; samples depend on the seed and on the batch layout.
    """
    texts: list[str] = []
    device = execution_device(model)
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(seed)
        for lo in range(0, len(prompts), batch_size):
            chunk = list(prompts[lo : lo + batch_size])
            batch = encode_texts(tok, chunk).to(device)
            out = model.generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                do_sample=True,
                top_k=top_k,
                top_p=1.0,
                temperature=1.0,
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,
                pad_token_id=pad_id(tok),
            )
            # decode prompt and continuation together (as ROME does): decoding the
            # continuation alone drops SentencePiece's leading space
            for b, off in enumerate(batch.offsets):
                texts.append(tok.decode(out[b, off:], skip_special_tokens=True))
    return texts
