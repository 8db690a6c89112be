"""golden_fast.data.paraphrases: relation templates grouped by union-find, and the template paraphrases
they give a fact (against a plain re-derivation on hand-made records)."""

from __future__ import annotations

import pytest

from golden_fast.data import EditRequest
from golden_fast.data.paraphrases import (
    relation_groups,
    subject_template,
    template_paraphrases,
    with_template_paraphrases,
)


def req(subject: str, question: str, *paraphrases: str, index: int = 0) -> EditRequest:
    return EditRequest(prompt=question, subject=subject, target_new="Zeta", rephrase_prompts=paraphrases, index=index)


TEAM = [
    req("Alpha", "Which team does Alpha play for?", "On what team is Alpha?", index=0),
    req("Beta", "On what team is Beta?", "Beta plays for which team?", index=1),
    req("Delta", "Which team does Delta play for?", "Which team is Delta playing for?", index=2),
]
FOUNDER = [req("Gamma", "Who founded Gamma?", "Gamma was founded by whom?", index=3)]


def test_subject_template():
    assert subject_template("Who founded Gamma?", "Gamma") == "Who founded {}?"
    assert subject_template("Echo or Echo?", "Echo") is None  # twice: which one is the slot?
    assert subject_template("Who founded it?", "Gamma") is None
    assert subject_template("Who founded {} Gamma?", "Gamma") is None


def test_groups_join_templates_through_shared_ones():
    groups = relation_groups(TEAM + FOUNDER)
    team = {"Which team does {} play for?", "On what team is {}?", "{} plays for which team?",
            "Which team is {} playing for?"}
    assert all(groups[t] == team for t in team)  # Alpha and Beta share one template, Alpha and Delta another
    assert groups["Who founded {}?"] == {"Who founded {}?", "{} was founded by whom?"}
    # a template request (prompt with "{}") gives the same template as its filled text
    tmpl = req("Omega", "{} plays for which team?")
    assert relation_groups([tmpl])["{} plays for which team?"] == {"{} plays for which team?"}


def test_template_paraphrases_fill_the_other_templates_in_order():
    groups = relation_groups(TEAM + FOUNDER)
    plain = sorted({"Which team does {} play for?", "On what team is {}?", "{} plays for which team?",
                    "Which team is {} playing for?"} - {"Which team does {} play for?", "On what team is {}?"})
    assert template_paraphrases(TEAM[0], groups, 10) == [t.replace("{}", "Alpha") for t in plain]
    assert template_paraphrases(TEAM[0], groups, 1) == [plain[0].replace("{}", "Alpha")]
    assert template_paraphrases(TEAM[0], groups, 0) == []
    assert template_paraphrases(FOUNDER[0], groups, 10) == []  # its group holds only its own two
    stranger = req("Kappa", "Where was Kappa born?")
    assert template_paraphrases(stranger, groups, 10) == []  # its template is in no group


def test_with_template_paraphrases_appends_to_the_rephrase_prompts():
    out = with_template_paraphrases(TEAM[:1], 4, source=TEAM[1:] + FOUNDER)
    groups = relation_groups(TEAM + FOUNDER)
    assert out[0].rephrase_prompts == TEAM[0].rephrase_prompts + tuple(template_paraphrases(TEAM[0], groups, 4))
    assert len(out[0].rephrase_prompts) == 3
    assert out[0].prompt == TEAM[0].prompt and out[0].target_new == TEAM[0].target_new
    # from the requests alone: Alpha's group then holds only its own templates
    assert with_template_paraphrases(TEAM[:1], 4) == TEAM[:1]
    assert with_template_paraphrases(TEAM, 0) == TEAM
    with pytest.raises(ValueError, match="limit"):
        with_template_paraphrases(TEAM, -1)
