"""How reliably a locator finds the golden band, measured on a recorded brute-force grid (FORMULAS.md,
section "Hybrid locator and golden band").

A brute-force run over a pool of facts x every layer (`brute_force`, its pairs.jsonl) is the ground
truth: `Pool` holds its matrix of one metric ("overall" by default), `LookupScorer` answers a trial
edit (fact, layer) from it instead of editing and counts the edits it would have made. Proxy sets
are drawn from the pool (sizes 5, 10, 20, 50, 100; 20 draws each, without replacement, seeded; the
same sets for every locator), each locator chooses a layer from its proxy set, and
`resample_locators` reports, per locator and size, how often the chosen layer lies in the band and
the mean cost in edits.

Locators (`Locator`: (pool, rows, seed) -> Pick):
- `proxy_brute()`: argmax of the column means over the sampled facts; cost = facts x layers.
- `hybrid_lookup(lga=..., shortlist=...)`: successive halving (`golden_fast.locate.hybrid`) with the
  look-up scorer; LGA's shortlist from per-fact LGA scores of the pool (their mean over the sampled
  facts, Tukey filter, top c) or a fixed shortlist; cost = distinct pairs looked up.
- `lga_only(lga)`: LGA's own choice from the same per-fact scores; cost 0 edits.
- `cma_only(per_fact)`: causal tracing's choice, the argmax of the mean per-fact indirect effect
  (`cma_matrix`) over the sampled facts; cost 0 edits.

A pool may come from several results files (`Pool.from_pairs([...])`, merged by fact key). `add_costs`
prices each row in seconds (edits x seconds per edit + set size x a locator's seconds per fact) and
as a ratio to a reference brute force; `cost_table` prints the rows as Markdown.

The band is judged on the same pool the proxy sets come from (in-sample): a draw of 100 from a pool
of 100 is the pool itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from golden_fast.locate.band import GoldenBand, golden_band, metric_matrix

__all__ = [
    "LookupScorer",
    "Pick",
    "Pool",
    "ResampleReport",
    "add_costs",
    "cma_matrix",
    "cma_only",
    "cost_table",
    "hybrid_lookup",
    "lga_matrix",
    "lga_only",
    "lga_per_fact",
    "proxy_brute",
    "read_pairs",
    "resample_locators",
]

SIZES = (5, 10, 20, 50, 100)


# ---- the ground truth --------------------------------------------------------------------------


def _pairs_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p / "pairs.jsonl" if p.is_dir() else p


def read_pairs(path: str | os.PathLike) -> dict[str, dict[int, dict[str, float]]]:
    """key -> layer -> metrics (None values left out) of one brute-force results file."""
    p = _pairs_file(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such results file")
    # only read, never repaired: the file may belong to a run still appending to it, whose torn last
    # line (a row being written) is left out here
    text = p.read_text(encoding="utf-8")
    text = text[: text.rfind("\n") + 1]
    rows: dict[str, dict[int, dict[str, float]]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}:{lineno}: not JSON ({exc})") from None
        rows.setdefault(str(row["key"]), {})[int(row["layer"])] = {
            k: v for k, v in (row.get("metrics") or {}).items() if v is not None
        }
    return rows


@dataclasses.dataclass
class Pool:
    """A fact pool's ground truth: values[fact, layer] of one metric after editing the fact alone at
    the layer (facts without that metric left out), with the facts' keys (brute force's
    `request_key`, "case:<id>") and the keys of facts left out (incomplete, or metric absent)."""

    values: np.ndarray
    layers: list[int]
    keys: list[str]
    metric: str = "overall"
    dropped: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim != 2 or self.values.shape != (len(self.keys), len(self.layers)):
            raise ValueError(f"Pool: values {self.values.shape} for {len(self.keys)} facts x {len(self.layers)} layers")
        if not np.isfinite(self.values).all():
            raise ValueError("Pool: non-finite value")

    @property
    def n(self) -> int:
        return len(self.keys)

    @classmethod
    def from_result(cls, result: Any, metric: str = "overall") -> Pool:
        """From a `BruteForceResult` (M[fact, layer, metric])."""
        values, have = metric_matrix(result.M, result.metrics, metric)
        keys = [k for k, h in zip(result.keys, have) if h]
        return cls(values, list(result.layers), keys, metric, [k for k, h in zip(result.keys, have) if not h])

    @classmethod
    def from_pairs(
        cls,
        path: str | os.PathLike | Sequence[str | os.PathLike],
        metric: str = "overall",
        layers: Sequence[int] | None = None,
    ) -> Pool:
        """From one or several brute-force results files (DIR/pairs.jsonl or DIR): one JSON line per
        (fact, layer) with "key", "layer" and "metrics". Several files are merged by key (a key in two
        files is an error unless its rows are identical there). Facts missing any of `layers`
        (default: every layer found) are left out and listed in `dropped` (a grid still being
        computed); facts in order of first appearance, file by file. Read only."""
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        if not paths:
            raise ValueError("Pool.from_pairs: no file")
        rows: dict[str, dict[int, dict[str, float]]] = {}
        for p in paths:
            for key, got in read_pairs(p).items():
                if key in rows and rows[key] != got:
                    raise ValueError(f"{_pairs_file(p)}: fact {key} is also in an earlier file, with other rows")
                rows.setdefault(key, got)
        if not rows:
            raise ValueError(f"{[str(p) for p in paths]}: no pair")
        return cls._from_rows(rows, metric, layers, paths)

    @classmethod
    def _from_rows(
        cls,
        rows: Mapping[str, Mapping[int, Mapping[str, float]]],
        metric: str,
        layers: Sequence[int] | None,
        source: Any,
    ) -> Pool:
        all_layers = sorted({layer for d in rows.values() for layer in d})
        want = all_layers if layers is None else [int(x) for x in layers]
        complete = [k for k, d in rows.items() if all(layer in d for layer in want)]
        if not complete:
            raise ValueError(f"{source}: no fact has every layer of {want}")
        metrics: list[str] = []
        for k in complete:
            for layer in want:
                for m in rows[k][layer]:
                    if m not in metrics:
                        metrics.append(m)
        M = np.full((len(complete), len(want), len(metrics)), np.nan)
        for i, k in enumerate(complete):
            for j, layer in enumerate(want):
                for m, v in rows[k][layer].items():
                    M[i, j, metrics.index(m)] = float(v)
        values, have = metric_matrix(M, metrics, metric)
        keys = [k for k, h in zip(complete, have) if h]
        dropped = [k for k in rows if k not in complete] + [k for k, h in zip(complete, have) if not h]
        return cls(values, want, keys, metric, dropped)

    def subset(self, keys: Sequence[str]) -> Pool:
        """The pool restricted to `keys` (in that order); an error names a key the pool lacks."""
        pos = {k: i for i, k in enumerate(self.keys)}
        missing = [k for k in keys if k not in pos]
        if missing:
            raise KeyError(f"Pool.subset: {len(missing)} key(s) not in the pool, e.g. {missing[:3]}")
        rows = [pos[k] for k in keys]
        return Pool(self.values[rows], list(self.layers), list(keys), self.metric, list(self.dropped))

    def band(self, **kwargs: Any) -> GoldenBand:
        """`golden_band` of the whole pool (kwargs: n_boot, seed, confidence)."""
        return golden_band(self.values, self.layers, **kwargs)


class LookupScorer:
    """A scorer for `successive_halving` that answers from the pool instead of editing.

    rows: the pool rows of the proxy facts (fact i of the halving is pool row rows[i]; None: the
    pool's own order). `n_edits`: distinct (fact, layer) pairs asked for, the edits a real run
    would have made; `calls`: every call, repeats included.
    """

    def __init__(self, values: np.ndarray, layers: Sequence[int], rows: Sequence[int] | None = None) -> None:
        self.values = np.asarray(values, dtype=np.float64)
        self.col = {int(layer): j for j, layer in enumerate(layers)}
        self.rows = np.arange(len(self.values)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.asked: set[tuple[int, int]] = set()
        self.calls = 0

    def __call__(self, i: int, layer: int) -> float:
        if int(layer) not in self.col:
            raise KeyError(f"LookupScorer: layer {layer} is not in the pool ({sorted(self.col)})")
        self.calls += 1
        self.asked.add((int(i), int(layer)))
        return float(self.values[self.rows[int(i)], self.col[int(layer)]])

    @property
    def n_edits(self) -> int:
        return len(self.asked)


# ---- LGA's per-fact scores -----------------------------------------------------------------------


def lga_per_fact(ab: np.ndarray, aa: np.ndarray, bb: np.ndarray, variant: str = "signed") -> np.ndarray:
    """(n, L) per-fact LGA scores whose mean over a proxy set orders layers (and passes the Tukey
    filter) as that set's LGA score does: "signed" <a, b> (LGA sums it: the same order and filter),
    "cosine" <a, b> / (|a| |b|), "new_norm" |b|."""
    ab, aa, bb = (np.asarray(x, dtype=np.float64) for x in (ab, aa, bb))
    if variant == "signed":
        return ab
    if variant == "cosine":
        return ab / np.sqrt(aa * bb)
    if variant == "new_norm":
        return np.sqrt(bb)
    raise ValueError(f"unknown LGA variant {variant!r}; choose from signed, cosine, new_norm")


def lga_matrix(scores: Any, pool: Pool, variant: str | None = None) -> np.ndarray:
    """Per-fact LGA scores (pool.n, pool layers) from an LGA `LayerScores` (or its JSON file) run on
    the pool's facts: rows matched by key (extra["keys"] when recorded, brute force's `request_key`;
    else "case:<case_id>"), columns by layer. An error names any pool fact or layer LGA did not
    score."""
    from golden_fast.locate.scores import LayerScores

    if not isinstance(scores, LayerScores):
        scores = LayerScores.from_json(scores)
    ps = scores.extra.get("per_sample")
    reqs = scores.extra.get("requests")
    if not ps or not reqs:
        raise ValueError("lga_matrix: the LGA scores carry no per-sample products (extra['per_sample'])")
    per = lga_per_fact(ps["ab"], ps["aa"], ps["bb"], variant or scores.variant)
    row = _score_rows(scores.extra)
    missing = [k for k in pool.keys if k not in row]
    if missing:
        raise ValueError(f"lga_matrix: LGA did not score {len(missing)} pool fact(s), e.g. {missing[:3]}")
    gone = [layer for layer in pool.layers if layer not in scores.layers]
    if gone:
        raise ValueError(f"lga_matrix: LGA did not score layer(s) {gone}")
    cols = [scores.layers.index(layer) for layer in pool.layers]
    return per[np.ix_([row[k] for k in pool.keys], cols)]


def _score_rows(extra: Mapping[str, Any]) -> dict[str, int]:
    """Fact key -> row of a locating run's per-request arrays: extra["keys"] when the run recorded
    them (any key, "sha:..." included), else "case:<case_id>" of extra["requests"]."""
    if extra.get("keys") is not None:
        return {str(k): i for i, k in enumerate(extra["keys"])}
    reqs = extra.get("requests") or []
    return {f"case:{r['case_id']}": i for i, r in enumerate(reqs) if r.get("case_id") is not None}


# ---- causal tracing's per-fact scores ------------------------------------------------------------


def cma_matrix(scores: Any, pool: Pool) -> np.ndarray:
    """Per-fact indirect effects IE_i(l) = P_restored - P_corrupted (pool.n, pool layers) from a CMA
    `LayerScores` (or its JSON file): rows matched by extra["keys"], columns by layer. Pool facts
    the run did not trace (or skipped) are NaN rows."""
    from golden_fast.locate.scores import LayerScores

    if not isinstance(scores, LayerScores):
        scores = LayerScores.from_json(scores)
    ex = scores.extra
    if ex.get("keys") is None or ex.get("p_restored") is None or ex.get("p_corrupted") is None:
        raise ValueError("cma_matrix: the CMA scores carry no per-fact curves with keys (extra['keys'], 'p_restored')")
    ie = np.asarray(ex["p_restored"], dtype=np.float64) - np.asarray(ex["p_corrupted"], dtype=np.float64)[:, None]
    gone = [layer for layer in pool.layers if layer not in scores.layers]
    if gone:
        raise ValueError(f"cma_matrix: CMA did not trace layer(s) {gone}")
    cols = [scores.layers.index(layer) for layer in pool.layers]
    row = _score_rows(ex)
    out = np.full(pool.values.shape, np.nan)
    for i, k in enumerate(pool.keys):
        if k in row:
            out[i] = ie[row[k], cols]
    return out


# ---- locators ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pick:
    """A locator's choice on one proxy set: the layer, its cost in edits, and details."""

    layer: int
    edits: int
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


