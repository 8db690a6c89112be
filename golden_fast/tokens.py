"""Tokenisation helpers that must be exact for every tokenizer family.

- `subject_last_token`: index of the subject's last token inside the tokenised prompt.
- `target_span`: token ids of `prompt + " " + target` and the span of the target tokens.
- `encode_batch`: left-padded batches with the position ids the model must be given.

All positions come from character offsets of ONE joint tokenisation of the whole text,
never from tokenising pieces separately: pieces can merge differently at their borders
(SentencePiece's "▁", byte-level BPE's "Ġ", Gemma's digit splitting), and a BOS token
shifts every index. Tokenizers without offsets fall back to prefix counting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch


class SubjectNotFoundError(ValueError):
    """The subject does not occur in the prompt (names the request when one is given)."""


def fill(prompt: str, subject: str) -> tuple[str, int]:
    """(text, char start of the subject) for a "{}" template or a literal prompt.

    A literal prompt that contains the subject several times: the LAST occurrence is the
    subject position (the one nearest the answer), matching EditRequest.template.
    """
    n = prompt.count("{}")
    if n > 1:
        raise ValueError(f"prompt {prompt!r} has {n} '{{}}' placeholders; expected one")
    if n == 1:
        start = prompt.index("{}")
        return prompt[:start] + subject + prompt[start + 2 :], start
    start = prompt.rfind(subject)
    if start < 0 or not subject:
        raise SubjectNotFoundError(f"subject {subject!r} does not occur in prompt {prompt!r}")
    return prompt, start


def _encode(tok, text: str, add_special_tokens: bool = True) -> tuple[list[int], list | None]:
    try:
        enc = tok(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, ValueError):  # slow tokenizers have no offsets
        enc = tok(text, add_special_tokens=add_special_tokens)
        return list(enc["input_ids"]), None


def _n_special_prefix(tok, add_special_tokens: bool) -> int:
    if not add_special_tokens:
        return 0
    ids = tok("", add_special_tokens=True)["input_ids"]
    return len(ids)


def _last_token_covering(offsets: list, special_mask: list[bool], end_char: int, start_char: int) -> int | None:
    """Last non-special token whose [start, end) overlaps [start_char, end_char)."""
    best = None
    for i, (a, b) in enumerate(offsets):
        if special_mask[i] or b <= a:
            continue
        if a < end_char and b > start_char:
            best = i
    return best


def subject_last_token(
    tok, prompt: str, subject: str, add_special_tokens: bool = True
) -> tuple[list[int], int]:
    """(input_ids of the filled prompt, index of the subject's last token in them).

    `prompt` is a "{}" template or a literal text containing `subject`.
    """
    text, start = fill(prompt, subject)
    end = start + len(subject)
    ids, offsets = _encode(tok, text, add_special_tokens)
    if offsets is not None:
        special = _special_mask(tok, ids)
        idx = _last_token_covering(offsets, special, end, start)
        if idx is None:
            raise SubjectNotFoundError(f"no token of {text!r} covers the subject {subject!r}")
        return ids, idx
    # Fallback without offsets (ROME's way): count the tokens of the text up to the subject's end.
    upto = tok(text[:end], add_special_tokens=add_special_tokens)["input_ids"]
    return ids, len(upto) - 1


def _special_mask(tok, ids: Sequence[int]) -> list[bool]:
    special = set(getattr(tok, "all_special_ids", []) or [])
    return [i in special for i in ids]


@dataclasses.dataclass(frozen=True)
class TargetSpan:
    """Tokens of `prompt + " " + target`; target tokens are ids[start:end].

    The logit predicting ids[j] sits at position j - 1, so the target is scored from the
    logits at positions start-1 .. end-2.
    """

    ids: list[int]
    start: int
    end: int

    @property
    def target_ids(self) -> list[int]:
        return self.ids[self.start : self.end]


def target_span(tok, prompt_text: str, target: str, add_special_tokens: bool = True) -> TargetSpan:
    """Tokenise `prompt_text + " " + target` jointly and find the target's tokens.

    The leading space belongs to the target (the project's scoring convention, FORMULAS.md,
    section "Notation"). A token that straddles the border
    is counted as the target's (it is predicted after the prompt's last full token).
    """
    target = target.strip()
    if not target:
        raise ValueError("empty target")
    text = prompt_text + " " + target
    border = len(prompt_text)  # the space is the target's first character
    ids, offsets = _encode(tok, text, add_special_tokens)
    if offsets is not None:
        special = _special_mask(tok, ids)
        first = None
        for i, (a, b) in enumerate(offsets):
            if special[i]:
                continue
            # b > border: the token covers target text; a == b >= border: a lone space token
            # whose offsets were trimmed to nothing (byte-level BPE), still the target's.
            if b > border or (a == b and a >= border):
                first = i
                break
        # trailing special tokens (an EOS some tokenizers append) are not target tokens
        last = len(ids)
        while last > 0 and special[last - 1]:
            last -= 1
        if first is None or first >= last:
            raise ValueError(f"target {target!r} produced no tokens after prompt {prompt_text!r}")
        if first == 0:
            raise ValueError(f"prompt {prompt_text!r} has no tokens before the target")
        return TargetSpan(ids, first, last)
    n_prompt = len(tok(prompt_text, add_special_tokens=add_special_tokens)["input_ids"])
    if ids[: n_prompt] != tok(prompt_text, add_special_tokens=add_special_tokens)["input_ids"]:
        n_prompt -= 1  # the border token merged: count it as the target's
    return TargetSpan(ids, n_prompt, len(ids))


@dataclasses.dataclass
class Batch:
    """A left-padded batch: input_ids, attention_mask and position_ids (B, T).

    `lengths[b]` is the number of real tokens of row b; real tokens occupy the last
    lengths[b] columns, so original index j of row b sits at column offset[b] + j.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    lengths: list[int]

    @property
    def offsets(self) -> list[int]:
        T = self.input_ids.shape[1]
        return [T - n for n in self.lengths]

    def to(self, device) -> Batch:
        return Batch(
            self.input_ids.to(device), self.attention_mask.to(device), self.position_ids.to(device), self.lengths
        )

    def model_inputs(self) -> dict:
        # position_ids must be passed: several families derive positions from the cache
        # position, which is wrong for left-padded rows.
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
        }


def pad_id(tok) -> int:
    for cand in (tok.pad_token_id, tok.eos_token_id, 0):
        if cand is not None:
            return int(cand)
    return 0


def encode_batch(tok, sequences: Sequence[Sequence[int]]) -> Batch:
    """Left-pad already-tokenised sequences into a Batch with correct position ids."""
    if len(sequences) == 0:
        raise ValueError("empty batch")
    lengths = [len(s) for s in sequences]
    if min(lengths) == 0:
        raise ValueError("a sequence in the batch is empty")
    T = max(lengths)
    ids = torch.full((len(sequences), T), pad_id(tok), dtype=torch.long)
    mask = torch.zeros((len(sequences), T), dtype=torch.long)
    for b, s in enumerate(sequences):
        ids[b, T - len(s) :] = torch.as_tensor(list(s), dtype=torch.long)
        mask[b, T - len(s) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(ids, mask, pos, lengths)


def encode_texts(tok, texts: Sequence[str], add_special_tokens: bool = True) -> Batch:
    seqs = [tok(t, add_special_tokens=add_special_tokens)["input_ids"] for t in texts]
    return encode_batch(tok, seqs)
