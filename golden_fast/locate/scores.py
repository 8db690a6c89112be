"""`LayerScores`: what every locating method returns, with Tukey's fences, the choice of a layer,
a PNG of the per-layer curve and a JSON round trip (FORMULAS.md, section "LGA", for the filter).

Selection (LGA's, usable by any method): layers whose score lies outside the Tukey fences
[Q1 - k IQR, Q3 + k IQR] (k = 1, linear-interpolated quartiles, the paper's rule) are dropped,
then the layer with the highest score among the rest is chosen, and the top-k for multi-layer
editors. k = None keeps every layer.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LayerScores", "select_layers", "tukey_fences"]

_FORMAT_VERSION = 1


def tukey_fences(scores: Sequence[float], k: float = 1.0) -> tuple[float, float]:
    """(Q1 - k IQR, Q3 + k IQR) of `scores`, quartiles by linear interpolation (numpy's default).

    Raises ValueError on an empty list, a non-finite score or a negative k.
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"tukey_fences: need a non-empty 1-D list of scores, got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = [i for i, v in enumerate(x) if not math.isfinite(v)]
        raise ValueError(f"tukey_fences: non-finite score at position(s) {bad}")
    if k is None or k < 0 or not math.isfinite(k):
        raise ValueError(f"tukey_fences: k must be a finite number >= 0, got {k!r}")
    q1, q3 = np.quantile(x, [0.25, 0.75], method="linear")
    iqr = q3 - q1
    return float(q1 - k * iqr), float(q3 + k * iqr)


def select_layers(
    layers: Sequence[int], scores: Sequence[float], tukey_k: float | None = 1.0, top_k: int = 1
) -> tuple[list[int], list[bool], tuple[float, float] | None]:
    """(top-k layers by score among those kept, kept mask, fences or None).

    Fences are inclusive: a score equal to a fence is kept. Ties in score keep the lower layer first.
    """
    if len(layers) != len(scores):
        raise ValueError(f"select_layers: {len(layers)} layers but {len(scores)} scores")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"select_layers: top_k must be a positive int, got {top_k!r}")
    x = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(x).all():
        bad = [layers[i] for i, v in enumerate(x) if not math.isfinite(v)]
        raise ValueError(f"select_layers: non-finite score at layer(s) {bad}")
    if tukey_k is None:
        fences, kept = None, [True] * len(x)
    else:
        fences = tukey_fences(x, tukey_k)
        kept = [bool(fences[0] <= v <= fences[1]) for v in x]
    order = sorted((i for i in range(len(x)) if kept[i]), key=lambda i: (-x[i], layers[i]))
    return [int(layers[i]) for i in order[:top_k]], kept, fences


