"""bench/paraphrase_grid.py and bench/paraphrase_resample.py: the template paraphrases as portability probes,
and the rephrase over all paraphrases (synthetic requests, no model)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import paraphrase_grid as pg  # noqa: E402
import paraphrase_resample as pr  # noqa: E402

from golden_fast.data.request import EditRequest  # noqa: E402

SOURCE = [
    EditRequest(prompt="On what team is Beta?", subject="Beta", target_new="x",
                rephrase_prompts=("Beta plays for which team?",)),
]


def test_with_paraphrases_adds_probes_answered_by_the_new_target():
    req = EditRequest(prompt="Which team does Alpha play for?", subject="Alpha", target_new="Zeta FC",
                      rephrase_prompts=("On what team is Alpha?",), index=0)
    out = pg.with_paraphrases([req], SOURCE, limit=4)[0]
    assert [p.prompt for p in out.portability] == ["Alpha plays for which team?"]
    assert all(p.answers == ("Zeta FC",) and p.name == pg.PROBE_NAME for p in out.portability)
    assert out.rephrase_prompts == req.rephrase_prompts and out.prompt == req.prompt
    assert pg.with_paraphrases([req], [], limit=4)[0].portability == ()


def test_all_paraphrases_is_the_mean_over_every_prompt():
    single = np.array([[1.0, 0.0], [0.5, 0.5]])
    extra = np.array([[0.0, 1.0], [np.nan, np.nan]])  # the second fact has no extra paraphrase
    got = pr.all_paraphrases(single, extra, np.array([3, 0]))
    np.testing.assert_allclose(got, [[0.25, 0.75], [0.5, 0.5]])
    np.testing.assert_allclose(pr.all_paraphrases(single, None, np.array([0, 0])), single)


def test_rekey_names_an_unknown_fact():
    rows = {"g1": {0: {"rewrite_acc": 1.0}}}
    assert pr.rekey(rows, {"g1": "s1"}) == {"s1": rows["g1"]}
    with pytest.raises(SystemExit, match="g1"):
        pr.rekey(rows, {})


def test_portability_probes_and_rephrase_prompts_give_the_same_mean():
    """The grid scores the extra paraphrases as portability probes; the hybrid appends them to the rephrase
    prompts. Both routes give the same rephrase over all paraphrases (`all_paraphrases`), in accuracy
    and in probability, on a real evaluation (tiny model)."""
    import dataclasses

    from golden_fast.evaluate import evaluate
    from golden_fast.models import load_model

    model, tok = load_model("tiny-llama")
    base = EditRequest(prompt="Which team does Alpha play for?", subject="Alpha", target_new="Zeta FC",
                       rephrase_prompts=("On what team is Alpha?",), index=0)
    grid = pg.with_paraphrases([base], SOURCE + [
        EditRequest(prompt="Which team is Gamma playing for?", subject="Gamma", target_new="y",
                    rephrase_prompts=("On what team is Gamma?",))], limit=4)[0]
    extra = [p.prompt for p in grid.portability]
    assert len(extra) == 2
    rich = dataclasses.replace(base, rephrase_prompts=base.rephrase_prompts + tuple(extra))
    suites = ("knowedit", "soft")

    def values(req):
        return {r.metric: r.value for r in evaluate(model, tok, [req], suites=suites).rows}

    g, h = values(grid), values(rich)
    for one, other, name in (("rephrase_acc", "portability", "rephrase_acc"),
                             ("rephrase_prob", "portability_prob", "rephrase_prob")):
        want = pr.all_paraphrases(np.array([[g[one]]]), np.array([[g[other]]]), np.array([len(extra)]))[0, 0]
        assert h[name] == pytest.approx(want, abs=1e-9)
