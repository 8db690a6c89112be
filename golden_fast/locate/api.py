"""`locate(model, tokenizer, proxy_requests, method=...)`: one entry point for the three ways of
finding the layer to edit (FORMULAS.md, sections "LGA", "Causal tracing", "Brute force and the
golden layer"), each returning `LayerScores`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from torch import nn

from golden_fast.locate.scores import LayerScores

__all__ = ["METHODS", "locate"]

METHODS = ("lga", "cma", "brute", "hybrid")
_BRUTE_OPTIONS = ("out", "suites", "progress", "top_k", "n_boot", "seed")


def _split(cls: type, options: dict[str, Any], extra: Sequence[str], method: str) -> tuple[Any, dict[str, Any]]:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields - set(extra))
    if unknown:
        raise ValueError(
            f"locate(method={method!r}): unknown option(s) {unknown}; known: {sorted(fields | set(extra))}"
        )
    return cls(**{k: v for k, v in options.items() if k in fields}), {
        k: v for k, v in options.items() if k not in fields
    }


def locate(
    model: nn.Module,
    tok: Any,
    proxy_requests: Sequence[Any],
    method: str = "lga",
    layers: Sequence[int] | None = None,
    editor: Any = None,
    **options: Any,
) -> LayerScores:
    """Score every candidate layer on the proxy requests and choose one.

    Args:
        method: "lga" (Layer Gradient Analysis, `golden_fast.locate.lga`), "cma" (causal tracing,
            `golden_fast.locate.causal_trace`), "brute" (edit, evaluate, revert at every layer,
            `golden_fast.locate.brute_force`) or "hybrid" (LGA's shortlist, then successive halving
            with trial edits, `golden_fast.locate.hybrid`).
        layers: candidate layers (None: all).
        editor: brute force and hybrid only: None (R-ROME, the model's preset), a method name, or a mapping
            {"method", "hparams", "stats"} as `Editor` takes them.
        options: the method's options: `LGAConfig` / `CMAConfig` fields (plus `progress`, and
            `noise_subjects` for CMA); for brute force `out` (resumable results directory),
            `suites`, `progress`, `top_k`, `n_boot`, `seed`; for hybrid `HybridConfig` fields,
            `LGAConfig` fields (but top_k, the hybrid's), `out`, `suites`, `progress`.

    Returns:
        LayerScores: per-layer scores, the chosen layer and top-k, the filter, wall time, settings.
    """
    name = method.strip().lower()
    if name not in METHODS:
        raise ValueError(f"unknown locate method {method!r}; choose from {', '.join(METHODS)}")
    if editor is not None and name not in ("brute", "hybrid"):
        raise ValueError(f"locate(method={name!r}) takes no editor (only brute force and hybrid edit)")
    if name == "hybrid":
        from golden_fast.locate.hybrid import hybrid_from_options

        return hybrid_from_options(model, tok, proxy_requests, layers, editor, options)
    if name == "lga":
        from golden_fast.locate.lga import LGAConfig, lga

        config, rest = _split(LGAConfig, options, ("progress",), name)
        return lga(model, tok, proxy_requests, layers, config, progress=rest.get("progress", False))
    if name == "cma":
        from golden_fast.locate.causal_trace import CMAConfig, causal_trace

        config, rest = _split(CMAConfig, options, ("progress", "noise_subjects"), name)
        return causal_trace(
            model,
            tok,
            proxy_requests,
            layers,
            config,
            noise_subjects=rest.get("noise_subjects"),
            progress=rest.get("progress", False),
        )
    from golden_fast.locate.brute_force import brute_force, brute_scores

    unknown = sorted(set(options) - set(_BRUTE_OPTIONS))
    if unknown:
        raise ValueError(f"locate(method='brute'): unknown option(s) {unknown}; known: {sorted(_BRUTE_OPTIONS)}")
    result = brute_force(
        model,
        tok,
        proxy_requests,
        layers,
        editor,
        out=options.get("out"),
        suites=options.get("suites", ("knowedit",)),
        progress=options.get("progress", True),
    )
    return brute_scores(
        result, top_k=options.get("top_k", 1), n_boot=options.get("n_boot", 2000), seed=options.get("seed", 0)
    )
