"""EditRequest / Probe: validation at construction, the text/template views, the error
messages, and the to_dict/from_dict round trip (property-tested)."""

from __future__ import annotations

import dataclasses
import pickle
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden_fast.data import EditRequest, EditRequestError, Probe


def make(**kw) -> EditRequest:
    base = dict(prompt="The capital of {} is", subject="France", target_new="Berlin", ground_truth="Paris")
    base.update(kw)
    return EditRequest(**base)


# ---- views ---------------------------------------------------------------------------


def test_template_prompt_views():
    r = make()
    assert r.is_template
    assert r.text == "The capital of France is"
    assert r.template == "The capital of {} is"


def test_literal_prompt_views_use_last_occurrence():
    r = make(prompt="Paris, Paris, the city of", subject="Paris", target_new="Italy", ground_truth="France")
    assert not r.is_template
    assert r.text == "Paris, Paris, the city of"
    assert r.template == "Paris, {}, the city of"


def test_text_leaves_other_braces_alone():
    r = make(prompt="In {x} and {0}, {} is", subject="S")
    assert r.text == "In {x} and {0}, S is"


def test_targets_are_stripped_and_lists_become_tuples():
    r = make(
        target_new="  Berlin ",
        ground_truth="Paris\n",
        rephrase_prompts=["France's capital is"],
        locality=[Probe("The capital of Spain is", [" Madrid "])],
    )
    assert (r.target_new, r.ground_truth) == ("Berlin", "Paris")
    assert r.rephrase_prompts == ("France's capital is",)
    assert isinstance(r.locality, tuple) and r.locality[0].answers == ("Madrid",)
    hash(r)  # frozen and hashable, tuples all the way down


def test_probe_single_answer_shorthand_and_canonical():
    p = Probe("Q", "A")
    assert p.answers == ("A",) and p.answer == "A" and p.name == ""


def test_trace_only_request():
    r = EditRequest("Vinson Massif is located in", "Vinson Massif", None, "Antarctica", case_id=0, index=0)
    assert r.target_new is None and r.ground_truth == "Antarctica"


@pytest.mark.parametrize(
    ("index", "case_id", "ref"),
    [
        (12, 4031, "record 12 (case_id 4031)"),
        (12, None, "record 12"),
        (None, "a", "request (case_id a)"),
        (None, None, "request"),
    ],
)
def test_ref(index, case_id, ref):
    assert make(index=index, case_id=case_id).ref == ref


def test_replace_revalidates():
    with pytest.raises(EditRequestError):
        dataclasses.replace(make(), target_new="Paris")


# ---- validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "field", "needle"),
    [
        (dict(prompt=""), "prompt", "empty"),
        (dict(prompt="   "), "prompt", "empty"),
        (dict(prompt=3), "prompt", "expected a string"),
        (dict(subject=""), "subject", "empty"),
        (dict(subject=None), "subject", "expected a string"),
        (dict(prompt="The capital of France is", subject="Paris"), "subject", "does not occur"),
        (dict(prompt="{} and {} is"), "prompt", "2 '{}' slots"),
        (dict(target_new=" "), "target_new", "empty"),
        (dict(target_new=5), "target_new", "expected a string"),
        (dict(ground_truth=""), "ground_truth", "empty"),
        (dict(target_new=" Paris "), "target_new", "equals ground_truth"),
        (dict(target_new=None, ground_truth=None), "target_new", "both null"),
        (dict(rephrase_prompts="not a list"), "rephrase_prompts", "expected a list"),
        (dict(rephrase_prompts=("ok", 7)), "rephrase_prompts[1]", "expected a string"),
        (dict(rephrase_prompts=("ok", "")), "rephrase_prompts[1]", "empty"),
        (dict(generation_prompts=[None]), "generation_prompts[0]", "expected a string"),
        (dict(locality=(Probe("q", "a"), "q")), "locality[1]", "expected a Probe"),
        (dict(portability={"q": "a"}), "portability", "expected a list"),
        (dict(case_id=[1]), "case_id", "expected an int"),
        (dict(case_id=True), "case_id", "expected an int"),
        (dict(case_id=" "), "case_id", "empty"),
        (dict(index=-1), "index", "non-negative"),
        (dict(index="3"), "index", "non-negative"),
    ],
)
def test_invalid_fields_raise_located_errors(kw, field, needle):
    kw = {"index": 7, "case_id": 99, **kw}
    with pytest.raises(EditRequestError) as info:
        make(**kw)
    err = info.value
    assert err.field == field
    assert needle in err.reason
    assert isinstance(err, ValueError)
    if field not in ("index", "case_id"):
        assert (err.index, err.case_id) == (7, 99)
        assert str(err).startswith(f"record 7 (case_id 99): field '{field}': ")


