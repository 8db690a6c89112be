"""Loaders: the real benchmark files, every format's conversion, detection, JSONL,
offset/limit, sample/split, and a property test that every malformed record of every
format raises EditRequestError at the right index and field (never another exception,
never a silent skip)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golden_fast.data import (
    FORMATS,
    EditRequest,
    EditRequestError,
    Probe,
    detect_format,
    from_records,
    load,
    read_records,
    resolve_format,
    sample,
    split,
    validate,
    validate_records,
)
from golden_fast.data.location import data_dir

# the data folder: $GOLDEN_FAST_DATA (golden_fast.data.location)
DATA = data_dir() or Path("data")


def data_file(rel: str) -> Path:
    path = DATA / rel
    if not path.is_file():
        pytest.skip(f"benchmark file {path} not present (set GOLDEN_FAST_DATA to the data folder)")
    return path


# ---- the real files ------------------------------------------------------------------


@pytest.fixture(scope="module")
def counterfact() -> dict[str, list[EditRequest]]:
    return {name: load(data_file(f"counterfact/counterfact-{name}.json")) for name in ("edit", "train")}


def test_counterfact_files_load(counterfact):
    for name, reqs in counterfact.items():
        assert len(reqs) == 10_000, name
        assert [r.index for r in reqs] == list(range(10_000))
        assert all(len(r.rephrase_prompts) == 1 and len(r.locality) == 1 for r in reqs)
        assert all(r.locality[0].name == "neighborhood" and r.subject in r.text for r in reqs)
    ids = {name: {r.case_id for r in reqs} for name, reqs in counterfact.items()}
    assert len(ids["edit"]) == len(ids["train"]) == 10_000
    assert not ids["edit"] & ids["train"], "the two CounterFact files must have disjoint case_ids"
    first = counterfact["edit"][0]
    assert (first.case_id, first.subject, first.target_new, first.ground_truth) == (
        0,
        "Danielle Darrieux",
        "English",
        "French",
    )
    assert first.template == "The mother tongue of {} is"
    assert first.locality[0] == Probe("Michel Rocard is a native speaker of", ("French",), "neighborhood")


def test_counterfact_validates_clean():
    ok, errors = validate(data_file("counterfact/counterfact-edit.json"), limit=2000)
    assert (len(ok), errors) == (2000, [])


def test_zsre_file():
    path = data_file("zsre/zsre_mend_train-1k.json")
    assert detect_format(read_records(path)) == "zsre"
    ok, errors = validate(path)
    assert len(ok) + len(errors) == 1000
    # the released file has 17 records whose alt equals the answer and 2 with an empty
    # alt: each must be reported, located, never dropped silently
    assert len(errors) == 19
    assert all(e.field == "alt" and e.case_id is None for e in errors)
    assert {e.index for e in errors} >= {101, 534, 723}
    assert sum("equals ground_truth" in e.reason for e in errors) == 17
    with pytest.raises(EditRequestError, match=r"^record 101: field 'alt': equals ground_truth 'Carabidae'"):
        load(path)
    r = ok[0]
    assert (r.subject, r.target_new, r.ground_truth) == ("UniFirst", "unmanned aircraft", "uniform")
    assert r.rephrase_prompts == ("What will be the product of UniFirst?",)
    assert r.locality[0].prompt.startswith("nq question: ") and r.locality[0].name == "nq"
    assert load(path, limit=100) == ok[:100]  # the first defect is record 101


def test_known1000_file():
    reqs = load(data_file("known_1000.json"))
    assert len(reqs) == 1209
    assert all(r.target_new is None and r.ground_truth for r in reqs)
    assert reqs[0].case_id == 0 and reqs[0].ground_truth == "Antarctica"
    assert reqs[0].text == "Vinson Massif is located in the continent of"  # the full prompt, not the template
    assert len({r.case_id for r in reqs}) == 1209


# ---- one record per format -----------------------------------------------------------


def cf_flat(i: int = 0, **kw) -> dict:
    d = {
        "case_id": i,
        "prompt": f"The mother tongue of Person{i} is",
        "subject": f"Person{i}",
        "target_new": "English",
        "ground_truth": "French",
        "rephrase_prompt": f"Person{i} speaks",
        "locality_prompt": "Michel speaks",
        "locality_ground_truth": "French",
    }
    return {**d, **kw}


def cf_rome(i: int = 0) -> dict:
    return {
        "case_id": i,
        "pararel_idx": 1,
        "requested_rewrite": {
            "prompt": "The mother tongue of {} is",
            "relation_id": "P103",
            "subject": f"Person{i}",
            "target_new": {"str": "English", "id": "Q1860"},
            "target_true": {"str": "French", "id": "Q150"},
        },
        "paraphrase_prompts": ["Fun fact. Person speaks", "Person's mother tongue is"],
        "neighborhood_prompts": ["Michel speaks", "Anne's mother tongue is"],
        "attribute_prompts": ["Jo speaks"],
        "generation_prompts": ["Person was born in"],
    }


def zsre(i: int = 0) -> dict:
    return {
        "subject": f"Acme{i}",
        "src": f"What is the product made by Acme{i}?",
        "pred": "uniform",
        "rephrase": f"What does Acme{i} make?",
        "alt": "aircraft",
        "answers": ["uniform", "uniforms"],
        "loc": "nq question: who wrote hamlet",
        "loc_ans": "Shakespeare",
        "cond": "ignored",
    }


def knowedit(i: int = 0) -> dict:
    return {
        "subject": f"Tower{i}",
        "prompt": f"Tower{i} is in",
        "target_new": "Rome",
        "ground_truth": ["Paris"],
        "rephrase": [f"Tower{i} stands in"],
        "portability": {
            "Reasoning": [{"prompt": f"Tower{i} is in the country", "ground_truth": [["Italy", "IT"]]}],
            "Subject_Aliasing": [{"prompt": "The tower is in", "ground_truth": "Rome"}],
        },
        "locality": {
            "Relation_Specificity": [
                {
                    "prompt": f"Tower{i} was built by",
                    "ground_truth": [["Eiffel"], ["Gustave Eiffel", "Eiffel"]],
                }
            ]
        },
    }


def known(i: int = 0) -> dict:
    return {
        "known_id": i,
        "subject": f"Mount{i}",
        "attribute": "Antarctica",
        "template": "{} is in the continent",
        "prediction": " Antarctica.",
        "prompt": f"Mount{i} is in the continent of",
        "relation_id": "P30",
    }


def native(i: int = 0) -> dict:
    return EditRequest(
        "The capital of {} is",
        f"Land{i}",
        "Rome",
        "Paris",
        ("Land's capital:",),
        (Probe("The capital of Spain is", ("Madrid",)),),
        case_id=f"c{i}",
    ).to_dict()


BUILDERS = {
    "counterfact": cf_flat,
    "counterfact-rome": cf_rome,
    "zsre": zsre,
    "knowedit": knowedit,
    "known1000": known,
    "golden-fast": native,
}


def test_every_format_has_a_builder():
    assert set(BUILDERS) == set(FORMATS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_detection(fmt):
    records = [BUILDERS[fmt](i) for i in range(3)]
    assert detect_format(records) == fmt
    # one broken record on top does not mislead the vote
    assert detect_format([{"junk": 1}, *records]) == fmt
    assert len(from_records(records)) == 3


def test_detection_failures():
    with pytest.raises(ValueError, match="cannot detect.*known formats?: counterfact"):
        detect_format([{"foo": 1}, {"bar": 2}])
    with pytest.raises(
        ValueError, match="unknown data format 'csv'; known formats: counterfact, counterfact-rome"
    ):
        from_records([cf_flat()], format="csv")
    assert resolve_format("known_1000") == "known1000" and resolve_format("CounterFact") == "counterfact"


def test_rome_conversion():
    (r,) = from_records([cf_rome(5)])
    assert (r.case_id, r.subject, r.target_new, r.ground_truth) == (5, "Person5", "English", "French")
    assert r.is_template and r.text == "The mother tongue of Person5 is"
    assert r.rephrase_prompts == ("Fun fact. Person speaks", "Person's mother tongue is")
    assert r.locality == (
        Probe("Michel speaks", ("French",), "neighborhood"),
        Probe("Anne's mother tongue is", ("French",), "neighborhood"),
    )
    assert r.generation_prompts == ("Person was born in",)


def test_knowedit_conversion():
    (r,) = from_records([knowedit()])
    assert r.ground_truth == "Paris" and r.rephrase_prompts == ("Tower0 stands in",)
    assert r.portability == (
        Probe("Tower0 is in the country", ("Italy", "IT"), "Reasoning"),
        Probe("The tower is in", ("Rome",), "Subject_Aliasing"),
    )
    # several answers with aliases flatten into one alias list, duplicates dropped
    assert r.locality == (Probe("Tower0 was built by", ("Eiffel", "Gustave Eiffel"), "Relation_Specificity"),)
    minimal = {"subject": "X", "prompt": "X is", "target_new": "Y", "rephrase": "X is said to be"}
    (m,) = from_records([minimal], "knowedit")
    assert m.ground_truth is None and m.rephrase_prompts == ("X is said to be",) and m.portability == ()


def test_zsre_and_known_conversion():
    (z,) = from_records([zsre()])
    assert (z.target_new, z.ground_truth, z.case_id) == ("aircraft", "uniform", None)
    assert z.locality == (Probe("nq question: who wrote hamlet", ("Shakespeare",), "nq"),)
    (k,) = from_records([known(3)])
    assert (k.case_id, k.target_new, k.ground_truth, k.text) == (
        3,
        None,
        "Antarctica",
        "Mount3 is in the continent of",
    )


# ---- files: JSON, JSONL, offset/limit ------------------------------------------------


def test_json_and_jsonl_files(tmp_path):
    records = [cf_flat(i) for i in range(10)]
    as_json = tmp_path / "cf.json"
    as_json.write_text(json.dumps(records, indent=2))
    as_jsonl = tmp_path / "cf.jsonl"
    as_jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    a, b = load(as_json), load(as_jsonl)
    assert a == b and len(a) == 10 and a[3].case_id == 3
    single = tmp_path / "one.json"
    single.write_text(json.dumps(records[0], indent=2))
    assert load(single) == a[:1]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert load(empty) == []
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(records[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        load(broken)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.json")


def test_golden_fast_files_round_trip(tmp_path):
    reqs = from_records([cf_rome(i) for i in range(4)])
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r.to_dict()) for r in reqs))
    assert load(path) == reqs
    assert load(path, format="golden-fast") == reqs


def test_offset_and_limit_keep_file_positions(tmp_path):
    path = tmp_path / "cf.json"
    path.write_text(json.dumps([cf_flat(i) for i in range(10)]))
    part = load(path, offset=3, limit=4)
    assert [r.index for r in part] == [3, 4, 5, 6] and [r.case_id for r in part] == [3, 4, 5, 6]
    assert load(path, offset=8, limit=10) == load(path)[8:]
    assert load(path, limit=0) == [] and load(path, offset=20) == []
    # a bad record outside the window is not read; inside, its file position is named
    records = [cf_flat(i) for i in range(10)]
    records[7]["subject"] = ""
    path.write_text(json.dumps(records))
    assert len(load(path, limit=7)) == 7
    with pytest.raises(EditRequestError) as info:
        load(path, offset=5)
    assert (info.value.index, info.value.case_id, info.value.field) == (7, 7, "subject")
    for bad in (dict(offset=-1), dict(limit=-2), dict(limit=1.5)):
        with pytest.raises(ValueError):
            load(path, **bad)


def test_validate_collects_every_bad_record(tmp_path):
    records = [cf_flat(i) for i in range(20)]
    del records[2]["locality_prompt"]
    records[5]["target_new"] = "French"
    records[11] = "not a record"
    records[13]["requested_rewrite"] = 1  # unknown extra keys are ignored in foreign formats
    path = tmp_path / "cf.json"
    path.write_text(json.dumps(records))
    ok, errors = validate(path)
    assert len(ok) == 17
    assert [(e.index, e.field) for e in errors] == [(2, "locality_prompt"), (5, "target_new"), (11, None)]
    assert str(errors[0]) == "record 2 (case_id 2): field 'locality_prompt': missing"


def test_builtin_word(tmp_path, monkeypatch):
    reqs = load("builtin")
    assert len(reqs) >= 64 and reqs == load("builtin", format="golden-fast")
    assert load("builtin", limit=5, offset=2) == reqs[2:7]
    with pytest.raises(ValueError, match="golden-fast format"):
        load("builtin", format="zsre")
    # a real file called "builtin" wins over the word
    monkeypatch.chdir(tmp_path)
    (tmp_path / "builtin").write_text(json.dumps([cf_flat()]))
    assert len(load("builtin")) == 1


# ---- sample / split ------------------------------------------------------------------


def test_sample_is_deterministic_and_ignores_global_rng():
    items = list(range(100))
    random.seed(1)
    a = sample(items, 10, seed=3)
    random.seed(2)
    random.random()
    assert sample(items, 10, seed=3) == a
    assert sample(items, 10, seed=4) != a
    assert len(set(a)) == 10 and a == sorted(a)  # distinct, original order
    assert sample(items, 100) == items and sample(items, 0) == []
    with pytest.raises(ValueError, match="cannot sample 101 of 100"):
        sample(items, 101)
    with pytest.raises(ValueError):
        sample(items, -1)


@pytest.mark.parametrize(("n", "fraction"), [(100, 0.2), (7, 0.5), (2, 0.01), (2, 0.99), (1000, 0.9)])
def test_split_is_a_deterministic_partition(n, fraction):
    items = [f"r{i}" for i in range(n)]
    proxy, test = split(items, fraction, seed=11)
    assert (proxy, test) == split(items, fraction, seed=11)
    assert not set(proxy) & set(test) and sorted(proxy + test) == sorted(items)
    assert proxy and test
    assert len(proxy) == min(max(round(fraction * n), 1), n - 1)
    assert proxy == [x for x in items if x in set(proxy)]  # original order kept


def test_split_seed_matters_and_bad_arguments():
    items = list(range(50))
    assert split(items, 0.5, seed=0) != split(items, 0.5, seed=1)
    for bad in (0, 1, -0.1, 1.5, True):
        with pytest.raises(ValueError):
            split(items, bad)
    with pytest.raises(ValueError, match="at least 2"):
        split([1], 0.5)


# ---- property: malformed records never slip through ----------------------------------

# values of the wrong type for a string field (lists are tested separately: their
# errors point one level deeper)
WRONG = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
BLANK = st.sampled_from(["", " ", "\n\t "])


def drop(path: list):
    def f(rec):
        node = rec
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]

    return f


def put(path: list, value):
    def f(rec):
        node = rec
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value

    return f


def mutations(fmt: str, wrong: object, blank: str) -> list[tuple[str, object]]:
    """(expected error field, mutation) pairs for one record of `fmt`; `wrong` is a
    value of the wrong type, `blank` an empty or blank string."""
    out: list[tuple[str, object]] = []

    def strings(*paths):
        for p in paths:
            name = ".".join(str(k) for k in p)
            out.extend([(name, drop(p)), (name, put(p, wrong)), (name, put(p, blank)), (name, put(p, None))])

    if fmt == "counterfact":
        strings(
            *[
                [k]
                for k in (
                    "prompt",
                    "subject",
                    "target_new",
                    "ground_truth",
                    "rephrase_prompt",
                    "locality_prompt",
                    "locality_ground_truth",
                )
            ]
        )
        out += [
            ("case_id", drop(["case_id"])),
            ("case_id", put(["case_id"], [1])),
            ("case_id", put(["case_id"], None)),
            ("subject", put(["subject"], "Nobody~")),
            ("target_new", put(["target_new"], " French ")),
        ]
    elif fmt == "counterfact-rome":
        rw = "requested_rewrite"
        strings([rw, "prompt"], [rw, "subject"], [rw, "target_new", "str"], [rw, "target_true", "str"])
        out += [
            ("case_id", drop(["case_id"])),
            (rw, drop([rw])),
            (rw, put([rw], "text")),
            (f"{rw}.target_new", put([rw, "target_new"], "English")),
            (f"{rw}.target_true", drop([rw, "target_true"])),
            (f"{rw}.prompt", put([rw, "prompt"], "no slot here")),
            (f"{rw}.prompt", put([rw, "prompt"], "{} and {}")),
            (f"{rw}.target_new.str", put([rw, "target_new", "str"], "French")),
            ("paraphrase_prompts", drop(["paraphrase_prompts"])),
            ("paraphrase_prompts", put(["paraphrase_prompts"], "x")),
            ("paraphrase_prompts[1]", put(["paraphrase_prompts", 1], wrong)),
            ("neighborhood_prompts[0]", put(["neighborhood_prompts", 0], blank)),
            ("generation_prompts", put(["generation_prompts"], wrong)),
        ]
    elif fmt == "zsre":
        strings(["subject"], ["src"], ["rephrase"], ["alt"], ["loc"], ["loc_ans"])
        out += [
            ("answers", drop(["answers"])),
            ("answers", put(["answers"], [])),
            ("answers", put(["answers"], "uniform")),
            ("answers[0]", put(["answers", 0], wrong)),
            ("answers[1]", put(["answers", 1], blank)),
            ("subject", put(["subject"], "Nobody~")),
            ("alt", put(["alt"], "uniform ")),
        ]
    elif fmt == "knowedit":
        strings(["subject"], ["prompt"], ["target_new"])
        pr, lo = "portability.Reasoning[0]", "locality.Relation_Specificity[0]"
        out += [
            ("ground_truth", put(["ground_truth"], wrong)),
            ("ground_truth", put(["ground_truth"], [])),
            ("ground_truth[0]", put(["ground_truth"], [blank])),
            ("target_new", put(["target_new"], "Paris")),
            ("subject", put(["subject"], "Nobody~")),
            ("rephrase", put(["rephrase"], wrong)),
            ("rephrase[0]", put(["rephrase"], [wrong])),
            ("portability", put(["portability"], [1])),
            ("portability.Reasoning", put(["portability", "Reasoning"], "x")),
            (pr, put(["portability", "Reasoning", 0], "x")),
            (f"{pr}.prompt", drop(["portability", "Reasoning", 0, "prompt"])),
            (f"{pr}.prompt", put(["portability", "Reasoning", 0, "prompt"], wrong)),
            (f"{pr}.ground_truth", drop(["portability", "Reasoning", 0, "ground_truth"])),
            (f"{pr}.ground_truth", put(["portability", "Reasoning", 0, "ground_truth"], wrong)),
            (f"{pr}.ground_truth[0]", put(["portability", "Reasoning", 0, "ground_truth"], [[]])),
            (f"{pr}.ground_truth[0][1]", put(["portability", "Reasoning", 0, "ground_truth", 0, 1], wrong)),
            (
                f"{lo}.ground_truth[1][0]",
                put(["locality", "Relation_Specificity", 0, "ground_truth", 1, 0], blank),
            ),
            (f"{lo}.prompt", put(["locality", "Relation_Specificity", 0, "prompt"], blank)),
            ("case_id", put(["case_id"], [3])),
        ]
    elif fmt == "known1000":
        strings(["subject"], ["attribute"], ["prompt"])
        out += [
            ("known_id", drop(["known_id"])),
            ("known_id", put(["known_id"], 1.5)),
            ("subject", put(["subject"], "Nobody~")),
        ]
    elif fmt == "golden-fast":
        strings(["prompt"], ["subject"])
        out += [
            ("target_new", put(["target_new"], wrong)),
            ("ground_truth", put(["ground_truth"], blank)),
            ("target_new", put(["target_new"], "Paris")),
            ("target_new", lambda r: r.update(target_new=None, ground_truth=None)),
            ("subject", put(["prompt"], "A literal prompt without it")),
            ("prompt", put(["prompt"], "{} {} is")),
            ("rephrase_prompts", put(["rephrase_prompts"], wrong)),
            ("rephrase_prompts[0]", put(["rephrase_prompts", 0], blank)),
            ("locality", put(["locality"], wrong)),
            ("locality[0]", put(["locality", 0], "x")),
            ("locality[0].answers", put(["locality", 0, "answers"], [])),
            ("locality[0].answers", drop(["locality", 0, "answers"])),
            ("locality[0].answers[0]", put(["locality", 0, "answers", 0], wrong)),
            ("locality[0].prompt", put(["locality", 0, "prompt"], blank)),
            ("locality[0].name", put(["locality", 0, "name"], 3)),
            ("portability", put(["portability"], {"a": 1})),
            ("generation_prompts[0]", put(["generation_prompts"], [wrong])),
            ("case_id", put(["case_id"], [1])),
            ("rephrase", put(["rephrase"], "unknown key")),
        ]
    return out


# every (format, mutation) pair is its own test case, so none is left to chance;
# hypothesis varies the bad values, the file size, the bad record's position and the start
CASES = [(fmt, k, field) for fmt in FORMATS for k, (field, _) in enumerate(mutations(fmt, 1, ""))]


@pytest.mark.parametrize(("fmt", "k", "field"), CASES, ids=[f"{f}-{k}-{name}" for f, k, name in CASES])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    wrong=WRONG,
    blank=BLANK,
    n=st.integers(1, 6),
    where=st.floats(0, 1, exclude_max=True),
    start=st.integers(0, 3),
)
def test_malformed_records_raise_located_errors(fmt, k, field, wrong, blank, n, where, start):
    records = [BUILDERS[fmt](i) for i in range(n)]
    bad = int(where * n)
    name, mutate = mutations(fmt, wrong, blank)[k]
    assert name == field
    mutate(records[bad])
    id_key = {"known1000": "known_id"}.get(fmt, "case_id")
    raw_id = records[bad].get(id_key)

    with pytest.raises(EditRequestError) as info:
        from_records(records, fmt, start=start)
    err = info.value
    assert (err.index, err.field) == (bad + start, field), str(err)
    assert str(err).startswith(f"record {bad + start}") and f"field '{field}'" in str(err)
    if field != id_key and isinstance(raw_id, (int, str)) and not isinstance(raw_id, bool):
        assert err.case_id == raw_id and f"(case_id {raw_id})" in str(err)

    ok, errors = validate_records(records, fmt, start=start)
    assert len(ok) == n - 1 and len(errors) == 1, "a bad record must be reported, not skipped"
    assert (errors[0].index, errors[0].field) == (bad + start, field)


@pytest.mark.parametrize("fmt", FORMATS)
def test_valid_records_of_every_format_round_trip(fmt):
    reqs = from_records([BUILDERS[fmt](i) for i in range(3)], fmt)
    assert [EditRequest.from_dict(r.to_dict()) for r in reqs] == reqs
    assert from_records([r.to_dict() for r in reqs], "golden-fast") == reqs
