"""The golden band (FORMULAS.md, section "Hybrid locator and golden band"): the layers that cannot be
told apart from the golden layer on the facts at hand.

For a matrix M (facts x layers, one metric or "overall"), G = argmax_l mean_i M(i, l) (ties: the
lower position) and, per layer l,

    d(l) = mean_i [M(i, G) - M(i, l)]      (>= 0)

with a 95% percentile-bootstrap interval over facts: the same resample of facts serves every layer
(paired). The band is {l : lo(l) <= 0 <= hi(l)}; G is always in it (d(G) = 0 on every resample).

The resamples are drawn as `numpy.random.default_rng(seed).integers(0, n, size=(n_boot, n))` (row b:
the facts of resample b), and the percentiles are numpy's linear ones, so a plain loop over that
index array reproduces the intervals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["GoldenBand", "golden_band", "metric_matrix", "paired_intervals"]

# resamples x facts x columns held at once by the chunked bootstrap (~32 MB of float64)
_CHUNK_CELLS = 4_000_000


def paired_intervals(
    diffs: np.ndarray, n_boot: int = 2000, rng: np.random.Generator | int | None = 0, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval (lo, hi) of the mean of each column of `diffs` (n, K).

    The facts (rows) are resampled with replacement, the same resample for every column (paired);
    `rng` is a Generator or a seed. Draw protocol: idx = rng.integers(0, n, size=(n_boot, n)).
    Resample means within 1e-12 (relative to the largest |difference|) of 0 count as 0.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] == 0:
        raise ValueError(f"paired_intervals: need a (facts, columns) array with at least one fact, got {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("paired_intervals: non-finite difference")
    if int(n_boot) < 1:
        raise ValueError(f"paired_intervals: n_boot must be >= 1, got {n_boot!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"paired_intervals: confidence must lie in (0, 1), got {confidence!r}")
    n, k = d.shape
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    idx = gen.integers(0, n, size=(int(n_boot), n))
    boots = np.empty((int(n_boot), k))
    step = max(1, _CHUNK_CELLS // max(1, n * k))
    for lo in range(0, int(n_boot), step):
        boots[lo : lo + step] = d[idx[lo : lo + step]].mean(1)
    # a resample mean that is 0 in exact arithmetic (1/3 - 1/3 ...) may come out as +-1e-17: snap it
    # to 0, so whether an interval contains 0 never hangs on rounding
    boots[np.abs(boots) <= 1e-12 * max(1.0, float(np.abs(d).max(initial=0.0)))] = 0.0
    alpha = (1 - confidence) / 2
    q = np.percentile(boots, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return q[0], q[1]


def metric_matrix(
    M: np.ndarray, metrics: Sequence[str] | None = None, metric: str | Sequence[str] = "overall"
) -> tuple[np.ndarray, np.ndarray]:
    """(values (n', L), rows kept) of one metric from M: a 2-D M is taken as it is; a 3-D brute-force
    tensor M[fact, layer, metric] gives `metric` ("overall": the mean of the metrics present for
    the fact, golden.py's; a tuple of names: the mean of those of them present for the fact), facts
    for which the metric is absent left out."""
    from golden_fast.locate.golden import OVERALL, _check, overall

    M = np.asarray(M, dtype=np.float64)
    if M.ndim == 2:
        values = M
    elif M.ndim == 3:
        if metrics is None:
            raise ValueError("metric_matrix: a 3-D M needs its metric names")
        metrics = list(metrics)
        _check(M, list(range(M.shape[1])), metrics, None)
        if not isinstance(metric, str):
            names = list(metric)
            unknown = [m for m in names if m not in metrics]
            if not names or unknown:
                raise ValueError(f"unknown metric(s) {unknown or names}; M has {metrics}")
            sub = M[:, :, [metrics.index(m) for m in names]]
            present = ~np.isnan(sub[:, 0, :])  # (n, k): presence does not depend on the layer (checked)
            with np.errstate(invalid="ignore"):
                values = np.nansum(sub, axis=2) / present.sum(1)[:, None]
            values[~present.any(1)] = np.nan
        elif metric == OVERALL:
            values = overall(M, metrics)
        elif metric in metrics:
            values = M[:, :, metrics.index(metric)]
        else:
            raise ValueError(f"unknown metric {metric!r}; M has {metrics} and {OVERALL!r}")
    else:
        raise ValueError(f"M must be (facts, layers) or (facts, layers, metrics), got shape {M.shape}")
    nan = np.isnan(values)
    partial = nan.any(1) & ~nan.all(1)
    if partial.any():
        i = int(np.flatnonzero(partial)[0])
        raise ValueError(f"fact at position {i}: value missing at some layers only (an incomplete run?)")
    if np.isinf(values).any():
        raise ValueError("M has an infinite value")
    if values.shape[1] == 0:
        raise ValueError("M has no layer")
    have = ~nan.all(1)
    if not have.any():
        raise ValueError(f"metric {metric!r} is absent for every fact")
    return values[have], have


@dataclasses.dataclass(frozen=True)
class GoldenBand:
    """The golden layer and the layers not distinguishable from it.

    Attributes:
        golden: G, the layer with the highest mean.
        band: the layers whose interval of d(l) = mean_i [M(i, G) - M(i, l)] contains 0, sorted.
        layers: every layer, in M's column order; the per-layer lists below are aligned with it.
        mean: mean_i M(i, l).
        diff, lo, hi: d(l) and its percentile-bootstrap interval.
        n: facts used; n_boot, seed, confidence: the bootstrap's settings.
    """

    golden: int
    band: list[int]
    layers: list[int]
    mean: list[float]
    diff: list[float]
    lo: list[float]
    hi: list[float]
    n: int
    n_boot: int
    seed: int
    confidence: float

    def __contains__(self, layer: object) -> bool:
        return layer in self.band

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def table(self) -> str:
        """One line per layer: mean, d(l) with its interval, in or out of the band."""
        lines = [
            f"golden layer {self.golden}, band {self.band} ({len(self.band)} of {len(self.layers)} layers; "
            f"{self.n} facts, {self.n_boot} resamples, {self.confidence:.0%})",
            f"  {'layer':>5}{'mean':>9}{'G - l':>9}  interval",
        ]
        for j, layer in enumerate(self.layers):
            mark = "  *" if layer in self.band else ""
            lines.append(
                f"  {layer:>5}{self.mean[j]:>9.4f}{self.diff[j]:>9.4f}  [{self.lo[j]:.4f}, {self.hi[j]:.4f}]{mark}"
            )
        return "\n".join(lines)


def golden_band(
    M: np.ndarray,
    layers: Sequence[int] | None = None,
    metrics: Sequence[str] | None = None,
    metric: str = "overall",
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> GoldenBand:
    """The golden layer G = argmax of the column means and the band of layers whose paired bootstrap
    interval of mean_i [M(i, G) - M(i, l)] contains 0.

    Args:
        M: (facts, layers) values of one metric, or a brute-force tensor (facts, layers, metrics)
            with `metrics` naming its last axis (then `metric` is taken, "overall" by default).
        layers: the labels of M's columns (None: 0..L-1).
        n_boot, seed, confidence: the bootstrap (facts resampled; deterministic for a seed).
    """
    values, _ = metric_matrix(M, metrics, metric)
    n, L = values.shape
    layers = list(range(L)) if layers is None else [int(x) for x in layers]
    if len(layers) != L or L == 0:
        raise ValueError(f"golden_band: {L} column(s) but {len(layers)} layer label(s)")
    mean = values.mean(0)
    G = int(np.argmax(mean))  # first maximum: ties keep the lower position
    d = values[:, [G]] - values
    lo, hi = paired_intervals(d, n_boot, seed, confidence)
    lo[G] = hi[G] = 0.0  # exactly: d(G) is 0 on every resample
    band = sorted(layers[j] for j in range(L) if lo[j] <= 0 <= hi[j])
    return GoldenBand(
        golden=layers[G],
        band=band,
        layers=layers,
        mean=mean.tolist(),
        diff=d.mean(0).tolist(),
        lo=lo.tolist(),
        hi=hi.tolist(),
        n=n,
        n_boot=int(n_boot),
        seed=int(seed),
        confidence=float(confidence),
    )
