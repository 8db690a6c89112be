"""Golden and sample-wise optimal layers from a brute-force tensor M[request, layer, metric]
(FORMULAS.md, section "Brute force and the golden layer").

- sample-wise optimal layer of request i: l*_i = argmax_l M(i, l) (ties: the lowest layer);
- golden layer: G = argmax_l mean_i M(i, l), per metric and for "overall" (ours: the mean of the
  metrics present for that request);
- gap = mean_i max_l M(i, l) - mean_i M(i, G) >= 0, with a paired percentile-bootstrap interval
  (requests resampled, G held fixed: the interval is on the loss of editing every request at G
  instead of at its own best layer) and a Wilcoxon signed-rank p-value of the pairs
  (max_l M(i, l), M(i, G)) (scipy.stats.wilcoxon, zero differences dropped, two-sided).

A metric absent for a request (no rephrase prompt, say) is NaN in M at *every* layer and that
request is left out of the metric; NaN at some layers only means a broken run and is an error
naming the request and the layers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Gap", "GoldenReport", "golden_analysis", "layer_comparison", "overall"]

OVERALL = "overall"


def _check(M: np.ndarray, layers: Sequence[int], metrics: Sequence[str], refs: Sequence[str] | None) -> None:
    if M.ndim != 3 or M.shape[1] != len(layers) or M.shape[2] != len(metrics):
        raise ValueError(f"M must be (requests, {len(layers)} layers, {len(metrics)} metrics); got shape {M.shape}")
    if M.shape[0] == 0:
        raise ValueError("M has no request")
    if np.isinf(M).any():
        i, j, k = np.argwhere(np.isinf(M))[0]
        raise ValueError(f"M is infinite for {_name(refs, i)}, layer {layers[j]}, metric {metrics[k]!r}")
    nan = np.isnan(M)
    partial = nan.any(1) & ~nan.all(1)  # (n, K): NaN at some layers only
    if partial.any():
        i, k = np.argwhere(partial)[0]
        bad = [layers[j] for j in np.flatnonzero(nan[i, :, k])]
        raise ValueError(
            f"{_name(refs, i)}: metric {metrics[k]!r} is missing at layer(s) {bad} but present at others "
            "(an incomplete brute-force run?)"
        )


def _name(refs: Sequence[str] | None, i: int) -> str:
    return refs[i] if refs is not None else f"request at position {i}"


def overall(M: np.ndarray, metrics: Sequence[str], refs: Sequence[str] | None = None) -> np.ndarray:
    """(n, L): per request and layer, the mean of the metrics present for that request."""
    present = ~np.isnan(M[:, 0, :])  # (n, K): presence does not depend on the layer (checked)
    if not present.any(1).all():
        i = int(np.flatnonzero(~present.any(1))[0])
        raise ValueError(f"{_name(refs, i)}: no metric at all")
    return np.nansum(M, axis=2) / present.sum(1)[:, None]


@dataclasses.dataclass(frozen=True)
class Gap:
    """mean_i max_l M(i, l) - mean_i M(i, G), its paired bootstrap interval and Wilcoxon p-value."""

    gap: float
    lo: float
    hi: float
    p_value: float
    n: int
    n_nonzero: int
    samplewise_mean: float
    golden_mean: float
    note: str = ""


@dataclasses.dataclass
class GoldenReport:
    """Golden layers, sample-wise optima and gaps, for every metric and "overall"."""

    layers: list[int]
    metrics: list[str]  # the metric names, then "overall"
    golden: dict[str, int]
    mean_by_layer: dict[str, list[float]]
    samplewise: dict[str, list[int | None]]  # per request (None: metric absent for it)
    gap: dict[str, Gap]
    n_requests: int
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["gap"] = {k: dataclasses.asdict(v) for k, v in self.gap.items()}
        return d

    def table(self) -> str:
        lines = [
            f"golden layers over {self.n_requests} request(s), layers {self.layers[0]}..{self.layers[-1]} "
            f"({len(self.layers)}):",
            f"  {'metric':<14}{'golden':>7}{'mean@G':>9}{'samplewise':>12}{'gap':>8}  "
            f"{'95% CI':<19}{'Wilcoxon p':>11}{'n':>5}",
        ]
        for m in self.metrics:
            g = self.gap[m]
            lines.append(
                f"  {m:<14}{self.golden[m]:>7}{g.golden_mean:>9.4f}{g.samplewise_mean:>12.4f}{g.gap:>8.4f}  "
                f"[{g.lo:.4f}, {g.hi:.4f}]   {g.p_value:>9.3g}{g.n:>5}" + (f"  ({g.note})" if g.note else "")
            )
        return "\n".join(lines)


def _gap(values: np.ndarray, G: int, n_boot: int, rng: np.random.Generator, confidence: float) -> Gap:
    from scipy.stats import wilcoxon

    best = values.max(1)  # (n,)
    at_g = values[:, G]
    diff = best - at_g  # >= 0
    n = len(diff)
    idx = rng.integers(0, n, size=(n_boot, n))
    boots = diff[idx].mean(1)
    alpha = (1 - confidence) / 2
    lo, hi = np.percentile(boots, [100 * alpha, 100 * (1 - alpha)])
    nonzero = int((diff != 0).sum())
    note = ""
    if nonzero == 0:
        # Wilcoxon's statistic is undefined without a nonzero difference: no evidence of a gap at all
        p, note = 1.0, "every request is at its best at the golden layer; p set to 1"
    else:
        p = float(wilcoxon(best, at_g, zero_method="wilcox", alternative="two-sided").pvalue)
        if not math.isfinite(p):
            raise FloatingPointError(f"Wilcoxon p-value is {p} for {n} pairs ({nonzero} nonzero)")
    return Gap(float(diff.mean()), float(lo), float(hi), p, n, nonzero, float(best.mean()), float(at_g.mean()), note)


def golden_analysis(
    M: np.ndarray,
    layers: Sequence[int],
    metrics: Sequence[str],
    refs: Sequence[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> GoldenReport:
    """Golden layer, sample-wise optimal layers and the gap, per metric and overall.

    Args:
        M: (requests, layers, metrics) float array; NaN where a metric is absent for a request.
        layers, metrics: the labels of M's axes 1 and 2.
        refs: names of the requests, for error messages.
        n_boot, seed, confidence: the bootstrap of the gap's interval.
    """
    M = np.asarray(M, dtype=np.float64)
    layers = [int(x) for x in layers]
    metrics = list(metrics)
    if OVERALL in metrics:
        raise ValueError(f"{OVERALL!r} is computed here; it cannot be one of M's metrics")
    _check(M, layers, metrics, refs)
    rng = np.random.default_rng(seed)
    golden, by_layer, samplewise, gaps = {}, {}, {}, {}
    names = metrics + [OVERALL]
    for k, m in enumerate(names):
        values = overall(M, metrics, refs) if m == OVERALL else M[:, :, k]  # (n, L)
        have = ~np.isnan(values[:, 0])
        if not have.any():
            continue  # a metric absent for every request: absent from the report, never NaN
        v = values[have]
        mean = v.mean(0)
        G = int(np.argmax(mean))  # first maximum: ties keep the lower layer
        golden[m] = layers[G]
        by_layer[m] = mean.tolist()
        best = v.argmax(1)
        it = iter(best.tolist())
        samplewise[m] = [layers[next(it)] if h else None for h in have]
        gaps[m] = _gap(v, G, n_boot, rng, confidence)
    return GoldenReport(
        layers=layers,
        metrics=[m for m in names if m in golden],
        golden=golden,
        mean_by_layer=by_layer,
        samplewise=samplewise,
        gap=gaps,
        n_requests=int(M.shape[0]),
        settings={
            "n_boot": n_boot,
            "seed": seed,
            "confidence": confidence,
            "bootstrap": "paired percentile, requests resampled, golden layer fixed",
            "wilcoxon": "scipy.stats.wilcoxon, zero_method='wilcox', two-sided",
            "overall": "mean of the metrics present for the request",
        },
    )


def layer_comparison(
    M: np.ndarray,
    layers: Sequence[int],
    metrics: Sequence[str],
    layer_a: int,
    layer_b: int,
    metric: str = OVERALL,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """mean_i M(i, a) - mean_i M(i, b) on one metric with a paired bootstrap interval: how much worse
    a chosen layer a is than the golden layer b on the same requests (negative: worse)."""
    M = np.asarray(M, dtype=np.float64)
    layers = [int(x) for x in layers]
    _check(M, layers, list(metrics), None)
    values = overall(M, metrics) if metric == OVERALL else M[:, :, list(metrics).index(metric)]
    have = ~np.isnan(values[:, 0])
    if not have.any():
        raise ValueError(f"metric {metric!r} is absent for every request")
    v = values[have]
    d = v[:, layers.index(layer_a)] - v[:, layers.index(layer_b)]
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    alpha = (1 - confidence) / 2
    lo, hi = np.percentile(d[idx].mean(1), [100 * alpha, 100 * (1 - alpha)])
    return {
        "diff": float(d.mean()),
        "lo": float(lo),
        "hi": float(hi),
        "n": int(len(d)),
        "mean_a": float(v[:, layers.index(layer_a)].mean()),
        "mean_b": float(v[:, layers.index(layer_b)].mean()),
    }
