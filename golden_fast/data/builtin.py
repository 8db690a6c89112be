"""The built-in fact set: counterfactual edits that need no download.

`golden-fast demo`, the quick tests and first experiments need edits that a *small*
model knows before the edit (an edit of a fact the model never knew measures
nothing). The facts in ``builtin/facts.json`` were written for golden-fast (not taken
from a dataset) over relations small models know (capitals, languages, landmarks,
cities, continents, currencies, products, founders, professions, sports, authors),
and kept only where SmolLM2-135M-Instruct (Q4_1 GGUF) already predicts them: its
greedy next token after the prompt is the ground truth's first token for 83 of 83
facts, and likewise for all 83 locality answers (50 of 83 rephrases; measured when
the set was written). Each fact has one rephrase and one locality probe; 17 have a
one-hop portability probe. Locality probes use subjects that no fact in the set edits,
so the whole set can be edited in one batch (MEMIT, EMMET) without rewriting them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from golden_fast.data.request import EditRequest

__all__ = ["builtin_facts", "builtin_records"]

# packaged via pyproject's package-data "data/builtin/*.json"
_RESOURCE = ("builtin", "facts.json")


@lru_cache(maxsize=1)
def _text() -> str:
    return resources.files("golden_fast.data").joinpath(*_RESOURCE).read_text(encoding="utf-8")


def builtin_records() -> list[dict[str, Any]]:
    """The raw records (golden-fast format), a fresh copy on every call."""
    return json.loads(_text())


def builtin_facts() -> list[EditRequest]:
    """The built-in edits as validated `EditRequest`s (index = position in the set).

    The records are in golden-fast's own format, `EditRequest.to_dict`'s, read back by
    `EditRequest.from_dict` (what `loaders.from_records(..., "golden-fast")` does too); this
    module sits below loaders.py, which imports it to load the path "builtin"."""
    return [EditRequest.from_dict(rec, index=i) for i, rec in enumerate(builtin_records())]
