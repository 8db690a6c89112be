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