@dataclasses.dataclass
class LayerScores:
    """Per-layer scores of one locating method and the layer(s) they choose.

    Attributes:
        method: "lga", "cma", "brute" or "hybrid".
        layers: the candidate layers, in order; every per-layer list below is aligned with it.
        scores: the scores the choice is made on (LGA: the selected variant; CMA: the average
            indirect effect; brute force: the mean "overall" metric).
        variant: which of `variants` `scores` is.
        variants: every per-layer score the run computed, by name (LGA computes all its variants
            from the same Gram matrices; brute force one curve per metric).
        chosen: the chosen layer (top_k[0]).
        top_k: the best k layers among those kept, best first.
        kept: per layer, False when the filter dropped it.
        fences: the Tukey fences (lo, hi), or None when no filter was applied.
        filter: a description of the filter ("tukey k=1.0 (linear quartiles)" or "none").
        wall_time: seconds the method took (model loading excluded).
        settings: the options the run used (JSON-ready).
        n_requests: proxy requests given; n_used: those that counted (CMA skips wrong ones).
        extra: method-specific results (per-sample values, skipped requests, golden report...).
    """

    method: str
    layers: list[int]
    scores: list[float]
    variant: str
    variants: dict[str, list[float]]
    chosen: int
    top_k: list[int]
    kept: list[bool]
    fences: tuple[float, float] | None
    filter: str
    wall_time: float
    settings: dict[str, Any]
    n_requests: int
    n_used: int
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def build(
        cls,
        method: str,
        layers: Sequence[int],
        variants: Mapping[str, Sequence[float]],
        variant: str,
        *,
        tukey_k: float | None,
        top_k: int,
        wall_time: float,
        settings: Mapping[str, Any],
        n_requests: int,
        n_used: int,
        extra: Mapping[str, Any] | None = None,
    ) -> LayerScores:
        """Select layers on `variants[variant]` and assemble the result."""
        if variant not in variants:
            raise ValueError(f"{method}: unknown variant {variant!r}; computed: {sorted(variants)}")
        scores = [float(v) for v in variants[variant]]
        chosen, kept, fences = select_layers(layers, scores, tukey_k, top_k)
        return cls(
            method=method,
            layers=[int(x) for x in layers],
            scores=scores,
            variant=variant,
            variants={k: [float(v) for v in vs] for k, vs in variants.items()},
            chosen=chosen[0],
            top_k=chosen,
            kept=kept,
            fences=fences,
            filter="none" if tukey_k is None else f"tukey k={tukey_k:g} (linear quartiles)",
            wall_time=float(wall_time),
            settings=dict(settings),
            n_requests=int(n_requests),
            n_used=int(n_used),
            extra=dict(extra or {}),
        )

    def reselect(
        self, variant: str | None = None, tukey_k: float | None = 1.0, top_k: int | None = None
    ) -> LayerScores:
        """The same run with another variant / filter / k (nothing is recomputed)."""
        return LayerScores.build(
            self.method,
            self.layers,
            self.variants,
            variant or self.variant,
            tukey_k=tukey_k,
            top_k=top_k or len(self.top_k),
            wall_time=self.wall_time,
            settings=self.settings,
            n_requests=self.n_requests,
            n_used=self.n_used,
            extra=self.extra,
        )

    def score_of(self, layer: int) -> float:
        return self.scores[self.layers.index(layer)]

    # ---- text / json ------------------------------------------------------------------------

    def summary(self) -> str:
        """A few lines: the choice, the filter and the top layers."""
        dropped = [layer for layer, k in zip(self.layers, self.kept) if not k]
        head = (
            f"{self.method} ({self.variant}): layer {self.chosen}"
            + (f", top-{len(self.top_k)} {self.top_k}" if len(self.top_k) > 1 else "")
            + f"; {self.n_used}/{self.n_requests} request(s), {self.wall_time:.2f} s"
        )
        lines = [
            head,
            f"  filter: {self.filter}"
            + (f", fences [{self.fences[0]:.4g}, {self.fences[1]:.4g}]" if self.fences else ""),
        ]
        if dropped:
            lines.append(f"  dropped layers: {dropped}")
        best = sorted(range(len(self.layers)), key=lambda i: -self.scores[i])[:5]
        lines.append("  best scores: " + ", ".join(f"{self.layers[i]}: {self.scores[i]:.4g}" for i in best))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: numpy values become lists and numbers, absent (NaN) values None."""
        d = dataclasses.asdict(self)
        d["fences"] = list(self.fences) if self.fences else None
        d["format_version"] = _FORMAT_VERSION
        return _jsonable(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerScores:
        d = dict(d)
        version = d.pop("format_version", _FORMAT_VERSION)
        if version != _FORMAT_VERSION:
            raise ValueError(f"LayerScores: format version {version}, this code reads {_FORMAT_VERSION}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"LayerScores: unknown key(s) {unknown}")
        if d.get("fences") is not None:
            d["fences"] = tuple(d["fences"])
        return cls(**d)

    def to_json(self, path: str | Path | None = None, indent: int | None = 1) -> str:
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> LayerScores:
        p = Path(source)
        text = p.read_text() if not str(source).lstrip().startswith("{") else str(source)
        return cls.from_dict(json.loads(text))

    # ---- figure -----------------------------------------------------------------------------

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """Draw the per-layer curve as a PNG: kept layers, dropped ones (red crosses), the Tukey
        fences (dashed) when a filter was applied, and the chosen layer (star)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker

        x = np.asarray(self.layers)
        y = np.asarray(self.scores)
        kept = np.asarray(self.kept, dtype=bool)
        fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=120)
        ax.plot(x, y, color="0.6", lw=1, zorder=1)
        ax.scatter(x[kept], y[kept], s=18, color="tab:blue", zorder=2, label="kept")
        if (~kept).any():
            ax.scatter(
                x[~kept], y[~kept], s=30, marker="x", color="tab:red", zorder=3, label="dropped (outside fences)"
            )
        if self.fences is not None:
            for f in self.fences:
                ax.axhline(f, ls="--", lw=0.8, color="tab:red")
        ci = self.layers.index(self.chosen)
        ax.scatter(
            [self.chosen],
            [y[ci]],
            s=120,
            marker="*",
            color="tab:orange",
            zorder=4,
            label=f"chosen: layer {self.chosen}",
        )
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("layer")
        ax.set_ylabel(
            {
                "lga": f"LGA score ({self.variant})",
                "cma": "average indirect effect",
                "brute": f"mean {self.variant} after edit",
                "hybrid": f"mean {self.variant} after trial edits",
            }.get(self.method, "score")
        )
        ax.set_title(title or f"{self.method}: {self.n_used} proxy request(s), {self.filter}", fontsize=9)
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
        plt.close(fig)
        return path


def _jsonable(x: Any) -> Any:
    """numpy scalars/arrays to plain Python; a non-finite float is an error, never a silent NaN."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN; absent values are None by the report's convention
    return x