Locator = Callable[[Pool, np.ndarray, int], Pick]


def proxy_brute(first: int | None = None) -> Locator:
    """Brute force on the proxy set: argmax of the column means of the sampled facts (ties: the
    lower layer); cost = facts x layers. `first`: only the first so many facts of each set (all when
    it has fewer), e.g. brute force at the cost another locator is allowed."""
    if first is not None and int(first) < 1:
        raise ValueError(f"proxy_brute: first must be >= 1, got {first!r}")

    def pick(pool: Pool, rows: np.ndarray, seed: int) -> Pick:
        used = rows if first is None else rows[: int(first)]
        mean = pool.values[used].mean(0)
        return Pick(pool.layers[int(np.argmax(mean))], len(used) * len(pool.layers))

    return pick


def _check_lga(lga: np.ndarray | None, pool: Pool) -> np.ndarray:
    x = np.asarray(lga, dtype=np.float64)
    if x.shape != pool.values.shape:
        raise ValueError(f"per-fact LGA scores {x.shape} do not match the pool {pool.values.shape}")
    return x


def lga_only(lga: np.ndarray, tukey_k: float | None = 1.0) -> Locator:
    """LGA alone: the best kept layer of the mean per-fact LGA score (pool.n, layers) over the
    sampled facts; cost 0 edits."""
    from golden_fast.locate.hybrid import lga_shortlist

    def pick(pool: Pool, rows: np.ndarray, seed: int) -> Pick:
        x = _check_lga(lga, pool)
        return Pick(lga_shortlist(pool.layers, x[rows].mean(0), tukey_k, 1)[0], 0)

    return pick


