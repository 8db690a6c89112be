"""bench/paraphrase_grid.py and bench/paraphrase_resample.py: zsRE relation templates, the extra
paraphrases they give a fact, and the rephrase over all paraphrases (synthetic records, no model)."""

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

RECORDS = [
    {"subject": "Alpha", "src": "Which team does Alpha play for?", "rephrase": "On what team is Alpha?"},
    {"subject": "Beta", "src": "On what team is Beta?", "rephrase": "Beta plays for which team?"},
    {"subject": "Gamma", "src": "Who founded Gamma?", "rephrase": "Gamma was founded by whom?"},
    {"subject": "Delta", "src": "Which team does Delta play for?", "rephrase": "Which team is Delta playing for?"},
    # the subject twice in the question: no template from it
    {"subject": "Echo", "src": "Echo or Echo?", "rephrase": "Which team does Echo play for?"},
]


def test_relation_groups_join_templates_through_shared_records():
    groups = pg.relation_groups(RECORDS)
    team = groups["Which team does {} play for?"]
    assert team == {"Which team does {} play for?", "On what team is {}?", "{} plays for which team?",
                    "Which team is {} playing for?"}
    assert groups["Who founded {}?"] == {"Who founded {}?", "{} was founded by whom?"}
    assert "{} or {}?" not in groups and "Echo or {}?" not in groups


def test_extra_paraphrases_are_the_other_templates_filled():
    groups = pg.relation_groups(RECORDS)
    got = pg.extra_paraphrases(RECORDS[0], groups, limit=10)
    # in the order of their templates
    assert got == [t.format("Alpha") for t in sorted(["{} plays for which team?", "Which team is {} playing for?"])]
    assert pg.extra_paraphrases(RECORDS[0], groups, limit=1) == got[:1]
    assert pg.extra_paraphrases(RECORDS[2], groups, limit=10) == []  # its group holds only its own two
    # a record whose question gives no template still gets its paraphrase's group
    others = ["On what team is {}?", "{} plays for which team?", "Which team is {} playing for?"]
    assert pg.extra_paraphrases(RECORDS[4], groups, limit=10) == [t.format("Echo") for t in sorted(others)]


def test_with_paraphrases_adds_probes_answered_by_the_new_target():
    req = EditRequest(prompt=RECORDS[0]["src"], subject="Alpha", target_new="Zeta FC",
                      rephrase_prompts=(RECORDS[0]["rephrase"],), index=0)
    out = pg.with_paraphrases([req], RECORDS, limit=4)[0]
    assert [p.prompt for p in out.portability] == pg.extra_paraphrases(RECORDS[0], pg.relation_groups(RECORDS), 4)
    assert all(p.answers == ("Zeta FC",) and p.name == pg.PROBE_NAME for p in out.portability)
    assert out.rephrase_prompts == req.rephrase_prompts and out.prompt == req.prompt
    wrong = EditRequest(prompt="Who founded Gamma?", subject="Gamma", target_new="x", index=0)
    with pytest.raises(SystemExit, match="not record 0"):
        pg.with_paraphrases([wrong], RECORDS, limit=4)


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
