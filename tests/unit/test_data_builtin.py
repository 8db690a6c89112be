"""The built-in fact set: packaged, valid, and shaped for editing experiments."""

from __future__ import annotations

from collections import Counter
from importlib import resources

from golden_fast.data import EditRequest, builtin_facts, builtin_records, detect_format


def test_packaged_and_in_our_format():
    assert resources.files("golden_fast.data").joinpath("builtin", "facts.json").is_file()
    records = builtin_records()
    assert detect_format(records) == "golden-fast"
    records[0]["subject"] = "mutated"
    assert builtin_records()[0]["subject"] != "mutated", "callers get a fresh copy"


def test_enough_complete_counterfactuals():
    facts = builtin_facts()
    assert len(facts) >= 64
    assert all(isinstance(r, EditRequest) for r in facts)
    assert [r.index for r in facts] == list(range(len(facts)))
    assert len({r.case_id for r in facts}) == len(facts), "case_ids are unique"
    assert len({(r.template, r.subject) for r in facts}) == len(facts), "no fact is edited twice"
    for r in facts:
        assert r.is_template and r.prompt.count("{}") == 1, r.ref
        assert r.target_new and r.ground_truth and r.target_new != r.ground_truth, r.ref
        assert len(r.rephrase_prompts) == 1 and r.subject in r.rephrase_prompts[0], r.ref
        assert len(r.locality) == 1, r.ref
        # locality is about another subject, with its true answer
        assert r.subject not in r.locality[0].prompt, r.ref
    assert sum(bool(r.portability) for r in facts) >= 8


def test_batch_safe_locality():
    """Editing the whole set at once (MEMIT/EMMET) must not rewrite a locality probe:
    no locality prompt is the prompt of an edit in the set."""
    facts = builtin_facts()
    edited = {r.text for r in facts}
    assert not {p.prompt for r in facts for p in r.locality} & edited


def test_relations_are_varied():
    templates = Counter(r.template for r in builtin_facts())
    assert len(templates) >= 15
    assert max(templates.values()) <= len(builtin_facts()) // 3