def hybrid_lookup(
    lga: np.ndarray | None = None,
    shortlist: Sequence[int] | None = None,
    *,
    c: int | str = 8,
    n0: int | None = None,
    budget_per_layer: float = 2.0,
    eta: int = 2,
    tukey_k: float | None = 1.0,
    confidence: float = 0.95,
    n_boot: int = 2000,
    early_stop: bool = True,
    min_stop_facts: int = 8,
) -> Locator:
    """The hybrid locator on the pool: the shortlist from per-fact LGA scores `lga` (pool.n, layers;
    their mean over the sampled facts, Tukey filter, top c), every layer (c = "all": no LGA) or a
    fixed `shortlist` (best first), then successive halving (keeping ceil(1/eta) a round) with a
    `LookupScorer` over the sampled facts in their drawn order; cost = the pairs looked up. n0 None:
    the library's budget rule (`budget_n0`, and the cap of budget_per_layer x layers edits), as
    `HybridConfig`."""
    from golden_fast.locate.hybrid import budget_edits, budget_n0, lga_shortlist, successive_halving

    if c == "all":
        if lga is not None or shortlist is not None:
            raise ValueError("hybrid_lookup: c='all' takes every layer; give neither lga nor shortlist")
    elif (lga is None) == (shortlist is None):
        raise ValueError("hybrid_lookup: give exactly one of lga (per-fact scores) and shortlist")

    def pick(pool: Pool, rows: np.ndarray, seed: int) -> Pick:
        if c == "all":
            short = list(pool.layers)
        elif shortlist is not None:
            short = [int(x) for x in shortlist]
        else:
            short = lga_shortlist(pool.layers, _check_lga(lga, pool)[rows].mean(0), tukey_k, int(c))
        scorer = LookupScorer(pool.values, pool.layers, rows)
        first = n0 if n0 is not None else budget_n0(len(short), len(pool.layers), len(rows), budget_per_layer,
                                                    eta=eta)
        budget = budget_edits(n0, len(pool.layers), budget_per_layer)
        hv = successive_halving(
            scorer,
            short,
            len(rows),
            n0=first,
            confidence=confidence,
            n_boot=n_boot,
            seed=seed,
            early_stop=early_stop,
            min_stop_facts=min_stop_facts,
            eta=eta,
            budget=budget,
        )
        return Pick(
            hv.chosen,
            scorer.n_edits,
            {"shortlist": short, "rounds": len(hv.rounds), "stopped_early": hv.stopped_early,
             "budget_spent": hv.budget_spent},
        )

    return pick


