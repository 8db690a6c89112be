"""The study's golden band (from the brute-force grid on the test facts) and its hybrid locator part:
the band in results.json and in the report's tables, the hybrid's layer and cost among the chosen layers."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import golden_fast.experiment.locating as locating
from golden_fast.edit import Editor
from golden_fast.experiment import PARTS, ExperimentConfig, quick_config, run_experiment
from golden_fast.experiment.assemble import collect, write_report
from golden_fast.experiment.facts import load_facts
from golden_fast.experiment.runner import Context
from golden_fast.locate import LayerScores
from golden_fast.locate.band import golden_band
from golden_fast.locate.brute_force import BruteForceResult, brute_scores
from golden_fast.locate.hybrid import HybridConfig
from golden_fast.models import get_adapter, load_model

LAYERS = [0, 1, 2, 3]
METRICS = ["rewrite_acc", "locality"]


@pytest.fixture()
def env(study_env):
    return study_env


def _grid(overall: np.ndarray) -> np.ndarray:
    """M[fact, layer, metric] whose per-fact overall is `overall`; fact 0 lacks locality (None on disk)."""
    M = np.repeat(overall[:, :, None], len(METRICS), axis=2)
    M[0, :, 1] = np.nan
    return M


def _brute(M: np.ndarray, tag: str, n_boot: int) -> LayerScores:
    n = M.shape[0]
    res = BruteForceResult(M, LAYERS, METRICS, [f"{tag}{i}" for i in range(n)], [f"case:{tag}{i}" for i in range(n)],
                           np.full((n, len(LAYERS)), 0.5), {"method": "r-rome"}, 0.0)
    return brute_scores(res, n_boot=n_boot)


def _test_grid() -> np.ndarray:
    """12 test facts: layer 2 best, layer 1 as good within noise (paired differences of both signs),
    layers 0 and 3 clearly worse: golden layer 2, band [1, 2]."""
    base = 0.6 + 0.02 * (np.arange(12) % 3)
    wobble = np.where(np.arange(12) % 2 == 0, 0.05, -0.04)
    overall = np.stack([base - 0.3, base - wobble, base, base - 0.4 - 0.01 * (np.arange(12) % 2)], axis=1)
    return _grid(overall)


class _Lookup:
    """Stands in for EditScorer: a fixed score per layer, a little per-fact variation."""

    table = {0: 0.2, 1: 0.3, 2: 0.5, 3: 0.9}

    def __init__(self, *a, **k):
        self.pair_seconds = 1.5

    def __call__(self, i: int, layer: int) -> float:
        return self.table[layer] + 0.01 * (i % 2)


def test_band_in_results_and_report_from_a_synthetic_grid(env, monkeypatch):
    config = quick_config(model="tiny-llama", data="builtin", out=str(env / "study"), n_boot=300, progress=False)
    out = env / "study"
    loc = out / "locate"
    loc.mkdir(parents=True)
    M = _test_grid()
    (loc / "brute-test.json").write_text(_brute(M, "t", config.n_boot).to_json())
    proxy = _grid(np.tile([0.1, 0.8, 0.4, 0.2], (3, 1)))  # brute force on 3 proxy facts chooses layer 1
    (loc / "brute-proxy.json").write_text(_brute(proxy, "p", config.n_boot).to_json())
    # the hybrid: LGA's shortlist [3, 2, 1, 0], trial edits favour layer 3 (outside the band)
    lga = LayerScores.build("lga", LAYERS, {"signed": [1.0, 2.0, 3.0, 4.0]}, "signed", tukey_k=1.0, top_k=1,
                            wall_time=0.25, settings={"theta": "down"}, n_requests=6, n_used=6)
    monkeypatch.setattr(locating, "EditScorer", _Lookup)
    hy = locating.run_hybrid(None, None, list(range(6)), lga, {"method": "r-rome", "hparams": None},
                             loc / "hybrid-pairs", loc / "hybrid.json", HybridConfig(n_boot=100, n0=4), progress=False)
    assert hy.chosen == 3 and hy.extra["shortlist"] == [3, 2, 1, 0]
    assert hy.extra["cost"]["edits"] == 4 * 4 + 2 * 2  # 4 layers x 4 facts, then 2 layers x 2 new facts
    assert hy.wall_time == pytest.approx(0.25 + 1.5)

    ctx = Context(config, None, None, load_facts(config), LAYERS, out)
    res = collect(ctx)
    want = golden_band(M, LAYERS, METRICS, n_boot=config.n_boot)
    assert res["band"] == want.to_dict()
    assert want.golden == 2 and want.band == [1, 2] and want.n == 12
    assert res["golden"]["test_golden_layer"] == 2
    chosen = res["chosen"]
    assert chosen["brute-force"]["in_golden_band"] is True and chosen["brute-force"]["edits"] == 12
    assert chosen["hybrid"]["in_golden_band"] is False and chosen["hybrid"]["family"] == "hybrid"
    assert chosen["hybrid"]["edits"] == 20 and "2 round(s)" in chosen["hybrid"]["note"]
    assert res["hybrid"]["cost"]["edits"] == 20

    md = write_report(ctx).markdown.read_text()
    band_rows = _table(md, "Golden band (test facts)")
    assert band_rows[0] == ["layer", "mean overall", "golden - layer", "95% CI", "in band"]
    assert {int(r[0]): r[-1] for r in band_rows[1:]} == {0: "no", 1: "yes", 2: "yes", 3: "no"}
    assert "Golden layer 2, band [1, 2] (2 of 4 layers) on 12 test facts" in md
    head, *rows = _table(md, "Chosen layers")
    assert head[:4] == ["method", "layer", "distance to test golden", "in golden band"]
    assert head[-3:] == ["edits", "edits / brute force", "note"]
    by = {r[0]: dict(zip(head, r)) for r in rows}
    assert (by["brute-force"]["in golden band"], by["brute-force"]["edits"], by["brute-force"]["edits / brute force"]) \
        == ("yes", "12", "1")
    assert (by["hybrid"]["in golden band"], by["hybrid"]["edits"], by["hybrid"]["edits / brute force"]) \
        == ("no", "20", "1.67")
    assert "## Hybrid locator (LGA shortlist, trial edits)" in md


def _table(md: str, title: str) -> list[list[str]]:
    """The cells of the Markdown table under `## title` (header first, the separator dropped)."""
    rows = []
    for line in md.split(f"## {title}\n", 1)[1].splitlines()[1:]:  # a blank line follows the title
        if not line.startswith("|"):
            break
        if not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_hybrid_is_a_default_part_after_lga():
    assert PARTS.index("hybrid") == PARTS.index("lga") + 1
    assert "hybrid" in ExperimentConfig().parts and "hybrid" in quick_config().parts


def test_quick_study_runs_the_hybrid_part_on_lga_results(env, monkeypatch):
    model, tok = load_model("tiny-llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lga_calls = []
    real_lga = locating.lga
    monkeypatch.setattr(locating, "lga", lambda *a, **k: lga_calls.append(1) or real_lga(*a, **k))
    out = env / "quick"
    config = quick_config(model="tiny-llama", data="builtin", out=str(out), parts=("lga", "hybrid", "report"),
                          progress=False)
    res = run_experiment(config, model=model, tok=tok)
    assert list(res["parts"]) == ["lga", "hybrid", "report"]
    assert len(lga_calls) == 1  # the hybrid took the lga part's result
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    hy = LayerScores.from_json(out / "locate" / "hybrid.json")
    assert hy.method == "hybrid" and hy.settings["editor"]["method"] == config.brute_editor
    r = json.loads((out / "results.json").read_text())["results"]
    m = r["chosen"]["hybrid"]
    assert m["family"] == "hybrid" and m["layer"] == hy.chosen and m["layer"] in r["candidate_layers"]
    assert m["edits"] == hy.extra["cost"]["edits"] > 0 and m["rounds"] == len(hy.extra["rounds"]) >= 1
    assert f"{m['edits']} trial edits" in m["note"]
    pairs = (out / "locate" / "hybrid-pairs" / "pairs.jsonl").read_text().splitlines()
    assert len(pairs) == m["edits"]  # each trial edit once, on disk
    md = (out / "report.md").read_text()
    assert "## Hybrid locator (LGA shortlist, trial edits)" in md
    assert any(line.startswith("| hybrid |") for line in md.splitlines())

    # a rerun finds the hybrid done: no edit, no LGA, the same result
    calls = []
    monkeypatch.setattr(Editor, "edit", lambda *a, **k: calls.append(1))
    run_experiment(config, model=model, tok=tok)
    assert calls == [] and len(lga_calls) == 1
    assert LayerScores.from_json(out / "locate" / "hybrid.json").to_dict() == hy.to_dict()


def _editor_rows(keys: list[str], rewrite: dict[str, float]) -> str:
    return "\n".join(json.dumps({"key": k, "metrics": {"rewrite_acc": rewrite[k], "locality": 1.0}, "seconds": 1.0})
                     for k in keys) + "\n"


def test_editors_are_judged_on_test_facts_held_apart_from_the_golden_choice(env):
    config = quick_config(model="tiny-llama", data="builtin", out=str(env / "study"), n_boot=200, progress=False)
    config = ExperimentConfig(**{**config.to_dict(), "editors": ("r-rome",), "parts": ("report",)})
    out = env / "study"
    (out / "locate").mkdir(parents=True)
    (out / "editors").mkdir()
    keys = [f"case:{i}" for i in range(30)]
    (out / "split.json").write_text(json.dumps({"proxy": [], "test": keys, "pool": []}))
    # the first 12 test facts chose the golden layer 2 (brute-test); the other 18 are held apart
    M = _test_grid()
    res = BruteForceResult(M, LAYERS, METRICS, [f"r{i}" for i in range(12)], keys[:12],
                           np.full((12, len(LAYERS)), 0.5), {"method": "r-rome"}, 0.0)
    (out / "locate" / "brute-test.json").write_text(brute_scores(res, n_boot=config.n_boot).to_json())
    proxy = _grid(np.tile([0.1, 0.8, 0.4, 0.2], (3, 1)))  # brute force on proxy facts chooses layer 1
    (out / "locate" / "brute-proxy.json").write_text(_brute(proxy, "p", config.n_boot).to_json())
    # r-rome at the golden layer 2: rewrite 0 on the facts that chose it, 1 on the held-apart ones;
    # at layer 1: 1 on the first 12, 0 elsewhere. Judged on all 30 the two would be near; held apart, 2 wins.
    at2 = {k: (0.0 if i < 12 else 1.0) for i, k in enumerate(keys)}
    at1 = {k: (1.0 if i < 12 else 0.0) for i, k in enumerate(keys)}
    (out / "editors" / "r-rome-L02.jsonl").write_text(_editor_rows(keys, at2))
    (out / "editors" / "r-rome-L01.jsonl").write_text(_editor_rows(keys, at1))
    ctx = Context(config, None, None, load_facts(config), LAYERS, out)
    e = collect(ctx)["editors"]["r-rome"]
    assert e["held_apart"] and e["n_judged"] == 18 and e["n_chose_golden"] == 12
    rows = {r["method"]: r for r in e["rows"]}
    assert rows["brute-force"]["layer"] == 1 and rows["brute-force"]["rewrite_acc"]["mean"] == 0.0
    assert rows["brute-force"]["rewrite_acc"]["n"] == 18
    golden = next(r for r in e["rows"] if r["layer"] == 2)
    assert golden["rewrite_acc"]["mean"] == 1.0
    assert e["not_edited_yet"] == []
    md = write_report(ctx).markdown.read_text()
    assert "r-rome on 18 test facts at each chosen layer" in md
    assert "test facts held apart from the 12 that chose the golden layer" in md


def test_a_locator_without_editor_results_leaves_the_others_judged(env):
    config = quick_config(model="tiny-llama", data="builtin", out=str(env / "study"), n_boot=200, progress=False)
    config = ExperimentConfig(**{**config.to_dict(), "editors": ("r-rome",), "parts": ("report",)})
    out = env / "study"
    (out / "locate").mkdir(parents=True)
    (out / "editors").mkdir()
    keys = [f"case:{i}" for i in range(14)]
    (out / "split.json").write_text(json.dumps({"proxy": [], "test": keys, "pool": []}))
    res = BruteForceResult(_test_grid(), LAYERS, METRICS, [f"r{i}" for i in range(12)], keys[:12],
                           np.full((12, len(LAYERS)), 0.5), {"method": "r-rome"}, 0.0)
    (out / "locate" / "brute-test.json").write_text(brute_scores(res, n_boot=config.n_boot).to_json())
    proxy = _grid(np.tile([0.1, 0.2, 0.4, 0.8], (3, 1)))  # brute force on proxy facts chooses layer 3
    (out / "locate" / "brute-proxy.json").write_text(_brute(proxy, "p", config.n_boot).to_json())
    (out / "editors" / "r-rome-L02.jsonl").write_text(_editor_rows(keys, dict.fromkeys(keys, 1.0)))
    e = collect(Context(config, None, None, load_facts(config), LAYERS, out))["editors"]["r-rome"]
    # 2 facts held apart: too few, so all 14 are judged, and the layer-3 locator waits for its edits
    assert not e["held_apart"] and e["n_judged"] == 14
    assert e["not_edited_yet"] == ["brute-force (layer 3)"]
    assert [r["layer"] for r in e["rows"]] == [2]


def test_quick_study_hybrid_over_every_layer_without_lga(env, monkeypatch):
    import argparse

    from golden_fast.cli import experiment as cli_experiment

    model, tok = load_model("tiny-llama")
    lga_calls = []
    real_lga = locating.lga
    monkeypatch.setattr(locating, "lga", lambda *a, **k: lga_calls.append(1) or real_lga(*a, **k))
    out = env / "quick-all"
    config = quick_config(model="tiny-llama", data="builtin", out=str(out), parts=("hybrid", "report"),
                          hybrid_shortlist="all", hybrid_eta=3, progress=False)
    run_experiment(config, model=model, tok=tok)
    assert lga_calls == []  # shortlist "all" needs no LGA
    hy = LayerScores.from_json(out / "locate" / "hybrid.json")
    layers = config.candidate_layers(get_adapter(model).n_layers)
    assert hy.extra["shortlist"] == layers and hy.extra["lga"] is None and hy.settings["lga"] is None
    assert hy.settings["hybrid"]["eta"] == 3 and hy.settings["hybrid"]["shortlist"] == "all"
    assert hy.extra["cost"]["edits"] <= 2 * len(layers)  # the budget of 2 trial edits per layer
    r = json.loads((out / "results.json").read_text())["results"]
    assert r["chosen"]["hybrid"]["note"].startswith("every candidate layer (no LGA), then")
    md = (out / "report.md").read_text()
    assert "## Hybrid locator (every layer, trial edits)" in md and "every candidate layer, no LGA" in md

    # back to LGA's shortlist: the hybrid is recomputed, every trial edit already made is reused
    pairs = out / "locate" / "hybrid-pairs" / "pairs.jsonl"
    before = set(pairs.read_text().splitlines())
    run_experiment(dataclasses.replace(config, parts=("lga", "hybrid"), hybrid_shortlist=2, hybrid_eta=2),
                   model=model, tok=tok)
    hy2 = LayerScores.from_json(out / "locate" / "hybrid.json")
    assert hy2.extra["lga"] is not None and len(hy2.extra["shortlist"]) == 2
    assert before <= set(pairs.read_text().splitlines())

    # the options, validated, and through the CLI
    with pytest.raises(ValueError, match="shortlist"):
        quick_config(hybrid_shortlist="some")
    with pytest.raises(ValueError, match="eta"):
        quick_config(hybrid_eta=1)
    p = argparse.ArgumentParser()
    cli_experiment.register(p.add_subparsers())
    args = p.parse_args(["experiment", "--model", "tiny-llama", "--data", "builtin", "--quick",
                         "--hybrid-shortlist", "all", "--hybrid-eta", "4", "--hybrid-trial-score", "mixed",
                         "--hybrid-paraphrases", "3"])
    c = cli_experiment.config_from(args)
    assert c.hybrid_shortlist == "all" and c.hybrid_eta == 4
    assert c.hybrid_trial_score == "mixed" and c.hybrid_paraphrases == 3


def test_quick_study_hybrid_trial_score_and_paraphrases(env):
    """hybrid_trial_score / hybrid_paraphrases: the trial edits are evaluated by the score's suites in a
    folder of their own, each proxy fact's rephrase also on its template paraphrases (grouped over
    every valid record of the file)."""
    from golden_fast.data import validate
    from golden_fast.locate.hybrid import paraphrase_count, trial_requests

    model, tok = load_model("tiny-llama")
    out = env / "quick-mixed"
    config = quick_config(model="tiny-llama", data="builtin", out=str(out), parts=("hybrid",), hybrid_shortlist="all",
                          hybrid_eta=4, hybrid_trial_score="mixed", hybrid_paraphrases=2, progress=False)
    run_experiment(config, model=model, tok=tok)
    hy = LayerScores.from_json(out / "locate" / "hybrid.json")
    assert hy.settings["hybrid"]["metric"] == ["rewrite_prob", "rephrase_prob", "locality"]
    assert hy.settings["hybrid"]["paraphrases"] == 2 and hy.settings["suites"] == ["knowedit", "soft"]
    meta = json.loads((out / "locate" / "hybrid-pairs-mixed" / "meta.json").read_text())
    assert meta["suites"] == ["knowedit", "soft"] and not (out / "locate" / "hybrid-pairs").exists()
    proxy = load_facts(config).proxy
    assert hy.extra["paraphrases"] == paraphrase_count(proxy, trial_requests(proxy, 2, validate("builtin")[0]))
    with pytest.raises(ValueError, match="hybrid_trial_score"):
        quick_config(hybrid_trial_score="best")
    with pytest.raises(ValueError, match="paraphrases"):
        quick_config(hybrid_paraphrases=-2)
