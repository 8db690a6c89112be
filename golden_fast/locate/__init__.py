"""Locating the layer to edit (FORMULAS.md, sections "LGA", "Causal tracing" and "Brute force and
the golden layer"): LGA (gradient inner products from two Gram matrices),
causal tracing (ROME's CMA, any architecture), brute force (edit / evaluate / revert at every
layer), and the golden / sample-wise optimal layers of a brute-force tensor.

    from golden_fast.locate import locate
    scores = locate(model, tok, proxy, method="lga")      # or "cma", "brute", "hybrid"
    scores.chosen, scores.top_k; scores.plot("lga.png"); scores.to_json("lga.json")
"""

from __future__ import annotations

from golden_fast.locate.api import METHODS, locate
from golden_fast.locate.scores import LayerScores, select_layers, tukey_fences

__all__ = ["METHODS", "LayerScores", "locate", "select_layers", "tukey_fences"]
