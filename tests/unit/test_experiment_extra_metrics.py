"""Portability and fluency in the study's editor tables: measured on the judged (held-apart) facts only,
reported beside "overall" and never inside it, a row lacking them edited and judged again, and the
unedited model's fluency kept as the reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from golden_fast.data import load
from golden_fast.data.portability import add_portability
from golden_fast.edit import Editor
from golden_fast.evaluate import evaluate
from golden_fast.experiment import ExperimentConfig, quick_config
from golden_fast.experiment.assemble import collect, write_report
from golden_fast.experiment.editors import pre_fluency, run_editors
from golden_fast.experiment.facts import load_facts
from golden_fast.experiment.runner import Context
from golden_fast.locate.brute_force import BruteForceResult, brute_scores, request_key
from golden_fast.models import load_model

LAYERS = [0, 1, 2, 3]


@pytest.fixture()
def env(study_env):
    return study_env


def _study(env, n_test: int):
    config = quick_config(model="tiny-llama", data="builtin", out=str(env / "study"), n_boot=200, progress=False)
    config = ExperimentConfig(**{**config.to_dict(), "editors": ("r-rome",), "parts": ("report",)})
    out = env / "study"
    (out / "locate").mkdir(parents=True)
    (out / "editors").mkdir()
    keys = [f"case:{i}" for i in range(n_test)]
    (out / "split.json").write_text(json.dumps({"proxy": [], "test": keys, "pool": []}))
    # brute-test on the first 12 facts: layer 2 golden, the others clearly worse
    M = np.full((12, len(LAYERS), 2), 0.5)
    M[:, 2, :] = 0.9
    res = BruteForceResult(M, LAYERS, ["rewrite_acc", "locality"], [f"r{i}" for i in range(12)], keys[:12],
                           np.full((12, len(LAYERS)), 0.5), {"method": "r-rome"}, 0.0)
    (out / "locate" / "brute-test.json").write_text(brute_scores(res, n_boot=config.n_boot).to_json())
    (out / "locate" / "brute-proxy.json").write_text(brute_scores(res, n_boot=config.n_boot).to_json())
    return config, out, keys


def test_extras_are_columns_beside_overall_on_the_judged_facts(env):
    config, out, keys = _study(env, 24)
    rows = []
    for i, k in enumerate(keys):
        m = {"rewrite_acc": 1.0, "locality": 0.5, "fluency": 5.0 + 0.01 * i}
        if i % 4 == 0:
            m["portability"] = 0.0 if i < 12 else 1.0
        rows.append(json.dumps({"key": k, "metrics": m, "seconds": 1.0}))
    (out / "editors" / "r-rome-L02.jsonl").write_text("\n".join(rows) + "\n")
    (out / "editors" / "fluency-pre.json").write_text(json.dumps({k: 6.0 for k in keys[12:]}))
    ctx = Context(config, None, None, load_facts(config), LAYERS, out)
    e = collect(ctx)["editors"]["r-rome"]
    assert e["metrics"] == ["rewrite_acc", "locality", "portability", "fluency"]
    row = e["rows"][0]
    # overall: rewrite and locality only, as the golden layer's (fluency ~5 would lift it far above 1)
    assert row["overall"]["mean"] == pytest.approx(0.75)
    # the 12 held-apart facts: 3 of them probed (i = 12, 16, 20), all portable
    assert (row["portability"]["mean"], row["portability"]["n"]) == (1.0, 3)
    assert row["fluency"]["mean"] == pytest.approx(np.mean([5.0 + 0.01 * i for i in range(12, 24)]))
    assert e["fluency_unedited"] == {"mean": 6.0, "n": 12}
    md = write_report(ctx).markdown.read_text()
    assert "| method | layer | overall | rewrite_acc | locality | portability | fluency |" in md
    assert "portability on the 3 judged facts with two-hop probes" in md
    assert "(unedited model 6.000 on 12 facts)" in md


def _place_facts() -> list:
    """Builtin facts, those with two-hop probes first (4 probed, 2 without)."""
    reqs, _ = add_portability(load("builtin"))
    probed = [r for r in reqs if r.portability]
    return probed[:4] + [r for r in reqs if not r.portability][:2]


def test_a_row_without_the_wanted_extras_is_edited_again(env, monkeypatch):
    model, tok = load_model("tiny-llama")
    facts = _place_facts()
    keys = [request_key(r) for r in facts]
    folder = env / "editors"
    hp = {"mom2_adjustment": False, "v_num_grad_steps": 2, "context_template_length_params": [[3, 1]]}
    from golden_fast.evaluate import evaluate as real_evaluate

    pre = real_evaluate(model, tok, facts)
    run_editors(model, tok, facts, [1], ["r-rome"], folder, pre, hparams=hp, progress=False)
    first = [json.loads(x) for x in (folder / "r-rome-L01.jsonl").read_text().splitlines()]
    assert len(first) == 6 and not any("fluency" in r["metrics"] for r in first)
    assert all("portability" in r["metrics"] for r in first[:4])  # probes come with the knowedit suite

    edited = []
    real_each = Editor.edit_each
    monkeypatch.setattr(Editor, "edit_each",
                        lambda self, reqs, *a, **k: edited.extend(request_key(r) for r in reqs)
                        or real_each(self, reqs, *a, **k))
    judged = [keys[1], keys[4]]
    run_editors(model, tok, facts, [1], ["r-rome"], folder, pre, hparams=hp, progress=False,
                extra_keys=judged, fluency=True)
    assert edited == judged  # only the judged facts, and only because fluency was missing
    rows = {}
    for line in (folder / "r-rome-L01.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[r["key"]] = r
    assert all("fluency" in rows[k]["metrics"] for k in judged)
    assert all("fluency" not in rows[k]["metrics"] for k in keys if k not in judged)
    # the re-judged row keeps its other metrics (the edit is deterministic)
    for k in judged:
        old = next(r for r in first if r["key"] == k)["metrics"]
        assert {m: v for m, v in rows[k]["metrics"].items() if m != "fluency"} == pytest.approx(old)
    # a third run finds every wanted metric: nothing edited
    edited.clear()
    run_editors(model, tok, facts, [1], ["r-rome"], folder, pre, hparams=hp, progress=False,
                extra_keys=judged, fluency=True)
    assert edited == []


def test_unedited_fluency_is_the_plain_evaluation_and_is_kept(env, monkeypatch):
    model, tok = load_model("tiny-llama")
    facts = _place_facts()[:3]
    got = pre_fluency(model, tok, facts, env)
    want = evaluate(model, tok, facts, fluency=True).by_request()
    assert got == {request_key(r): pytest.approx(want[i]["fluency"]) for i, r in enumerate(facts)}
    assert json.loads((env / "fluency-pre.json").read_text()) == pytest.approx(got)
    monkeypatch.setattr("golden_fast.experiment.editors.fluency_scores", lambda *a, **k: pytest.fail("sampled again"))
    assert pre_fluency(model, tok, facts, env) == got
