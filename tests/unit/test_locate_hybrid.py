"""The hybrid locator: successive halving on synthetic layer curves (no model), then end to end on a
tiny model through `locate` and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from golden_fast.locate.hybrid import (
    HybridConfig,
    budget_n0,
    full_schedule_edits,
    lga_shortlist,
    rounds_table,
    split_options,
    successive_halving,
)

# ---- synthetic -----------------------------------------------------------------------------------


class MatrixScorer:
    """(fact, layer) -> M[fact, layer] + noise (drawn once, so a pair always reads the same value);
    records every call."""

    def __init__(self, curve, n_facts=64, noise=0.05, fact_sd=0.1, seed=0):
        rng = np.random.default_rng(seed)
        self.curve = np.asarray(curve, dtype=float)
        self.M = self.curve + rng.normal(0, fact_sd, size=(n_facts, 1)) + rng.normal(0, noise, (n_facts, len(curve)))
        self.calls: list[tuple[int, int]] = []

    def __call__(self, i, layer):
        self.calls.append((i, layer))
        return float(self.M[i, layer])


CURVE = np.array([0.50, 0.52, 0.55, 0.60, 0.58, 0.56, 0.62, 0.80, 0.61, 0.54, 0.45, 0.40])
SHORT = [3, 6, 8, 7, 5, 4, 2, 9]  # LGA's order, best first: the planted best (7) is fourth


def test_finds_the_planted_best_layer():
    for seed in range(5):
        for early in (True, False):
            sc = MatrixScorer(CURVE, seed=seed)
            hv = successive_halving(sc, SHORT, 64, early_stop=early, seed=seed)
            assert hv.chosen == 7 and hv.ranking[0] == 7 and sorted(hv.ranking) == sorted(SHORT)


def test_full_schedule_without_early_stop():
    sc = MatrixScorer(CURVE)
    hv = successive_halving(sc, SHORT, 64, early_stop=False)
    assert [len(r.layers) for r in hv.rounds] == [8, 4, 2]
    assert [r.n_facts for r in hv.rounds] == [4, 8, 16]
    assert [r.new_edits for r in hv.rounds] == [32, 16, 16]
    assert hv.n_edits == 64 == full_schedule_edits(8, 4, 64) and not hv.stopped_early
    assert all(r.lo is None for r in hv.rounds)
    # each round: the first n_r facts at every remaining layer, means over exactly those
    for r in hv.rounds:
        for j, layer in enumerate(r.layers):
            assert r.means[j] == pytest.approx(sc.M[: r.n_facts, layer].mean(), abs=1e-12)
        order = sorted(range(len(r.layers)), key=lambda j: -r.means[j])
        assert set(r.kept) == {r.layers[j] for j in order[: math.ceil(len(r.layers) / 2)]}
        assert r.kept == [x for x in r.layers if x in r.kept]  # shortlist order kept
    assert [r.layers for r in hv.rounds[1:]] == [r.kept for r in hv.rounds[:-1]]


def test_stops_early_when_one_layer_is_clearly_ahead():
    curve = np.full(12, 0.4)
    curve[7] = 0.9
    sc = MatrixScorer(curve, noise=0.02, fact_sd=0.05)
    hv = successive_halving(sc, SHORT, 64)
    assert hv.chosen == 7 and hv.stopped_early and hv.rounds[-1].stopped
    assert hv.rounds[-1].n_facts == 8  # the first round the stop is checked (min_stop_facts = 8)
    assert hv.n_edits == 32 + 16 < full_schedule_edits(8, 4, 64)
    last = hv.rounds[-1]
    assert all(lo > 0 for layer, lo in zip(last.layers, last.lo) if layer != 7)
    # min_stop_facts = 0: already after the first round
    hv0 = successive_halving(MatrixScorer(curve, noise=0.02, fact_sd=0.05), SHORT, 64, min_stop_facts=0)
    assert hv0.stopped_early and len(hv0.rounds) == 1 and hv0.n_edits == 32


def test_no_early_stop_when_layers_are_close():
    curve = np.full(12, 0.5)
    curve[7] = 0.52
    hv = successive_halving(MatrixScorer(curve, noise=0.2), SHORT, 64)
    assert not hv.stopped_early and hv.n_edits == full_schedule_edits(8, 4, 64)
    assert all(r.lo is not None for r in hv.rounds if r.n_facts >= 8)


@pytest.mark.parametrize(
    ("c", "n0", "n_facts"), [(8, 4, 64), (8, 4, 10), (5, 3, 64), (3, 4, 4), (2, 4, 100), (6, 1, 5)]
)
def test_cost_is_the_distinct_pairs_and_none_twice(c, n0, n_facts):
    sc = MatrixScorer(np.linspace(0, 1, 12) ** 2, n_facts=max(n_facts, 1), noise=0.3)
    hv = successive_halving(sc, list(range(12))[-c:][::-1], n_facts, n0=n0, early_stop=False)
    assert len(sc.calls) == len(set(sc.calls)) == hv.n_edits == len(hv.values)
    assert hv.n_edits == sum(r.new_edits for r in hv.rounds) == full_schedule_edits(c, n0, n_facts)
    assert set(sc.calls) == set(hv.values)
    assert max(i for i, _ in sc.calls) < n_facts
    assert [len(r.layers) for r in hv.rounds][-1] == 2 and len(hv.ranking) == c


def test_early_stop_cost_matches_calls():
    curve = np.full(12, 0.4)
    curve[6] = 0.9
    sc = MatrixScorer(curve, noise=0.02)
    hv = successive_halving(sc, SHORT, 64)
    assert len(sc.calls) == len(set(sc.calls)) == hv.n_edits


def test_shortlist_order_breaks_ties():
    flat = MatrixScorer(np.full(12, 0.5), noise=0.0, fact_sd=0.1)  # every layer the same on every fact
    hv = successive_halving(flat, SHORT, 64)
    assert hv.chosen == SHORT[0] and hv.ranking == SHORT
    assert [r.kept for r in hv.rounds] == [SHORT[:4], SHORT[:2], SHORT[:1]]
    assert not hv.stopped_early  # ties are never "ahead"


def test_tukey_filter_and_top_c_are_respected():
    layers = list(range(12))
    lga_scores = [1.0, 1.1, 1.2, 1.3, 1.25, 1.15, 1.05, 50.0, 0.95, 0.9, 1.0, 1.1]  # layer 7: an outlier
    short = lga_shortlist(layers, lga_scores, tukey_k=1.0, c=4)
    assert short == [3, 4, 2, 5] and 7 not in short
    assert lga_shortlist(layers, lga_scores, tukey_k=None, c=3) == [7, 3, 4]
    sc = MatrixScorer(CURVE)  # layer 7 is the true best, but filtered out: never scored
    hv = successive_halving(sc, short, 64)
    assert {layer for _, layer in sc.calls} <= set(short) and hv.chosen in short
    assert hv.candidates == short


def test_single_candidate_and_errors():
    sc = MatrixScorer(CURVE)
    hv = successive_halving(sc, [5], 64)
    assert hv.chosen == 5 and hv.n_edits == 0 and sc.calls == [] and hv.rounds == []
    with pytest.raises(ValueError, match="duplicate"):
        successive_halving(sc, [1, 1], 8)
    with pytest.raises(ValueError, match="no candidate"):
        successive_halving(sc, [], 8)
    with pytest.raises(ValueError, match="n0"):
        successive_halving(sc, [1, 2], 8, n0=0)
    with pytest.raises(ValueError, match="non-finite"):
        successive_halving(lambda i, layer: float("nan"), [1, 2], 8)


def test_score_many_gets_a_round_at_once_and_determinism():
    class Batch:
        def __init__(self):
            self.batches = []
            self.inner = MatrixScorer(CURVE)

        def __call__(self, i, layer):  # never used when score_many exists
            raise AssertionError

        def score_many(self, pairs):
            self.batches.append(list(pairs))
            return [self.inner.M[i, layer] for i, layer in pairs]

    b = Batch()
    hv = successive_halving(b, SHORT, 64, seed=3)
    assert [len(x) for x in b.batches] == [r.new_edits for r in hv.rounds]
    again = successive_halving(MatrixScorer(CURVE), SHORT, 64, seed=3)
    assert again.chosen == hv.chosen and again.values == hv.values
    assert [r.lo for r in again.rounds] == [r.lo for r in hv.rounds]
    text = rounds_table(hv.rounds)
    assert "round 0: 4 fact(s), 32 new edit(s)" in text
    assert json.dumps(hv.to_dict())  # JSON-ready


def test_split_options():
    hc, lc, rest = split_options({"shortlist": 3, "top_k": 2, "variant": "cosine", "tukey_k": None, "out": "x"})
    assert hc.shortlist == 3 and hc.top_k == 2 and lc.variant == "cosine" and lc.tukey_k is None and lc.top_k == 1
    assert rest == {"out": "x"}
    with pytest.raises(ValueError, match="unknown option"):
        split_options({"window": 3})
    with pytest.raises(ValueError, match="n0"):
        HybridConfig(n0=0)


# ---- end to end on a tiny model ------------------------------------------------------------------

HP = {"mom2_adjustment": False, "v_num_grad_steps": 2, "context_template_length_params": [[3, 2]]}


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))
    return tmp_path


def test_locate_hybrid_end_to_end(home):
    from golden_fast.data import builtin_facts
    from golden_fast.locate import METHODS, LayerScores, locate
    from golden_fast.models import load_model

    assert "hybrid" in METHODS
    model, tok = load_model("tiny-llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reqs = builtin_facts()[:6]
    editor = {"method": "r-rome", "hparams": HP}
    out = home / "hy"
    s = locate(
        model, tok, reqs, "hybrid", editor=editor, shortlist=3, n0=2, tukey_k=None, top_k=2, out=out, progress=False
    )
    lga = locate(model, tok, reqs, "lga", tukey_k=None)
    short = lga.reselect(tukey_k=None, top_k=3).top_k
    assert s.method == "hybrid" and s.extra["shortlist"] == short and s.layers == sorted(short)
    assert s.chosen in short and s.top_k[0] == s.chosen and len(s.top_k) == 2
    cost = s.extra["cost"]
    # 3 layers x 2 facts, then 2 layers x 2 new facts
    assert cost["edits"] == len(s.extra["pairs"]) == 10 == cost["full_schedule_edits"]
    assert cost["seconds"] >= cost["lga_seconds"] > 0 and s.wall_time == pytest.approx(cost["seconds"])
    lines = (out / "pairs.jsonl").read_text().splitlines()
    assert len(lines) == 10
    rows = {(json.loads(x)["key"], json.loads(x)["layer"]) for x in lines}
    assert {(f"case:{reqs[i].case_id}", layer) for i, layer, _ in s.extra["pairs"]} == rows
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # every edit reverted
    r = LayerScores.from_json(s.to_json())
    assert r.chosen == s.chosen and r.extra["rounds"][0]["n_facts"] == 2
    assert (s.plot(home / "h.png")).read_bytes()[:4] == b"\x89PNG"
    # resumed: every pair is on file, nothing is edited again, the same choice
    s2 = locate(
        model, tok, reqs, "hybrid", editor=editor, shortlist=3, n0=2, tukey_k=None, top_k=2, out=out, progress=False
    )
    assert s2.chosen == s.chosen and s2.extra["pairs"] == s.extra["pairs"]
    assert len((out / "pairs.jsonl").read_text().splitlines()) == 10
    with pytest.raises(ValueError, match="takes no editor"):
        locate(model, tok, reqs, "lga", editor=editor)


def test_cli_hybrid(home, capsys):
    from golden_fast.cli import main
    from golden_fast.locate import LayerScores

    hp = home / "hp.yaml"
    hp.write_text("mom2_adjustment: false\nv_num_grad_steps: 2\ncontext_template_length_params: [[3, 2]]\n")
    args = [
        "locate",
        "--model",
        "tiny-llama",
        "--data",
        "builtin",
        "--method",
        "hybrid",
        "--n",
        "4",
        "--shortlist",
        "2",
        "--n0",
        "2",
        "--tukey-k",
        "none",
        "--hparams",
        str(hp),
        "--out",
        str(home / "hy"),
        "--json",
        str(home / "h.json"),
        "--no-progress",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    last = json.loads(out.strip().splitlines()[-1])
    # 2 layers x 2 facts, then the better one is left
    assert last["method"] == "hybrid" and last["edits"] == 4 == len(
        (home / "hy" / "pairs.jsonl").read_text().splitlines()
    )
    assert "round 0: 2 fact(s), 4 new edit(s)" in out and "cost: 4 trial edit(s) (full schedule 4)" in out
    s = LayerScores.from_json(home / "h.json")
    assert s.chosen == last["chosen"] and s.settings["hybrid"]["shortlist"] == 2


@pytest.mark.parametrize(("c", "n_layers", "n_facts", "want"),
                         [(8, 30, 20, 3), (8, 18, 20, 2), (8, 48, 20, 4), (8, 4, 20, 1), (3, 18, 20, 4),
                          (8, 30, 4, 4)])
def test_budget_n0_is_the_largest_schedule_within_two_edits_per_layer(c, n_layers, n_facts, want):
    got = budget_n0(c, n_layers, n_facts)
    assert got == want
    # plain: the cost of every n0 from 4 down, by enumerating the halving's new pairs
    def cost(n0):
        total, alive, have, n = 0, c, 0, min(n0, n_facts)
        while alive > 1:
            total += alive * (n - have)
            alive, have, n = -(-alive // 2), n, min(2 * n, n_facts)
        return total
    fits = [n0 for n0 in (4, 3, 2, 1) if cost(n0) <= 2 * n_layers]
    assert got == (fits[0] if fits else 1)


def test_hybrid_config_resolves_n0_by_budget_unless_given():
    assert HybridConfig().resolved(8, 30, 20).n0 == 3
    assert HybridConfig().resolved(8, 18, 20).n0 == 2
    assert HybridConfig(n0=4).resolved(8, 18, 20).n0 == 4
    assert HybridConfig(budget_per_layer=4.0).resolved(8, 18, 20).n0 == 4
    with pytest.raises(ValueError, match="budget_per_layer"):
        HybridConfig(budget_per_layer=0)


CURVE18 = np.array([0.50, 0.70, 0.66, 0.68, 0.55, 0.58, 0.54, 0.60, 0.50, 0.51, 0.50, 0.52, 0.58, 0.50, 0.49,
                    0.45, 0.30, 0.10])


def test_eta_keeps_a_fraction_and_multiplies_the_facts():
    curve = np.linspace(0.3, 0.6, 16)
    curve[11] = 0.9
    sc = MatrixScorer(curve, noise=0.01)
    hv = successive_halving(sc, list(range(16)), 64, n0=1, eta=4, early_stop=False)
    assert [len(r.layers) for r in hv.rounds] == [16, 4] and [r.n_facts for r in hv.rounds] == [1, 4]
    assert hv.chosen == 11 and hv.n_edits == 16 + 4 * 3 == full_schedule_edits(16, 1, 64, eta=4) == len(sc.calls)
    assert hv.settings["eta"] == 4 and not hv.budget_spent


def test_budget_cuts_the_schedule_short_and_is_never_exceeded():
    # 18 layers from 1 fact: 18 edits, then 9 layers x 1 new fact (27); the next round (5 layers to 4
    # facts, 10 edits) does not fit 36: the 9 edits left pay for 1 new fact each (5), and its leader wins
    sc = MatrixScorer(CURVE18, n_facts=20, seed=1)
    hv = successive_halving(sc, list(range(18)), 20, n0=1, budget=36, early_stop=False)
    assert [len(r.layers) for r in hv.rounds] == [18, 9, 5] and [r.n_facts for r in hv.rounds] == [1, 2, 3]
    assert hv.n_edits == 32 == len(sc.calls) and hv.budget_spent and hv.chosen == hv.rounds[-1].leader
    assert hv.rounds[-1].kept == [hv.chosen] and hv.settings["budget"] == 36
    # nothing left for one more fact each: the previous round's leader stands, with no further edit
    sc = MatrixScorer(CURVE18, n_facts=20, seed=1)
    hv = successive_halving(sc, list(range(18)), 20, n0=1, budget=27, early_stop=False)
    assert len(hv.rounds) == 2 and hv.n_edits == 27 == len(sc.calls) and hv.budget_spent
    assert hv.chosen == hv.rounds[-1].leader
    # every budget from the candidates' count up: never exceeded, and a chosen layer always
    for budget in range(18, 80):
        sc = MatrixScorer(CURVE18, n_facts=20, seed=2)
        hv = successive_halving(sc, list(range(18)), 20, n0=1, budget=budget, early_stop=False)
        assert hv.n_edits == len(sc.calls) <= budget and hv.chosen in range(18)
    with pytest.raises(ValueError, match="budget of 17 trial edits cannot score each of the 18"):
        successive_halving(MatrixScorer(CURVE18), list(range(18)), 20, n0=1, budget=17)
    with pytest.raises(ValueError, match="eta must be an int >= 2"):
        successive_halving(MatrixScorer(CURVE18), list(range(18)), 20, eta=1)


def test_the_default_schedule_fits_its_budget():
    # the budget rule picks n0 so that the full schedule fits: the cap never changes its choice
    for n_layers, seed in [(30, 0), (18, 1), (18, 2)]:
        curve = np.resize(CURVE18, n_layers)
        n0 = budget_n0(8, n_layers, 20)
        a = successive_halving(MatrixScorer(curve, n_facts=20, seed=seed), SHORT, 20, n0=n0, seed=seed)
        b = successive_halving(MatrixScorer(curve, n_facts=20, seed=seed), SHORT, 20, n0=n0, seed=seed,
                               budget=2 * n_layers)
        assert (a.chosen, a.values) == (b.chosen, b.values) and not b.budget_spent


def test_hybrid_config_shortlist_all_and_eta():
    assert HybridConfig(shortlist="all", eta=4).budget(18) == 36
    assert HybridConfig(n0=2).budget(18) is None  # a given n0 runs its schedule in full
    assert HybridConfig(eta=4).resolved(8, 18, 20).n0 == budget_n0(8, 18, 20, eta=4)
    with pytest.raises(ValueError, match="shortlist must be a positive int or 'all'"):
        HybridConfig(shortlist="some")
    with pytest.raises(ValueError, match="eta must be an int >= 2"):
        HybridConfig(eta=1)


def test_locate_hybrid_every_layer_without_lga(home):
    from golden_fast.data import builtin_facts
    from golden_fast.locate import locate
    from golden_fast.models import get_adapter, load_model

    model, tok = load_model("tiny-llama")
    n_layers = get_adapter(model).n_layers
    reqs = builtin_facts()[:6]
    s = locate(model, tok, reqs, "hybrid", editor={"method": "r-rome", "hparams": HP}, shortlist="all",
               out=home / "all", progress=False)
    assert s.extra["shortlist"] == list(range(n_layers)) and s.extra["lga"] is None
    assert s.filter == "every candidate layer (no LGA)" and s.fences is None and list(s.variants) == ["overall"]
    cost = s.extra["cost"]
    assert cost["budget_edits"] == 2 * n_layers and cost["edits"] <= 2 * n_layers
    assert s.extra["rounds"][0]["n_facts"] == 1 and s.chosen in range(n_layers)
    assert s.settings["lga"] is None and s.settings["hybrid"]["shortlist"] == "all"
    with pytest.raises(ValueError, match="give at least two candidate layers"):
        locate(model, tok, reqs, "hybrid", [1], editor={"method": "r-rome", "hparams": HP}, shortlist="all")


def test_hybrid_scores_trial_edits_with_named_metrics(home):
    """A trial score made of several metrics (probabilities from suite soft, locality's accuracy): each
    pair's value is their mean, read from the same brute-force rows."""
    from golden_fast.data import builtin_facts
    from golden_fast.locate import locate
    from golden_fast.locate.brute_force import brute_force
    from golden_fast.models import load_model

    model, tok = load_model("tiny-llama")
    reqs = builtin_facts()[:4]
    editor = {"method": "r-rome", "hparams": HP}
    score = ("rewrite_prob", "rephrase_prob", "locality")
    s = locate(model, tok, reqs, "hybrid", [0, 1], editor=editor, shortlist="all", metric=score,
               suites=("knowedit", "soft"), out=home / "mixed", progress=False)
    assert list(s.variants) == ["rewrite_prob+rephrase_prob+locality"] and s.variant == list(s.variants)[0]
    res = brute_force(model, tok, reqs, [0, 1], editor, out=home / "mixed", suites=("knowedit", "soft"),
                      progress=False)  # every pair is in the results file: read back, not edited again
    for i, layer, value in s.extra["pairs"]:
        row = res.M[i, res.layers.index(layer)]
        want = [row[res.metrics.index(m)] for m in score if not np.isnan(row[res.metrics.index(m)])]
        assert value == pytest.approx(sum(want) / len(want), abs=1e-12)
    with pytest.raises(ValueError, match="metric name or a tuple"):
        locate(model, tok, reqs, "hybrid", [0, 1], editor=editor, shortlist="all", metric=("rewrite_prob", 3))


def test_cli_hybrid_every_layer(home, capsys):
    from golden_fast.cli import main

    hp = home / "hp.yaml"
    hp.write_text("mom2_adjustment: false\nv_num_grad_steps: 2\ncontext_template_length_params: [[3, 2]]\n")
    args = ["locate", "--model", "tiny-llama", "--data", "builtin", "--method", "hybrid", "--n", "4", "--shortlist",
            "all", "--eta", "3", "--hparams", str(hp), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    last = json.loads(out.strip().splitlines()[-1])
    assert "every candidate layer, no LGA" in out and "budget" in out and last["edits"] >= 2
    with pytest.raises(SystemExit):
        main(args[:10] + ["some"] + args[11:])
    # trial edits scored by probabilities: suite soft evaluates them (recorded with the pairs)
    assert main(args + ["--trial-score", "probabilities", "--out", str(home / "soft")]) == 0
    assert json.loads((home / "soft" / "meta.json").read_text())["suites"] == ["soft"]
    row = json.loads((home / "soft" / "pairs.jsonl").read_text().splitlines()[0])
    assert set(row["metrics"]) <= {"rewrite_prob", "rephrase_prob", "locality_prob", "portability_prob"}


def test_cli_hybrid_budget_per_layer(home, capsys):
    from golden_fast.cli import main
    from golden_fast.models import get_adapter, load_model

    n_layers = get_adapter(load_model("tiny-llama")[0]).n_layers
    hp = home / "hp.yaml"
    hp.write_text("mom2_adjustment: false\nv_num_grad_steps: 2\ncontext_template_length_params: [[3, 2]]\n")
    args = ["locate", "--model", "tiny-llama", "--data", "builtin", "--method", "hybrid", "--n", "4", "--shortlist",
            "all", "--eta", "2", "--budget-per-layer", "1", "--hparams", str(hp), "--no-progress"]
    assert main(args) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # one edit per layer pays for the first round only: every layer on one request, its leader chosen
    assert last["edits"] == n_layers
    with pytest.raises(SystemExit):
        main(args[:13] + ["0"] + args[14:])


# zsRE-style records: one relation asked through four templates, two of them per record
ZSRE = [
    {"subject": s, "src": q.format(s), "rephrase": r.format(s), "answers": [a], "alt": b,
     "loc": "nq question: who wrote hamlet", "loc_ans": "William Shakespeare"}
    for s, q, r, a, b in [
        ("Alpha", "Which team does {} play for?", "On what team is {}?", "Reds", "Blues"),
        ("Beta", "On what team is {}?", "{} plays for which team?", "Greens", "Reds"),
        ("Delta", "Which team does {} play for?", "Which team is {} playing for?", "Blues", "Greens"),
    ]
]


def test_locate_hybrid_scores_trial_edits_on_template_paraphrases(home):
    """paraphrases=K: each trial edit is the edit of the fact with its template paraphrases appended to
    its rephrase prompts (so its rephrase is their mean); LGA and the count of facts are unchanged."""
    from golden_fast.data import from_records
    from golden_fast.data.paraphrases import with_template_paraphrases
    from golden_fast.locate import locate
    from golden_fast.locate.brute_force import brute_force
    from golden_fast.models import load_model

    model, tok = load_model("tiny-llama")
    reqs = from_records(ZSRE, "zsre")
    editor = {"method": "r-rome", "hparams": HP}
    s = locate(model, tok, reqs[:2], "hybrid", [0, 1], editor=editor, shortlist="all", paraphrases=2,
               paraphrase_source=reqs, out=home / "para", progress=False)
    rich = with_template_paraphrases(reqs[:2], 2, source=reqs)
    added = [len(r.rephrase_prompts) - 1 for r in rich]
    assert added == [2, 2] and s.extra["paraphrases"] == {"added": 4, "facts": 2}
    assert s.settings["hybrid"]["paraphrases"] == 2 and s.n_requests == 2
    res = brute_force(model, tok, rich, [0, 1], editor, out=home / "para", progress=False)  # read back, not edited
    for i, layer, value in s.extra["pairs"]:
        assert value == pytest.approx(float(np.nanmean(res.M[i, res.layers.index(layer)])), abs=1e-12)
    plain = locate(model, tok, reqs[:2], "hybrid", [0, 1], editor=editor, shortlist="all", out=home / "para",
                   progress=False)
    assert plain.extra["paraphrases"] == {"added": 0, "facts": 0}
    # the plain facts are other requests: their pairs were edited anew, next to the enriched ones
    rows = (home / "para" / "pairs.jsonl").read_text().splitlines()
    assert len(rows) == len(s.extra["pairs"]) + len(plain.extra["pairs"])
    with pytest.raises(ValueError, match="paraphrases must be an int >= 0"):
        HybridConfig(paraphrases=-1)


def test_cli_hybrid_paraphrases(home, capsys):
    from golden_fast.cli import main

    data = home / "zsre.json"
    data.write_text(json.dumps(ZSRE))
    hp = home / "hp.yaml"
    hp.write_text("mom2_adjustment: false\nv_num_grad_steps: 2\ncontext_template_length_params: [[3, 2]]\n")
    args = ["locate", "--model", "tiny-llama", "--data", str(data), "--method", "hybrid", "--n", "1", "--shortlist",
            "all", "--layers", "0,1", "--hparams", str(hp), "--no-progress", "--paraphrases", "3"]
    assert main(args) == 0
    # the one proxy fact (Alpha) gets the two templates of its relation that only the other records hold
    assert "template paraphrases: 2 added to the rephrase of 1 proxy fact(s)" in capsys.readouterr().out
    assert main(args[:-1] + ["-1"]) == 2
    assert "--paraphrases must be >= 0" in capsys.readouterr().err
