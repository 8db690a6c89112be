"""The hybrid locator (FORMULAS.md, section "Hybrid locator and golden band"): LGA shortlists, trial
edits decide.

1. LGA on the proxy facts; its Tukey filter drops outlying layers; the c best kept layers, best
   first, are the shortlist (c = 8 by default).
2. Successive halving with trial edits: every shortlisted layer edits the first n0 proxy facts
   (by default the largest n0 <= 4 whose full schedule costs at most 2 trial edits per candidate
   layer, a tenth of brute force on 20 proxy facts: `budget_n0`), each alone, with the brute-force
   editor (R-ROME by default; edit, evaluate, revert, `golden_fast.locate.brute_force`) and is
   scored by the mean metric ("overall" by default); the better half stays, the number of facts
   doubles (a surviving layer keeps the facts it has already edited and edits only the new ones),
   until one layer is left. It stops early when the leading layer's paired bootstrap interval of
   mean_i [s(i, leader) - s(i, l)] lies above 0 for every other remaining layer l (95% by default;
   checked once at least `min_stop_facts` facts are scored).

The halving is `successive_halving(scorer, candidates, n_facts)`; a scorer is any function
(fact index, layer) -> metric value. `EditScorer` is the real one (it edits); the look-up scorer
of `golden_fast.locate.resample` answers from a brute-force matrix, so the logic runs on synthetic
or recorded layer curves with no model. A scorer may also offer `score_many(pairs)`, which the
halving uses to hand it a round's pairs at once (EditScorer then edits them in one brute-force
call: one pre-edit evaluation, one statistics pass, one resumable results file).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from golden_fast.locate.band import metric_matrix, paired_intervals

__all__ = [
    "TRIAL_SCORES",
    "EditScorer",
    "Halving",
    "HybridConfig",
    "Round",
    "budget_edits",
    "budget_n0",
    "full_schedule_edits",
    "hybrid",
    "hybrid_scores",
    "lga_shortlist",
    "metric_label",
    "rounds_table",
    "successive_halving",
]

Scorer = Callable[[int, int], float]

#: trial-edit scores by name: (evaluation suites, metric). "accuracies" is knowedit's overall (what the
#: golden band is judged on); "probabilities" suite soft's overall; "mixed" the probabilities of the new
#: answer with knowedit's locality (argmax agreement), see FORMULAS.md "Suite soft"
TRIAL_SCORES: dict[str, tuple[tuple[str, ...], str | tuple[str, ...]]] = {
    "accuracies": (("knowedit",), "overall"),
    "probabilities": (("soft",), "overall"),
    "mixed": (("knowedit", "soft"), ("rewrite_prob", "rephrase_prob", "locality")),
}


# ---- the halving -------------------------------------------------------------------------------


@dataclasses.dataclass
class Round:
    """One round of successive halving.

    Attributes:
        index: 0, 1, ...
        layers: the layers still in the race, in shortlist order.
        n_facts: facts each of them has been scored on (the first n_facts proxy facts).
        means: per layer (aligned with `layers`), the mean score over those facts.
        new_edits: (fact, layer) pairs scored in this round (the others were known).
        seconds: wall time of the round (scoring included).
        leader: the layer with the highest mean (ties: the earlier in the shortlist).
        lo, hi: per layer, the paired bootstrap interval of mean [s(leader) - s(layer)], when the
            early stop was checked this round (None otherwise; the leader's own is [0, 0]).
        stopped: the early stop fired: the leader is chosen.
        kept: the layers that go on to the next round (the leader alone when this round ends it).
    """

    index: int
    layers: list[int]
    n_facts: int
    means: list[float]
    new_edits: int
    seconds: float
    leader: int
    lo: list[float] | None
    hi: list[float] | None
    stopped: bool
    kept: list[int]


@dataclasses.dataclass
class Halving:
    """What successive halving chose and what it cost.

    Attributes:
        chosen: the chosen layer.
        ranking: every candidate, best first: by the last round it reached, then its mean there,
            then shortlist order.
        candidates: the shortlist it started from, best first.
        rounds: the rounds, in order.
        n_edits: distinct (fact, layer) pairs scored (each scored once: the cost in trial edits).
        stopped_early: the early stop fired before one layer was left.
        values: the score of every pair scored, {(fact, layer): value}.
        seconds: wall time of the whole halving.
        settings: n_facts, n0, eta, budget, confidence, n_boot, seed, early_stop, min_stop_facts.
        budget_spent: the budget cut the last round short (or left no edit for it): its leader is chosen.
    """

    chosen: int
    ranking: list[int]
    candidates: list[int]
    rounds: list[Round]
    n_edits: int
    stopped_early: bool
    values: dict[tuple[int, int], float]
    seconds: float
    settings: dict[str, Any]
    budget_spent: bool = False

    def mean_of(self, layer: int) -> float:
        """The layer's mean score over the facts it was scored on (NaN: never scored)."""
        v = [x for (_, layer_), x in self.values.items() if layer_ == layer]
        return float(np.mean(v)) if v else math.nan

    def facts_of(self, layer: int) -> int:
        """How many facts the layer was scored on."""
        return sum(1 for (_, layer_) in self.values if layer_ == layer)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["values"] = [[int(i), int(layer), float(v)] for (i, layer), v in sorted(self.values.items())]
        return d


def full_schedule_edits(c: int, n0: int, n_facts: int, eta: int = 2) -> int:
    """Trial edits of successive halving run to the end with no early stop and no budget: c layers x
    n0 facts, then keeping ceil(1/eta) of the layers and multiplying the facts by eta (at most
    n_facts), new facts only."""
    if c <= 1:
        return 0
    total, alive, n, have = 0, c, min(n0, n_facts), 0
    while True:
        total += alive * (n - have)
        alive_next = math.ceil(alive / eta)
        if alive_next == 1:
            return total
        alive, have, n = alive_next, n, min(eta * n, n_facts)


def budget_n0(c: int, n_layers: int, n_facts: int, budget_per_layer: float = 2.0, most: int = 4, eta: int = 2) -> int:
    """First-round facts of a halving over c shortlisted layers: the largest n0 <= `most` whose full
    schedule costs at most budget_per_layer x n_layers trial edits (1 when none does: the budget then
    cuts the schedule short, see `successive_halving`). The default, 2 edits per candidate layer, is a
    tenth of brute force on 20 proxy facts: 8 layers x 3 facts (48 edits) of a 30-layer model, 8 x 2
    (32) of an 18-layer one."""
    for n0 in range(most, 0, -1):
        if full_schedule_edits(c, n0, n_facts, eta) <= budget_per_layer * n_layers:
            return n0
    return 1


def budget_edits(n0: int | None, n_layers: int, budget_per_layer: float = 2.0) -> int | None:
    """The halving's cap in trial edits: budget_per_layer x n_layers when n0 follows the budget rule
    (n0 None, `budget_n0`), else none (a given n0 runs its schedule in full)."""
    return None if n0 is not None else int(budget_per_layer * n_layers)


def _check_schedule(n0: int, n_facts: int, confidence: float, n_boot: int, min_stop_facts: int,
                    eta: int = 2, budget: int | None = None) -> None:
    if isinstance(n0, bool) or int(n0) != n0 or n0 < 1:
        raise ValueError(f"successive halving: n0 must be a positive int, got {n0!r}")
    if isinstance(eta, bool) or int(eta) != eta or eta < 2:
        raise ValueError(f"successive halving: eta must be an int >= 2, got {eta!r}")
    if budget is not None and (isinstance(budget, bool) or int(budget) != budget or budget < 1):
        raise ValueError(f"successive halving: budget must be a positive int of trial edits, got {budget!r}")
    if n_facts < 1:
        raise ValueError(f"successive halving: need at least one fact, got {n_facts}")
    if not 0 < confidence < 1:
        raise ValueError(f"successive halving: confidence must lie in (0, 1), got {confidence!r}")
    if int(n_boot) < 1 or int(min_stop_facts) < 0:
        raise ValueError(f"successive halving: n_boot >= 1 and min_stop_facts >= 0, got {n_boot}, {min_stop_facts}")


def _score(scorer: Any, pairs: list[tuple[int, int]]) -> list[float]:
    if not pairs:
        return []
    many = getattr(scorer, "score_many", None)
    out = list(many(pairs)) if many is not None else [scorer(i, layer) for i, layer in pairs]
    if len(out) != len(pairs):
        raise ValueError(f"scorer returned {len(out)} value(s) for {len(pairs)} pair(s)")
    vals = [float(v) for v in out]
    for (i, layer), v in zip(pairs, vals):
        if not math.isfinite(v):
            raise ValueError(f"scorer: non-finite value {v} for fact {i} at layer {layer}")
    return vals


def successive_halving(
    scorer: Scorer,
    candidates: Sequence[int],
    n_facts: int,
    *,
    n0: int = 4,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    early_stop: bool = True,
    min_stop_facts: int = 8,
    eta: int = 2,
    budget: int | None = None,
) -> Halving:
    """Successive halving over `candidates` (best first: ties go to the earlier one) with facts
    0 .. n_facts-1, each (fact, layer) pair scored once by `scorer`.

    Round r: every remaining layer is scored on the first n_r facts (n_0 = min(n0, n_facts),
    n_{r+1} = min(eta n_r, n_facts); only pairs not scored before are asked for). Then, if
    `early_stop` and n_r >= min_stop_facts, the paired bootstrap interval (facts resampled, the
    same resample for every layer, rng seeded by (seed, r)) of mean_i [s(i, leader) - s(i, l)] is
    computed for every other remaining layer; if every lower bound is > 0, the leader is chosen.
    Otherwise the best ceil(k / eta) of k (by mean) go on; with one left, it is chosen.
    A single candidate is chosen with no edit.

    `budget` (trial edits, None: none): a round whose new pairs would exceed what is left adds to
    every remaining layer only the facts the rest pays for evenly, and its leader is chosen; when
    not one more fact each is paid for, the previous round's leader is.
    """
    cands = [int(x) for x in candidates]
    if not cands:
        raise ValueError("successive halving: no candidate layer")
    if len(set(cands)) != len(cands):
        raise ValueError(f"successive halving: duplicate candidate layers in {cands}")
    n_facts = int(n_facts)
    _check_schedule(n0, n_facts, confidence, n_boot, min_stop_facts, eta, budget)
    settings = {
        "n_facts": n_facts,
        "n0": int(n0),
        "eta": int(eta),
        "budget": None if budget is None else int(budget),
        "confidence": float(confidence),
        "n_boot": int(n_boot),
        "seed": int(seed),
        "early_stop": bool(early_stop),
        "min_stop_facts": int(min_stop_facts),
    }
    t_start = time.perf_counter()
    values: dict[tuple[int, int], float] = {}
    rounds: list[Round] = []
    if len(cands) == 1:
        return Halving(cands[0], cands, cands, [], 0, False, values, 0.0, settings)
    if budget is not None and budget < len(cands):
        raise ValueError(f"successive halving: a budget of {budget} trial edits cannot score each of the "
                         f"{len(cands)} candidate layers once")
    position = {layer: j for j, layer in enumerate(cands)}
    last_round = {layer: 0 for layer in cands}
    remaining = list(cands)
    n = min(int(n0), n_facts)
    r = 0
    stopped_early = spent = False
    have = 0  # facts every remaining layer has been scored on (they all survived the same rounds)
    while True:
        t0 = time.perf_counter()
        need = [(i, layer) for layer in remaining for i in range(n) if (i, layer) not in values]
        if budget is not None and len(values) + len(need) > budget:
            spent = True
            n = min(n, have + (int(budget) - len(values)) // len(remaining))
            if n <= have:  # nothing more is paid for: the previous round's leader stands
                chosen = rounds[-1].leader
                break
            need = [(i, layer) for layer in remaining for i in range(n) if (i, layer) not in values]
        for pair, v in zip(need, _score(scorer, need)):
            values[pair] = v
        X = np.array([[values[(i, layer)] for layer in remaining] for i in range(n)])  # (n, k)
        means = X.mean(0)
        order = sorted(range(len(remaining)), key=lambda j: (-means[j], j))
        lead = order[0]
        lo = hi = None
        stop = False
        if early_stop and n >= min_stop_facts:
            lo_a, hi_a = paired_intervals(X[:, [lead]] - X, n_boot, np.random.default_rng((int(seed), r)), confidence)
            lo_a[lead] = hi_a[lead] = 0.0
            lo, hi = lo_a.tolist(), hi_a.tolist()
            stop = all(lo_a[j] > 0 for j in range(len(remaining)) if j != lead)
        if stop or spent:
            kept = [remaining[lead]]
        else:
            keep = set(order[: math.ceil(len(remaining) / eta)])
            kept = [layer for j, layer in enumerate(remaining) if j in keep]  # shortlist order
        for layer in remaining:
            last_round[layer] = r
        rounds.append(
            Round(
                index=r,
                layers=list(remaining),
                n_facts=n,
                means=means.tolist(),
                new_edits=len(need),
                seconds=time.perf_counter() - t0,
                leader=remaining[lead],
                lo=lo,
                hi=hi,
                stopped=stop,
                kept=kept,
            )
        )
        if stop or spent or len(kept) == 1:
            stopped_early = stop
            chosen = remaining[lead]
            break
        remaining = kept
        have = n
        n = min(eta * n, n_facts)
        r += 1
    final = {layer: (rd.means[rd.layers.index(layer)]) for rd in rounds for layer in rd.layers}  # last wins
    ranking = sorted(cands, key=lambda layer: (layer != chosen, -last_round[layer], -final[layer], position[layer]))
    return Halving(
        chosen=chosen,
        ranking=ranking,
        candidates=cands,
        rounds=rounds,
        n_edits=len(values),
        stopped_early=stopped_early,
        values=values,
        seconds=time.perf_counter() - t_start,
        settings=settings,
        budget_spent=spent,
    )


def rounds_table(rounds: Sequence[Round | Mapping[str, Any]]) -> str:
    """The rounds as text: facts, new edits, each layer's mean (and interval when checked)."""
    lines = []
    for rd in rounds:
        r = dataclasses.asdict(rd) if isinstance(rd, Round) else dict(rd)
        cells = []
        for j, layer in enumerate(r["layers"]):
            cell = f"{layer}: {r['means'][j]:.3f}"
            if r["lo"] is not None and layer != r["leader"]:
                cell += f" [{r['lo'][j]:+.3f}, {r['hi'][j]:+.3f}]"
            cells.append(cell)
        end = "stop: leader ahead of all" if r["stopped"] else f"keep {r['kept']}"
        lines.append(
            f"  round {r['index']}: {r['n_facts']} fact(s), {r['new_edits']} new edit(s); "
            + ", ".join(cells)
            + f"; {end}"
        )
    return "\n".join(lines)


# ---- the shortlist -----------------------------------------------------------------------------


def lga_shortlist(layers: Sequence[int], scores: Sequence[float], tukey_k: float | None = 1.0, c: int = 8) -> list[int]:
    """LGA's shortlist: the c layers with the highest score among those inside the Tukey fences
    (`select_layers`: fences inclusive, ties to the lower layer), best first."""
    from golden_fast.locate.scores import select_layers

    return select_layers(layers, scores, tukey_k, int(c))[0]


# ---- the real scorer ---------------------------------------------------------------------------


class EditScorer:
    """(fact index, layer) -> the metric after editing proxy fact i alone at that layer, evaluating
    and reverting (`brute_force`: same editor, evaluation and results file, so `out` makes it
    resumable and shares pairs with a brute-force run of the same settings).

    metric: "overall" (the mean of the metrics present for the fact), one metric's name, or a tuple
    of names (the mean of those present for the fact).
    `score_many(pairs)` edits a batch: the pairs are grouped by their set of layers and each group
    is one brute-force call. `pair_seconds`: the compute the scored pairs took (from the results
    file when resumed, as brute force reports it).
    """

    def __init__(
        self,
        model: Any,
        tok: Any,
        requests: Sequence[Any],
        editor: Any = None,
        *,
        out: Any = None,
        suites: Sequence[str] = ("knowedit",),
        metric: str = "overall",
        progress: bool = False,
    ) -> None:
        self.model, self.tok = model, tok
        self.requests = list(requests)
        self.editor, self.out, self.suites = editor, out, tuple(suites)
        self.metric, self.progress = metric, progress
        self.pair_seconds = 0.0
        self.calls = 0

    def __call__(self, i: int, layer: int) -> float:
        return self.score_many([(i, layer)])[0]

    def score_many(self, pairs: Sequence[tuple[int, int]]) -> list[float]:
        from golden_fast.locate.brute_force import brute_force
        from golden_fast.locate.golden import OVERALL, overall

        by_fact: dict[int, list[int]] = {}
        for i, layer in pairs:
            if not 0 <= int(i) < len(self.requests):
                raise IndexError(f"EditScorer: fact {i} out of range (0..{len(self.requests) - 1})")
            by_fact.setdefault(int(i), []).append(int(layer))
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, ls in by_fact.items():
            groups.setdefault(tuple(sorted(set(ls))), []).append(i)
        got: dict[tuple[int, int], float] = {}
        for layers, facts in groups.items():
            res = brute_force(
                self.model,
                self.tok,
                [self.requests[i] for i in facts],
                list(layers),
                self.editor,
                out=self.out,
                suites=self.suites,
                progress=self.progress,
            )
            self.calls += 1
            self.pair_seconds += float(res.seconds.sum())
            names = (self.metric,) if isinstance(self.metric, str) else tuple(self.metric)
            if self.metric == OVERALL:
                vals = overall(res.M, res.metrics, res.refs)
            elif set(names) <= set(res.metrics):
                vals = np.full(res.M.shape[:2], np.nan)  # facts without the metric stay NaN: named below
                got_rows, have = metric_matrix(res.M, res.metrics, names)
                vals[have] = got_rows
            else:
                raise ValueError(f"EditScorer: metric {self.metric!r} not measured; have {res.metrics} and 'overall'")
            for a, i in enumerate(facts):
                for b, layer in enumerate(res.layers):
                    if math.isnan(vals[a, b]):
                        raise ValueError(f"{res.refs[a]}: metric {self.metric!r} is absent for this fact")
                    got[(i, layer)] = float(vals[a, b])
        return [got[(int(i), int(layer))] for i, layer in pairs]


# ---- the locator -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HybridConfig:
    """Options of the hybrid locator (FORMULAS.md, "Hybrid locator and golden band").

    Args:
        shortlist: c, how many of LGA's best kept layers enter the halving (default 8), or "all":
            every candidate layer enters and LGA is not run (for models where LGA's ranking does not
            point at the golden band).
        n0: proxy facts each shortlisted layer edits in the first round (None, the default: the
            largest n0 <= 4 whose full schedule fits the budget, `budget_n0`).
        budget_per_layer: with n0 None, the trial edits per candidate layer at most (default 2: a
            tenth of brute force on 20 proxy facts); a schedule that does not fit even with n0 = 1
            is cut short there (`successive_halving`'s budget).
        eta: each round keeps ceil(1/eta) of the layers and multiplies the facts by eta (default 2).
        metric: the trial edits' score: "overall" (default: the mean of the metrics the suites report),
            a metric's name, or a tuple of names (the mean of those present for the fact).
        paraphrases: up to this many template paraphrases (`golden_fast.data.paraphrases`: the data
            set's other question templates of the fact's relation) appended to each proxy fact's
            rephrase prompts for its trial edits, so that a trial edit's rephrase is scored on several
            paraphrases (default 0: none); the templates are grouped over the proxy facts and the run's
            `paraphrase_source` (the whole data set).
        confidence: of the early stop's paired bootstrap intervals (default 0.95).
        n_boot, seed: that bootstrap's resamples and seed.
        early_stop: stop as soon as the leader is ahead of every other layer (default on).
        min_stop_facts: no early stop before this many facts are scored (default 8: a bootstrap
            over fewer facts is overconfident; with 4 facts all ahead, every resample is ahead).
        top_k: how many layers the result ranks in `top_k`.
    """

    shortlist: int | str = 8
    n0: int | None = None
    budget_per_layer: float = 2.0
    eta: int = 2
    metric: str | tuple[str, ...] = "overall"
    paraphrases: int = 0
    confidence: float = 0.95
    n_boot: int = 2000
    seed: int = 0
    early_stop: bool = True
    min_stop_facts: int = 8
    top_k: int = 1

    def __post_init__(self) -> None:
        for name in ("shortlist", "n0", "top_k", "n_boot"):
            v = getattr(self, name)
            if (name == "n0" and v is None) or (name == "shortlist" and v == "all"):
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                what = "a positive int or 'all'" if name == "shortlist" else "a positive int"
                raise ValueError(f"HybridConfig.{name} must be {what}, got {v!r}")
        if isinstance(self.eta, bool) or not isinstance(self.eta, int) or self.eta < 2:
            raise ValueError(f"HybridConfig.eta must be an int >= 2, got {self.eta!r}")
        if isinstance(self.paraphrases, bool) or not isinstance(self.paraphrases, int) or self.paraphrases < 0:
            raise ValueError(f"HybridConfig.paraphrases must be an int >= 0, got {self.paraphrases!r}")
        if not self.budget_per_layer > 0:
            raise ValueError(f"HybridConfig.budget_per_layer must be > 0, got {self.budget_per_layer!r}")
        if not isinstance(self.metric, str):
            if isinstance(self.metric, list):
                object.__setattr__(self, "metric", tuple(self.metric))  # from JSON
            if not (isinstance(self.metric, tuple) and self.metric and all(isinstance(m, str) for m in self.metric)):
                raise ValueError(f"HybridConfig.metric must be a metric name or a tuple of names, got {self.metric!r}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"HybridConfig.confidence must lie in (0, 1), got {self.confidence!r}")
        if self.min_stop_facts < 0:
            raise ValueError(f"HybridConfig.min_stop_facts must be >= 0, got {self.min_stop_facts!r}")

    def resolved(self, c: int, n_layers: int, n_facts: int) -> HybridConfig:
        """This config with n0 fixed: its own, else `budget_n0` for a shortlist of c layers out of
        n_layers candidates and n_facts proxy facts."""
        if self.n0 is not None:
            return self
        return dataclasses.replace(self, n0=budget_n0(c, n_layers, n_facts, self.budget_per_layer, eta=self.eta))

    def budget(self, n_layers: int) -> int | None:
        """The halving's cap in trial edits (`budget_edits`)."""
        return budget_edits(self.n0, n_layers, self.budget_per_layer)


_RUN_OPTIONS = ("out", "suites", "progress", "paraphrase_source")


def split_options(options: Mapping[str, Any]) -> tuple[HybridConfig, Any, dict[str, Any]]:
    """(HybridConfig, LGAConfig, the rest: out / suites / progress / paraphrase_source) from `locate`'s
    keyword options;
    `top_k` is the hybrid's, every other LGAConfig field LGA's."""
    from golden_fast.locate.lga import LGAConfig

    h_fields = {f.name for f in dataclasses.fields(HybridConfig)}
    l_fields = {f.name for f in dataclasses.fields(LGAConfig)} - h_fields
    unknown = sorted(set(options) - h_fields - l_fields - set(_RUN_OPTIONS))
    if unknown:
        raise ValueError(
            f"locate(method='hybrid'): unknown option(s) {unknown}; "
            f"known: {sorted(h_fields | l_fields | set(_RUN_OPTIONS))}"
        )
    hc = HybridConfig(**{k: v for k, v in options.items() if k in h_fields})
    lc = LGAConfig(**{k: v for k, v in options.items() if k in l_fields})
    return hc, lc, {k: v for k, v in options.items() if k in _RUN_OPTIONS}


def hybrid(
    model: Any,
    tok: Any,
    requests: Sequence[Any],
    layers: Sequence[int] | None = None,
    config: HybridConfig | None = None,
    lga_config: Any = None,
    editor: Any = None,
    *,
    out: Any = None,
    suites: Sequence[str] = ("knowedit",),
    progress: bool = False,
    paraphrase_source: Sequence[Any] | None = None,
):
    """LGA's shortlist, then successive halving with trial edits on the proxy facts; `LayerScores`.

    With `config.paraphrases` > 0 the trial edits score each proxy fact's rephrase on its template
    paraphrases too (grouped over the proxy facts and `paraphrase_source`); LGA reads the facts as given.

    The result: `layers` = the shortlist (ascending), `scores` = each one's mean trial-edit metric
    over the facts it edited, `variants` also LGA's score of each, `chosen` / `top_k` from the
    halving's ranking (not the argmax of `scores`: the means are over different fact counts),
    `fences` LGA's; `wall_time` = LGA + halving; `extra`: "cost" {"edits", "seconds",
    "lga_seconds", "halving_seconds", "full_schedule_edits", "pair_seconds"}, "rounds", "shortlist",
    "stopped_early", "pairs" [[fact, layer, value]...], "lga" (its per-layer scores and choice),
    "paraphrases" (template paraphrases added: in all, and the facts that got any).
    `reselect` does not apply (it would take the argmax of `scores`).
    """
    from golden_fast.locate.brute_force import _editor_spec
    from golden_fast.locate.lga import LGAConfig, lga

    config = config or HybridConfig()
    lga_config = lga_config or LGAConfig()
    requests = list(requests)
    t0 = time.perf_counter()
    if config.shortlist == "all":  # every candidate layer; no LGA
        from golden_fast.models import get_adapter

        ls = None
        candidates = list(range(get_adapter(model).n_layers)) if layers is None else [int(x) for x in layers]
        short = list(candidates)
        if len(short) < 2:
            raise ValueError(f"hybrid: shortlist 'all' over {short}: give at least two candidate layers")
    else:
        ls = lga(model, tok, requests, layers, lga_config, progress=progress)
        candidates = list(ls.layers)
        short = lga_shortlist(ls.layers, ls.scores, lga_config.tukey_k, config.shortlist)
    lga_seconds = time.perf_counter() - t0
    budget = config.budget(len(candidates))
    config = config.resolved(len(short), len(candidates), len(requests))
    trial = trial_requests(requests, config.paraphrases, paraphrase_source)
    scorer = EditScorer(model, tok, trial, editor, out=out, suites=suites, metric=config.metric, progress=progress)
    hv = successive_halving(
        scorer,
        short,
        len(requests),
        n0=config.n0,
        confidence=config.confidence,
        n_boot=config.n_boot,
        seed=config.seed,
        early_stop=config.early_stop,
        min_stop_facts=config.min_stop_facts,
        eta=config.eta,
        budget=budget,
    )
    method, hparams, _ = _editor_spec(editor)
    settings = {
        "hybrid": dataclasses.asdict(config) | {"budget_edits": budget},
        "lga": None if ls is None else dataclasses.asdict(lga_config),
        "editor": {"method": _label(method), "hparams": _label(hparams)},
        "suites": list(suites),
    }
    return hybrid_scores(ls, hv, config, settings, n_requests=len(requests), lga_seconds=lga_seconds,
                         wall_time=lga_seconds + hv.seconds, pair_seconds=scorer.pair_seconds,
                         paraphrases=paraphrase_count(requests, trial))


def trial_requests(requests: Sequence[Any], paraphrases: int, source: Sequence[Any] | None = None) -> list[Any]:
    """The requests the trial edits edit: the proxy facts, with up to `paraphrases` template paraphrases
    each appended to their rephrase prompts (grouped over the facts and `source`)."""
    if not paraphrases:
        return list(requests)
    from golden_fast.data.paraphrases import with_template_paraphrases

    return with_template_paraphrases(requests, paraphrases, source=source)


def paraphrase_count(requests: Sequence[Any], trial: Sequence[Any]) -> dict[str, int]:
    """{"added": template paraphrases in all, "facts": proxy facts that got any}."""
    # a fact that got none is the same object in both lists
    added = [0 if t is r else len(t.rephrase_prompts) - len(r.rephrase_prompts) for t, r in zip(trial, requests)]
    return {"added": sum(added), "facts": sum(a > 0 for a in added)}


def hybrid_scores(
    ls: Any,
    hv: Halving,
    config: HybridConfig,
    settings: Mapping[str, Any],
    *,
    n_requests: int,
    lga_seconds: float,
    wall_time: float,
    pair_seconds: float,
    paraphrases: Mapping[str, int] | None = None,
):
    """The hybrid's `LayerScores` from LGA's scores `ls` (None: shortlist "all", no LGA) and the
    halving `hv` (the layout `hybrid` documents); `wall_time` is LGA's seconds plus the trial edits'
    (a resumed run counts each pair once)."""
    from golden_fast.locate.scores import LayerScores

    short = hv.candidates
    shown = sorted(short)
    lga_score = {} if ls is None else dict(zip(ls.layers, ls.scores))
    # a single candidate is chosen with no trial edit: its curve is LGA's one point
    means = [lga_score[short[0]]] if len(short) == 1 else [hv.mean_of(layer) for layer in shown]
    label = metric_label(config.metric)
    variants = {label: [float(x) for x in means]}
    if ls is not None:
        variants[f"lga-{ls.variant}"] = [lga_score[x] for x in shown]
    return LayerScores(
        method="hybrid",
        layers=shown,
        scores=[float(x) for x in means],
        variant=label,
        variants=variants,
        chosen=hv.chosen,
        top_k=hv.ranking[: config.top_k],
        kept=[True] * len(shown),
        fences=None if ls is None else ls.fences,
        filter="every candidate layer (no LGA)" if ls is None
        else f"LGA {ls.variant} shortlist (top {config.shortlist} after {ls.filter})",
        wall_time=wall_time,
        settings=dict(settings),
        n_requests=n_requests,
        n_used=max((rd.n_facts for rd in hv.rounds), default=0),
        extra={
            "cost": {
                "edits": hv.n_edits,
                "seconds": wall_time,
                "lga_seconds": lga_seconds,
                "halving_seconds": hv.seconds,
                "pair_seconds": pair_seconds,
                "full_schedule_edits": full_schedule_edits(len(short), config.n0, n_requests, config.eta),
                "budget_edits": hv.settings.get("budget"),
            },
            "shortlist": short,
            "ranking": hv.ranking,
            "rounds": [dataclasses.asdict(rd) for rd in hv.rounds],
            "stopped_early": hv.stopped_early,
            "budget_spent": hv.budget_spent,
            "pairs": hv.to_dict()["values"],
            "lga": None if ls is None else {
                "layers": ls.layers,
                "scores": ls.scores,
                "variant": ls.variant,
                "kept": ls.kept,
                "fences": list(ls.fences) if ls.fences else None,
                "chosen": ls.chosen,
                "wall_time": ls.wall_time,
            },
            "requests": None if ls is None else ls.extra.get("requests"),
            "paraphrases": dict(paraphrases or {"added": 0, "facts": 0}),
        },
    )


def metric_label(metric: str | Sequence[str]) -> str:
    """A trial-edit score's name: the metric, or the names of a tuple joined by "+"."""
    return metric if isinstance(metric, str) else "+".join(metric)


def _label(x: Any) -> Any:
    """A JSON-ready description of an editor argument (a name, overrides, a file, a callable)."""
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    if isinstance(x, Mapping):
        return {str(k): _label(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_label(v) for v in x]
    return getattr(x, "__name__", None) or str(x)


def hybrid_from_options(
    model: Any, tok: Any, requests: Sequence[Any], layers: Sequence[int] | None, editor: Any, options: Mapping[str, Any]
):
    """`locate(method="hybrid", **options)`: the options split into HybridConfig, LGAConfig and
    out / suites / progress (`split_options`)."""
    hc, lc, rest = split_options(options)
    return hybrid(
        model,
        tok,
        requests,
        layers,
        hc,
        lc,
        editor,
        out=rest.get("out"),
        suites=rest.get("suites", ("knowedit",)),
        progress=rest.get("progress", False),
        paraphrase_source=rest.get("paraphrase_source"),
    )