def test_error_message_example_from_the_interface():
    with pytest.raises(EditRequestError) as info:
        make(
            prompt="The capital of France is",
            subject="Paris",
            target_new="Rome",
            ground_truth=None,
            index=12,
            case_id=4031,
        )
    assert str(info.value) == (
        "record 12 (case_id 4031): field 'subject': "
        "'Paris' does not occur in prompt 'The capital of France is'"
    )


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("", ("a",)), "prompt"),
        (("q", ()), "answers"),
        (("q", ""), "answers"),
        (("q", ("a", " ")), "answers[1]"),
        (("q", [3]), "answers[0]"),
        (("q", ("a",), 5), "name"),
        ((None, ("a",)), "prompt"),
    ],
)
def test_invalid_probe(args, field):
    with pytest.raises(EditRequestError) as info:
        Probe(*args)
    assert info.value.field == field


def test_error_pickles_and_locates():
    err = EditRequestError("missing", field="subject", index=3, case_id=7)
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) == "record 3 (case_id 7): field 'subject': missing"
    moved = EditRequestError("bad", field="answers").located(index=1, prefix="locality[0]")
    assert moved.field == "locality[0].answers" and moved.index == 1


# ---- from_dict -----------------------------------------------------------------------


def test_from_dict_errors_name_nested_fields():
    d = make(locality=[Probe("q", "a")], index=2).to_dict()
    d["locality"][0]["answers"] = []
    with pytest.raises(EditRequestError) as info:
        EditRequest.from_dict(d)
    assert (info.value.field, info.value.index) == ("locality[0].answers", 2)

    with pytest.raises(EditRequestError) as info:
        EditRequest.from_dict({**make().to_dict(), "rephrase_prompt": "typo"}, index=5)
    assert (info.value.field, info.value.index) == ("rephrase_prompt", 5)

    with pytest.raises(EditRequestError) as info:
        EditRequest.from_dict({"prompt": "x {}"}, index=0)
    assert info.value.field == "subject" and info.value.reason == "missing"

    with pytest.raises(EditRequestError) as info:
        EditRequest.from_dict(["not", "a", "dict"], index=4)
    assert info.value.index == 4 and info.value.field is None


def test_from_dict_index_argument_wins():
    d = make(index=3).to_dict()
    assert EditRequest.from_dict(d).index == 3
    assert EditRequest.from_dict(d, index=9).index == 9


# ---- property: valid requests round-trip ----------------------------------------------

# no braces: a generated "{}" inside a subject would (rightly) be read as a template slot
_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="{}")
_words = st.text(_chars, min_size=1, max_size=12).filter(lambda s: s.strip())
_ids = st.one_of(st.none(), st.integers(0, 10**6), st.text(string.ascii_letters, min_size=1, max_size=6))


@st.composite
def probes(draw) -> Probe:
    return Probe(
        draw(_words),
        tuple(draw(st.lists(_words, min_size=1, max_size=3))),
        draw(st.sampled_from(["", "neighborhood", "Reasoning"])),
    )


@st.composite
def requests(draw) -> EditRequest:
    subject = draw(_words)
    head, tail = draw(st.text(_chars, max_size=10)), draw(st.text(_chars, max_size=10))
    prompt = head + (subject if draw(st.booleans()) else "{}") + tail
    truth = draw(st.one_of(st.none(), _words))
    new = draw(st.one_of(st.none(), _words) if truth is not None else _words)
    if new is not None and truth is not None and new.strip() == truth.strip():
        new = new.strip() + "x"
    return EditRequest(
        prompt=prompt,
        subject=subject,
        target_new=new,
        ground_truth=truth,
        rephrase_prompts=tuple(draw(st.lists(_words, max_size=2))),
        locality=tuple(draw(st.lists(probes(), max_size=2))),
        portability=tuple(draw(st.lists(probes(), max_size=2))),
        generation_prompts=tuple(draw(st.lists(_words, max_size=2))),
        case_id=draw(_ids),
        index=draw(st.one_of(st.none(), st.integers(0, 10**5))),
    )


@settings(max_examples=100, deadline=None)
@given(requests())
def test_round_trip(r: EditRequest):
    import json

    d = r.to_dict()
    assert EditRequest.from_dict(d) == r
    assert EditRequest.from_dict(json.loads(json.dumps(d))) == r  # through real JSON too
    assert r.subject in r.text
    assert r.template.count("{}") == 1 and r.template.replace("{}", r.subject) == r.text
