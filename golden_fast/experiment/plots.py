"""Figures of the experiment that `LayerScores.plot` does not draw: the mass-editing curves (quality,
time, memory against the number of edited facts) and the editors' test metrics at each layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from golden_fast.evaluate.report import HEADLINE_METRICS

__all__ = ["plot_editor_layers", "plot_mass_cost", "plot_mass_quality"]

_QUALITY = tuple(m for m in HEADLINE_METRICS if m != "score")  # rates on one 0-1 axis


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(curves: Mapping[str, Sequence[Mapping[str, Any]]], kind: str):
    """(label, points, line style) for every method's curve."""
    style = "-" if kind == "batch" else "--"
    return [(f"{m} ({kind})", pts, style) for m, pts in curves.items() if pts]


def _int_x(ax) -> None:
    import matplotlib.ticker

    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def _log_x(ax, ns: list[int]) -> None:
    """Log scale when the sizes span a factor 20 or more (10, 100, 1,000), else integer ticks."""
    if ns and max(ns) / max(1, min(ns)) >= 20:
        ax.set_xscale("log")
    else:
        _int_x(ax)


def plot_mass_quality(batch: Mapping[str, Sequence[Mapping[str, Any]]], sequential: Mapping[str, Sequence[Mapping]],
                      path: str | Path) -> Path:
    """One panel per metric present: mean (95% CI band) over the facts edited so far, against n."""
    plt = _plt()
    series = _series(batch, "batch") + _series(sequential, "sequential")
    present = {m for _, pts, _ in series for p in pts for m in p["summary"]}
    metrics = [m for m in _QUALITY if m in present] or sorted(present)[:3]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(4.2 * max(1, len(metrics)), 3.4), dpi=110,
                             squeeze=False)
    ns_all: list[int] = []
    for ax, metric in zip(axes[0], metrics):
        for label, pts, style in series:
            pts = [p for p in pts if metric in p["summary"]]
            if not pts:
                continue
            n = [p.get("n", p.get("edits")) for p in pts]
            ns_all += n
            mean = [p["summary"][metric]["mean"] for p in pts]
            lo = [p["summary"][metric]["lo"] for p in pts]
            hi = [p["summary"][metric]["hi"] for p in pts]
            line, = ax.plot(n, mean, style, marker="o", ms=3, label=label)
            ax.fill_between(n, lo, hi, color=line.get_color(), alpha=0.15)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("facts edited")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        _log_x(ax, ns_all)
    axes[0][0].set_ylabel("mean over the edited facts (95% CI)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_mass_cost(batch: Mapping[str, Sequence[Mapping[str, Any]]], sequential: Mapping[str, Sequence[Mapping]],
                   path: str | Path) -> Path:
    """Editing time (batch: the one edit() call; sequential: cumulative) and peak memory, against n."""
    plt = _plt()
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    ns: list[int] = []
    for label, pts, style in _series(batch, "batch") + _series(sequential, "sequential"):
        n = [p.get("n", p.get("edits")) for p in pts]
        ns += n
        t = [p.get("edit_seconds") if "cum_edit_seconds" not in p else p["cum_edit_seconds"] for p in pts]
        ax_t.plot(n, t, style, marker="o", ms=3, label=label)
        mem = [(p.get("peak") or {}).get("extra_mib") for p in pts]
        if any(m is not None for m in mem):
            ax_m.plot(n, [float("nan") if m is None else m for m in mem], style, marker="o", ms=3, label=label)
    ax_t.set_title("editing time (sequential: cumulative)", fontsize=9)
    ax_t.set_ylabel("seconds")
    ax_m.set_title("peak RSS during editing, above the RSS before it", fontsize=9)
    ax_m.set_ylabel("MiB")
    for ax in (ax_t, ax_m):
        ax.set_xlabel("facts edited")
        ax.grid(alpha=0.3)
        _log_x(ax, ns)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_editor_layers(means: Mapping[str, Mapping[int, float]], golden: int | None, marks: Mapping[int, str],
                       path: str | Path, metric: str = "overall") -> Path:
    """Each editor's mean `metric` on the test facts at each evaluated layer; the test golden layer
    (brute force) dashed, the layers the locating methods chose labelled."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=110)
    for method, by_layer in means.items():
        xs = sorted(by_layer)
        ax.plot(xs, [by_layer[x] for x in xs], marker="o", ms=4, label=method)
    if golden is not None:
        ax.axvline(golden, ls="--", lw=0.9, color="tab:orange", label=f"test golden layer {golden}")
    for layer, text in marks.items():  # labels along the top edge, at the chosen layer
        ax.annotate(text, (layer, 0.98), xycoords=("data", "axes fraction"), fontsize=6, rotation=90, va="top",
                    ha="right", color="0.35")
    _int_x(ax)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"mean {metric} after edit (test facts)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