def cma_only(per_fact: np.ndarray) -> Locator:
    """Causal tracing alone: the argmax of the mean per-fact indirect effect (pool.n, layers) over
    the sampled facts (ties: the lower layer; no filter, CMA's default); cost 0 edits. Every sampled
    fact must have a curve (draw from the traced facts only: `Pool.subset`)."""

    def pick(pool: Pool, rows: np.ndarray, seed: int) -> Pick:
        x = np.asarray(per_fact, dtype=np.float64)
        if x.shape != pool.values.shape:
            raise ValueError(f"per-fact CMA scores {x.shape} do not match the pool {pool.values.shape}")
        sub = x[rows]
        if np.isnan(sub).any():
            raise ValueError("cma_only: a sampled fact has no causal trace; draw from the traced facts only")
        return Pick(pool.layers[int(np.argmax(sub.mean(0)))], 0)

    return pick


# ---- the resampling ------------------------------------------------------------------------------


@dataclasses.dataclass
class ResampleReport:
    """Per locator and proxy-set size: draws, hits (chosen layer in the band), hit rate, mean
    edits, and every draw's choice and cost. `skipped`: sizes larger than the pool."""

    band: list[int]
    golden: int | None
    rows: list[dict[str, Any]]
    skipped: list[int]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def row(self, locator: str, size: int) -> dict[str, Any]:
        for r in self.rows:
            if r["locator"] == locator and r["size"] == size:
                return r
        raise KeyError(f"no row for locator {locator!r} at size {size}")

    def table(self) -> str:
        """A text table: locator, size, hit rate (hits / draws), mean edits."""
        lines = [
            f"band {self.band}"
            + (f" (golden {self.golden})" if self.golden is not None else "")
            + f"; pool of {self.settings['pool']} facts, {self.settings['draws']} draws per size",
            f"  {'locator':<24}{'size':>5}{'in band':>13}{'mean edits':>12}",
        ]
        for r in self.rows:
            lines.append(
                f"  {r['locator']:<24}{r['size']:>5}{r['hit_rate']:>7.2f} ({r['hits']:>2}/{r['draws']:<2})"
                f"{r['mean_edits']:>12.1f}"
            )
        if self.skipped:
            lines.append(f"  sizes larger than the pool, skipped: {self.skipped}")
        return "\n".join(lines)


