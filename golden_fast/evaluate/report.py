"""`EvalReport`: per-request metric rows, summaries with bootstrap intervals, and the
conventions that produced them, printed with every table (the anchors' numbers differ
by convention, so a number without its convention is not comparable)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import warnings
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from golden_fast.evaluate import counterfact, knowedit, soft

__all__ = ["HEADLINE_METRICS", "METRIC_ORDER", "EvalReport", "MetricRow", "MetricSummary", "suite_of"]

# display order; also the source of truth for which suite a metric belongs to
_SUITE_METRICS = {
    "knowedit": knowedit.METRICS,
    "counterfact": counterfact.METRICS,
    "soft": soft.METRICS,
    # KnowEdit's fluency and ROME's generation entropy: one measure, asked for apart from the suites
    "generation": ("fluency",),
}
METRIC_ORDER: tuple[str, ...] = tuple(m for ms in _SUITE_METRICS.values() for m in ms)
# the metrics tables and plots show by default: each suite's rates, then CounterFact's score
HEADLINE_METRICS: tuple[str, ...] = knowedit.METRICS + counterfact.SCORE_PARTS + ("score",)

_FORMAT_VERSION = 1
_CSV_FIELDS = ("position", "index", "case_id", "metric", "value", "n")


def suite_of(metric: str) -> str:
    for suite, names in _SUITE_METRICS.items():
        if metric in names:
            return suite
    return "other"


@dataclasses.dataclass(frozen=True)
class MetricRow:
    """One metric of one request.

    position: the request's position in the list given to `evaluate`; index and case_id:
    the request's own identifiers (position in its source file, dataset id); n: how
    many prompts / probes / texts were averaged into `value`.
    """

    position: int
    index: int | None
    case_id: str | int | None
    metric: str
    value: float
    n: int


@dataclasses.dataclass(frozen=True)
class MetricSummary:
    """Mean over the requests that have the metric, with a percentile-bootstrap 95% interval."""

    metric: str
    suite: str
    mean: float
    lo: float
    hi: float
    n: int


def _rng(seed: int, metric: str) -> np.random.Generator:
    # one stream per metric: adding a metric never moves another metric's interval
    return np.random.default_rng([seed, zlib.crc32(metric.encode())])


def _boot_indices(rng: np.random.Generator, n: int, n_boot: int, block: int = 256):
    """Resampled index matrices in blocks, so 10,000 requests x 2,000 draws stay small."""
    done = 0
    while done < n_boot:
        k = min(block, n_boot - done)
        yield rng.integers(0, n, size=(k, n))
        done += k


def _hmean(x: np.ndarray) -> np.ndarray:
    """Harmonic mean along the last axis; 0 when any part is 0 (its limit)."""
    with np.errstate(divide="ignore"):
        h = x.shape[-1] / np.sum(1.0 / x, axis=-1)
    return np.where(np.any(x == 0, axis=-1), 0.0, h)


class EvalReport:
    """Result of `evaluate`: rows, summaries, conventions and the locality predictions.

    Attributes:
        rows: one `MetricRow` per (request, metric present for it).
        suites: the suites evaluated.
        conventions: {name: text}; general entries ("scoring", "aggregation", ...) and
            one per metric.
        predictions: this model's argmax over every locality span, keyed by
            `knowedit.prediction_key`; passing this report as `pre=` to a later call
            measures locality against them (no recomputation).
        meta: model name, counts, settings, timing, versions.
        pre: the report passed as `pre=` (its means show in the table's "pre" column).
    """

    def __init__(
        self,
        rows: Sequence[MetricRow],
        suites: Sequence[str],
        conventions: Mapping[str, str],
        predictions: Mapping[str, Mapping[str, list[int]]] | None = None,
        meta: Mapping[str, Any] | None = None,
        pre: EvalReport | None = None,
        n_boot: int = 2000,
        seed: int = 0,
    ):
        self.rows = list(rows)
        self.suites = tuple(suites)
        self.conventions = dict(conventions)
        self.predictions = dict(predictions or {})
        self.meta = dict(meta or {})
        self.pre = pre
        self.n_boot = int(n_boot)
        self.seed = int(seed)
        self._summary: dict[str, MetricSummary] | None = None

    # ---- access --------------------------------------------------------------------------

    @property
    def metrics(self) -> list[str]:
        """Metrics present, in display order (score included when its parts are present)."""
        present = {r.metric for r in self.rows}
        if "counterfact" in self.suites and all(p in present for p in counterfact.SCORE_PARTS):
            present.add("score")
        known = [m for m in METRIC_ORDER if m in present]
        return known + sorted(present - set(known))

    def values(self, metric: str) -> list[float]:
        return [r.value for r in self.rows if r.metric == metric]

    def value(self, position: int, metric: str) -> float | None:
        """The value of `metric` for the request at `position`, None when absent."""
        for r in self.rows:
            if r.position == position and r.metric == metric:
                return r.value
        return None

    def by_request(self) -> dict[int, dict[str, float]]:
        out: dict[int, dict[str, float]] = {}
        for r in self.rows:
            out.setdefault(r.position, {})[r.metric] = r.value
        return out

    # ---- summaries -----------------------------------------------------------------------

    def summary(self) -> dict[str, MetricSummary]:
        """{metric: MetricSummary}; absent metrics are absent here too."""
        if self._summary is None:
            self._summary = {m: self._summarise(m) for m in self.metrics}
        return self._summary

    def _summarise(self, metric: str) -> MetricSummary:
        if metric == "score":
            return self._summarise_score()
        v = np.asarray(self.values(metric), dtype=np.float64)
        means = np.concatenate(
            [v[idx].mean(axis=1) for idx in _boot_indices(_rng(self.seed, metric), len(v), self.n_boot)]
        )
        lo, hi = np.percentile(means, [2.5, 97.5])
        return MetricSummary(metric, suite_of(metric), float(v.mean()), float(lo), float(hi), len(v))

    def _summarise_score(self) -> MetricSummary:
        # requests x parts, NaN where a request lacks a part; resample requests (paired)
        positions = sorted({r.position for r in self.rows if r.metric in counterfact.SCORE_PARTS})
        col = {m: j for j, m in enumerate(counterfact.SCORE_PARTS)}
        row = {p: i for i, p in enumerate(positions)}
        mat = np.full((len(positions), len(col)), np.nan)
        for r in self.rows:
            if r.metric in col:
                mat[row[r.position], col[r.metric]] = r.value
        point = float(_hmean(np.nanmean(mat, axis=0)))
        draws = []
        # a resample can miss a part entirely: numpy warns "mean of empty slice", the draw
        # is NaN and nanpercentile drops it
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            for idx in _boot_indices(_rng(self.seed, "score"), len(positions), self.n_boot):
                draws.append(_hmean(np.nanmean(mat[idx], axis=1)))  # (k,)
        lo, hi = np.nanpercentile(np.concatenate(draws), [2.5, 97.5])
        return MetricSummary("score", "counterfact", point, float(lo), float(hi), len(positions))

    # ---- text ----------------------------------------------------------------------------

    def table(self) -> str:
        """A plain-text table of the summaries followed by the conventions."""
        summ = self.summary()
        pre = self.pre.summary() if self.pre is not None else {}
        head = self.meta.get("model", "?")
        lines = [
            f"golden-fast evaluation: model {head}, {self.meta.get('n_requests', '?')} requests, "
            f"suites {'+'.join(self.suites)}" + (" (pre-edit reference)" if self.pre is None else "")
        ]
        cols = f"{'metric':<24}{'suite':<13}{'n':>6}  {'mean':>8}  {'95% CI':<19}"
        if self.pre is not None:
            cols += f"{'pre':>8}"
        lines += [cols, "-" * len(cols)]
        for m, s in summ.items():
            line = f"{m:<24}{s.suite:<13}{s.n:>6}  {s.mean:>8.4f}  [{s.lo:.4f}, {s.hi:.4f}]"
            if self.pre is not None:
                line = f"{line:<{len(cols) - 8}}" + (f"{pre[m].mean:>8.4f}" if m in pre else f"{'-':>8}")
            lines.append(line)
        if not summ:
            lines.append("(no metric applies to these requests)")
        lines.append("conventions:")
        for name, text in self.conventions.items():
            lines.append(f"  {name}: {text}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"EvalReport({len(self.rows)} rows, metrics={self.metrics}, pre={'yes' if self.pre else 'no'})"

    # ---- serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": _FORMAT_VERSION,
            "suites": list(self.suites),
            "meta": self.meta,
            "conventions": self.conventions,
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "summary": {m: dataclasses.asdict(s) for m, s in self.summary().items()},
            "predictions": self.predictions,
            "n_boot": self.n_boot,
            "seed": self.seed,
            # one level only: a chain of reports (each the pre of the next) must not nest forever
            "pre": self.pre._without_pre().to_dict() if self.pre is not None else None,
        }

    @classmethod
    def concat(cls, reports: Sequence[EvalReport], positions: Sequence[int] | None = None,
               pre: EvalReport | None = None) -> EvalReport:
        """One report from several (single-edit evaluation: one report per edited request).

        positions: the position each report's requests take in the combined list (default: in
        order, each report shifted by the requests before it). Suites and conventions must agree:
        numbers measured under different conventions are not averaged together.
        """
        if not reports:
            raise ValueError("concat: no reports")
        first = reports[0]
        for i, r in enumerate(reports[1:], 1):
            if r.suites != first.suites or r.conventions != first.conventions:
                raise ValueError(f"concat: report {i} was measured with other suites or conventions")
        rows, offset = [], 0
        for i, r in enumerate(reports):
            n = int(r.meta.get("n_requests", 1 + max((x.position for x in r.rows), default=-1)))
            shift = positions[i] if positions is not None else offset
            rows += [dataclasses.replace(x, position=x.position + shift) for x in r.rows]
            offset += n
        meta = dict(first.meta, n_requests=offset if positions is None else 1 + max(positions))
        return cls(rows, first.suites, first.conventions, first.predictions, meta,
                   pre if pre is not None else first.pre, first.n_boot, first.seed)

    def _without_pre(self) -> EvalReport:
        return EvalReport(
            self.rows,
            self.suites,
            self.conventions,
            self.predictions,
            self.meta,
            None,
            self.n_boot,
            self.seed,
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalReport:
        if d.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported EvalReport format_version {d.get('format_version')!r}")
        return cls(
            rows=[MetricRow(**r) for r in d["rows"]],
            suites=d["suites"],
            conventions=d["conventions"],
            predictions=d.get("predictions") or {},
            meta=d.get("meta") or {},
            pre=cls.from_dict(d["pre"]) if d.get("pre") else None,
            n_boot=d.get("n_boot", 2000),
            seed=d.get("seed", 0),
        )

    def to_json(self, path: str | Path | None = None, indent: int | None = 1) -> str:
        """JSON text (also written to `path` when given); `from_json` inverts it."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=True)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> EvalReport:
        """From JSON text or a path to a file written by `to_json`."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))

    def to_csv(self, path: str | Path | None = None, summary: bool = False) -> str:
        """CSV of the rows (position, index, case_id, metric, value, n), or of the summaries."""
        buf = io.StringIO()
        if summary:
            fields = [f.name for f in dataclasses.fields(MetricSummary)]
            w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
            w.writeheader()
            for s in self.summary().values():
                w.writerow(dataclasses.asdict(s))
        else:
            w = csv.DictWriter(buf, fieldnames=list(_CSV_FIELDS), lineterminator="\n")
            w.writeheader()
            for r in self.rows:
                w.writerow({**dataclasses.asdict(r), "value": repr(r.value)})
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text
