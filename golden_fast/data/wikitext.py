"""WikiText (Merity et al. 2016) as plain text: the release's tokenisation undone.

The files carry one paragraph a line, `= Title =` / `= = Section = =` headings, spaces around
punctuation and the markers ` @-@ `, ` @,@ `, ` @.@ ` inside hyphenated words and numbers. A
model's tokenizer should see ordinary text, so the markers and the spaces the release added are
removed; `<unk>` stays (the release replaced rare words by it; there is nothing to restore)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

__all__ = ["detokenize", "wikitext_paragraphs"]

_HEADING = re.compile(r"^\s*(=\s*)+[^=].*?(\s*=)+\s*$")
_RULES = [
    (re.compile(r" @([-,.])@ "), r"\1"),  # 1 @,@ 000 -> 1,000; well @-@ known -> well-known
    (re.compile(r" ([.,;:!?%)\]}])"), r"\1"),  # no space before closing punctuation
    (re.compile(r"([(\[{$]) "), r"\1"),  # nor after opening punctuation
    (re.compile(r" ('s|'re|'ve|'m|'ll|'d)\b"), r"\1"),  # contractions and possessives
    (re.compile(r"n 't\b"), "n't"),  # isn 't -> isn't
    (re.compile(r'" ([^"]*?) "'), r'"\1"'),  # quoted spans
    (re.compile(r" {2,}"), " "),
]


def detokenize(line: str) -> str:
    """One line of the release as ordinary text."""
    text = line.strip()
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return text


def wikitext_paragraphs(path: str | Path, keep_headings: bool = False) -> Iterator[str]:
    """The paragraphs of a WikiText file, detokenised; headings dropped unless asked for."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            if _HEADING.match(line):
                if keep_headings:
                    yield line.strip().strip("=").strip()
                continue
            yield detokenize(line)