def resample_locators(
    pool: Pool,
    locators: Mapping[str, Locator],
    band: GoldenBand | Sequence[int] | None = None,
    sizes: Sequence[int] = SIZES,
    draws: int = 20,
    seed: int = 0,
) -> ResampleReport:
    """Run each locator on proxy sets drawn from the pool and score its choices against the band.

    For each size s (those above pool.n are skipped) and draw d: rows = s distinct pool facts
    (`default_rng(seed)`, drawn in turn for every (size, draw); their order is the proxy order),
    the same rows for every locator; each locator gets the seed default_rng((seed, s, d)) draws
    for its own randomness (the halving's bootstrap). band: a `GoldenBand`, a list of layers, or
    None (the pool's `golden_band`, default settings).
    """
    if int(draws) < 1:
        raise ValueError(f"resample_locators: draws must be >= 1, got {draws!r}")
    if not locators:
        raise ValueError("resample_locators: no locator")
    gb = pool.band() if band is None else band
    golden = gb.golden if isinstance(gb, GoldenBand) else None
    in_band = set(gb.band if isinstance(gb, GoldenBand) else (int(x) for x in gb))
    rng = np.random.default_rng(seed)
    rows_out: list[dict[str, Any]] = []
    skipped = [int(s) for s in sizes if s > pool.n]
    for s in sizes:
        if s > pool.n:
            continue
        if int(s) < 1:
            raise ValueError(f"resample_locators: sizes must be >= 1, got {s!r}")
        sets = [rng.choice(pool.n, size=int(s), replace=False) for _ in range(int(draws))]
        seeds = [int(np.random.default_rng((int(seed), int(s), d)).integers(2**31 - 1)) for d in range(int(draws))]
        for name, loc in locators.items():
            picks = [loc(pool, rows, sd) for rows, sd in zip(sets, seeds)]
            hits = sum(p.layer in in_band for p in picks)
            rows_out.append(
                {
                    "locator": name,
                    "size": int(s),
                    "draws": int(draws),
                    "hits": int(hits),
                    "hit_rate": hits / int(draws),
                    "mean_edits": float(np.mean([p.edits for p in picks])),
                    "chosen": [int(p.layer) for p in picks],
                    "edits": [int(p.edits) for p in picks],
                    "info": [p.info for p in picks],
                }
            )
    return ResampleReport(
        band=sorted(in_band),
        golden=golden,
        rows=rows_out,
        skipped=skipped,
        settings={
            "pool": pool.n,
            "layers": pool.layers,
            "metric": pool.metric,
            "sizes": [int(s) for s in sizes],
            "draws": int(draws),
            "seed": int(seed),
            "sampling": "without replacement, default_rng(seed).choice per (size, draw), same sets for every locator",
        },
    )


# ---- costs ----------------------------------------------------------------------------------------


def add_costs(
    rows: Sequence[Mapping[str, Any]],
    seconds_per_edit: float,
    seconds_per_fact: Mapping[str, float],
    reference_edits: int,
) -> list[dict[str, Any]]:
    """The report's rows with their cost in seconds and as a ratio to a reference brute force.

    A draw's seconds = its edits x seconds_per_edit + the set size x seconds_per_fact[locator] (a
    locator's per-fact pass over the proxy set: LGA, causal tracing; 0 when not named). Added per
    row: "mean_seconds", "edit_ratio" = mean edits / reference_edits and "seconds_ratio" = mean
    seconds / (reference_edits x seconds_per_edit)."""
    if not (seconds_per_edit > 0 and reference_edits > 0):
        raise ValueError(
            f"add_costs: seconds_per_edit and reference_edits must be > 0, got "
            f"{seconds_per_edit!r}, {reference_edits!r}"
        )
    ref_seconds = reference_edits * seconds_per_edit
    out = []
    for r in rows:
        per_fact = float(seconds_per_fact.get(r["locator"], 0.0))
        seconds = [e * seconds_per_edit + r["size"] * per_fact for e in r["edits"]]
        mean_seconds = float(np.mean(seconds))
        out.append(
            dict(r)
            | {
                "mean_seconds": mean_seconds,
                "edit_ratio": r["mean_edits"] / reference_edits,
                "seconds_ratio": mean_seconds / ref_seconds,
            }
        )
    return out


def cost_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: locator, size, in-band rate (hits / draws), mean edits and seconds, and their ratios
    to the reference brute force (rows from `add_costs`)."""
    lines = [
        "| locator | size | in band | mean edits | edits / brute | mean seconds | seconds / brute |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['locator']} | {r['size']} | {r['hit_rate']:.0%} ({r['hits']}/{r['draws']}) | "
            f"{r['mean_edits']:.1f} | {r['edit_ratio']:.3f} | {r['mean_seconds']:.0f} | {r['seconds_ratio']:.3f} |"
        )
    return "\n".join(lines)
