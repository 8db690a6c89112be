"""Two-hop portability probes from hand-written tables (golden_fast/data/portability.py)."""

from __future__ import annotations

import pytest

from golden_fast.data import EditRequest, Probe, load
from golden_fast.data.location import data_dir
from golden_fast.data.portability import (
    CITIES,
    COUNTRIES,
    EXCLUDED_TEMPLATES,
    RELATION_TEMPLATES,
    add_portability,
    capital_of,
    continent_of,
    countries_of_city,
    country,
    language_of,
    portability_probes,
    probe_answers_from_tables,
    relation_of,
)


def cf(prompt: str, subject: str, target_new: str, ground_truth: str, case_id: int = 0) -> EditRequest:
    """A CounterFact-like (flat EasyEdit) request: literal prompt, one rephrase, one neighbour."""
    return EditRequest(
        prompt=prompt,
        subject=subject,
        target_new=target_new,
        ground_truth=ground_truth,
        rephrase_prompts=(f"{subject} is said to be related to",),
        locality=(Probe("Michel Rocard is a native speaker of", ("French",), "neighborhood"),),
        case_id=case_id,
    )


# ---- tables ----------------------------------------------------------------------------


def test_table_lookups():
    assert capital_of("France") == ("Paris",)
    assert capital_of("Japan") == ("Tokyo",)
    assert capital_of("United States") == ("Washington, D.C.", "Washington")
    assert capital_of("USA") == capital_of("United States"), "listed alternative names count"
    assert capital_of("  Czechia ") == ("Prague",), "whitespace is normalised"
    assert language_of("Poland") == ("Polish",)
    assert language_of("Iran") == ("Persian", "Farsi")
    assert continent_of("Brazil") == ("South America",)
    assert continent_of("Australia") == ("Oceania", "Australia")
    # not unique: co-official languages, split capital, transcontinental
    assert language_of("Canada") is None and language_of("Switzerland") is None
    assert capital_of("South Africa") is None and capital_of("Bolivia") is None
    assert continent_of("Russia") is None and continent_of("Turkey") is None
    # unknown names
    assert country("Atlantis") is None and capital_of("Atlantis") is None
    assert country("france") is None, "exact names only"
    assert countries_of_city("Munich") == ("Germany",)
    assert countries_of_city("Edinburgh") == ("United Kingdom", "Scotland")
    assert countries_of_city("Kiev") == countries_of_city("Kyiv") == ("Ukraine",)
    # names of well-known places in several countries are left out on purpose
    for name in ("Birmingham", "Cambridge", "Santiago", "Victoria", "Georgia", "Jerusalem", "Tripoli"):
        assert countries_of_city(name) is None and country(name) is None, name


def test_tables_are_consistent():
    for name, row in COUNTRIES.items():
        assert row.name == name and row.names[0] == name
        for value in (row.capital, row.language, row.continent):
            assert value is None or (value and all(isinstance(a, str) and a == a.strip() for a in value)), name
    for city, countries in CITIES.items():
        assert countries and city == city.strip(), city
        assert country(city) is None or city in ("Singapore",), f"{city} is both a city and a country"
    # every capital the tables name for a country is a city the tables place in that country
    for row in COUNTRIES.values():
        if row.capital and row.capital[0] in CITIES:
            assert countries_of_city(row.capital[0])[0] in (row.name, "United Kingdom"), row.name
    # a template is either used or excluded, never both
    used = {t for ts in RELATION_TEMPLATES.values() for t in ts}
    excluded = {t for _, ts in EXCLUDED_TEMPLATES.values() for t in ts}
    assert not used & excluded


def test_relation_of():
    assert relation_of("{} is a citizen of") == "citizenship"
    assert relation_of("{}  was born   in") == "birthplace"
    assert relation_of(cf("Apple Inc. is headquartered in", "Apple Inc.", "London", "Cupertino")) == "headquarters"
    assert relation_of("The twin city of {} is") is None  # excluded
    assert relation_of("The mother tongue of {} is") is None  # not a place relation


# ---- probes on hand-made records ---------------------------------------------------------


def test_country_object_gets_capital_and_language():
    req = cf("Danielle Darrieux, a citizen of", "Danielle Darrieux", "Japan", "France")
    assert portability_probes(req) == (
        Probe(
            "The capital of the country of which Danielle Darrieux is a citizen is",
            ("Tokyo",),
            "two_hop:citizenship:capital",
        ),
        Probe(
            "The official language of the country of which Danielle Darrieux is a citizen is",
            ("Japanese",),
            "two_hop:citizenship:language",
        ),
    )


def test_country_without_unique_language_falls_back_to_continent():
    req = cf("Wanne-Eickel Central Station, located in", "Wanne-Eickel Central Station", "Canada", "Germany")
    assert portability_probes(req) == (
        Probe(
            "The capital of the country where Wanne-Eickel Central Station is located is",
            ("Ottawa",),
            "two_hop:located:capital",
        ),
        Probe(
            "The country where Wanne-Eickel Central Station is located is on the continent of",
            ("North America",),
            "two_hop:located:continent",
        ),
    )


def test_city_object_gets_its_country():
    req = cf("Apple Inc. is headquartered in", "Apple Inc.", "London", "Cupertino")
    assert portability_probes(req) == (
        Probe(
            "The city where Apple Inc. is headquartered is in the country of",
            ("United Kingdom", "UK", "Britain", "Great Britain", "England"),
            "two_hop:headquarters:country",
        ),
    )
    req = cf("Sedat Alp died at", "Sedat Alp", "Rome", "Ankara")
    assert portability_probes(req) == (
        Probe("The city where Sedat Alp died is in the country of", ("Italy",), "two_hop:deathplace:country"),
    )


def test_unchanged_and_copying_answers_are_dropped():
    # Manchester and London are both in the United Kingdom: the probe cannot tell edit from no edit
    same = cf("Leonard Cheshire was born in", "Leonard Cheshire", "Manchester", "London")
    assert portability_probes(same) == ()
    assert len(portability_probes(same, drop_unchanged=False)) == 1
    # the old object is a city, the new a country: compared through the city's country
    req = cf("Stuttgart Airport is located in", "Stuttgart Airport", "Austria", "Stuttgart")
    # (German and Europe are the same for Germany and Austria: only the capital is left)
    assert [p.answers for p in portability_probes(req)] == [("Vienna",)]
    # Mexico -> "Mexico City" repeats the object: capital dropped, language and continent kept
    req = cf("Tequila originated in", "Tequila", "Mexico", "Japan")
    assert [p.name for p in portability_probes(req)] == ["two_hop:origin:language", "two_hop:origin:continent"]
    # an answer that the prompt already holds
    req = cf("Tokyo Tower is located in the country of", "Tokyo Tower", "Japan", "France")
    probes = portability_probes(req)
    assert [p.name for p in probes] == ["two_hop:located:language", "two_hop:located:continent"]
    assert add_portability([req])[1].dropped == {"answer_in_prompt": 1}, "Tokyo is in the prompt"


def test_add_portability_counts_what_it_skips():
    reqs = [
        cf("Danielle Darrieux, a citizen of", "Danielle Darrieux", "Japan", "France", 0),
        cf("The mother tongue of Danielle Darrieux is", "Danielle Darrieux", "English", "French", 1),
        cf("Toko Yasuda is a citizen of", "Toko Yasuda", "Wakanda", "Japan", 2),
        cf("The twin city of Lyon is", "Lyon", "Manila", "Beirut", 3),
        cf("Leonard Cheshire was born in", "Leonard Cheshire", "Manchester", "London", 4),
        cf("Sedat Alp died at", "Sedat Alp", "Rome", "Ankara", 5),
        cf("Akira Kurosawa is a citizen of", "Akira Kurosawa", "Paris", "Japan", 6),
    ]
    out, report = add_portability(reqs)
    assert [len(r.portability) for r in out] == [2, 0, 0, 0, 0, 1, 0]
    assert [r.case_id for r in out] == list(range(7)), "order and identity kept"
    assert out[1] is reqs[1], "requests without probes are returned as they are"
    assert out[0].locality == reqs[0].locality and out[0].rephrase_prompts == reqs[0].rephrase_prompts
    assert (report.records, report.probed, report.probes) == (7, 2, 3)
    assert report.skipped == {
        "city_object_for_citizenship": 1,
        "excluded:twin_city": 1,
        "no_probe_left": 1,
        "not_a_place_relation": 1,
        "object_not_in_tables": 1,
    }
    assert report.dropped == {"over_limit": 1, "unchanged": 1}  # Japan's continent: third candidate
    assert report.by_relation == {
        "citizenship": {"records": 3, "probed": 1},
        "birthplace": {"records": 1, "probed": 0},
        "deathplace": {"records": 1, "probed": 1},
    }
    assert report.by_probe == {
        "two_hop:citizenship:capital": 1,
        "two_hop:citizenship:language": 1,
        "two_hop:deathplace:country": 1,
    }
    assert "2 of 7 requests got 3 two-hop probes" in report.summary()
    # deterministic, and idempotent: a second pass adds nothing
    again, report2 = add_portability(reqs)
    assert again == out and report2 == report
    twice, report3 = add_portability(out)
    assert twice == out and report3.probes == 0 and report3.skipped["already_present"] == 2
    # existing probes are kept, new ones appended
    own = Probe("Danielle Darrieux lives in", ("Tokyo",), "mine")
    with_own, _ = add_portability([EditRequest(**{**_fields(reqs[0]), "portability": (own,)})])
    assert with_own[0].portability[0] == own and len(with_own[0].portability) == 3
    with pytest.raises(ValueError):
        add_portability(reqs, max_probes=0)


def _fields(req: EditRequest) -> dict:
    return {k: getattr(req, k) for k in req.__dataclass_fields__}


def test_probes_round_trip_through_the_file_format():
    (req,), _ = add_portability([cf("Danielle Darrieux, a citizen of", "Danielle Darrieux", "Japan", "France")])
    assert EditRequest.from_dict(req.to_dict()) == req


# ---- the real CounterFact file ---------------------------------------------------------------


def _counterfact_path():
    root = data_dir()
    if root is None:
        pytest.skip("no data folder (set $GOLDEN_FAST_DATA)")
    path = root / "counterfact" / "counterfact-edit.json"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


def test_counterfact_first_1000():
    reqs = load(_counterfact_path(), limit=1000)
    out, report = add_portability(reqs)
    print("\n" + report.summary())
    assert report.records == 1000
    # measured when the tables were written: 273 requests, 393 probes
    assert 150 <= report.probed <= 500, report.summary()
    assert report.probed <= report.probes <= 2 * report.probed
    assert set(report.by_relation) == set(RELATION_TEMPLATES), "every relation occurs in the first 1,000"
    assert sum(report.skipped.values()) + report.probed == 1000
    for before, after in zip(reqs, out):
        added = after.portability[len(before.portability) :]
        for probe in added:
            assert probe_answers_from_tables(probe), probe
            assert before.subject in probe.prompt and probe.name.startswith("two_hop:")
            assert before.target_new not in probe.answers
            # the answer is the second hop through the new object
            rel, attribute = probe.name.split(":")[1:]
            assert rel == relation_of(before)
            if attribute == "country":
                expected = countries_of_city(before.target_new)[0]
                assert probe.answers[0] == expected
            else:
                assert probe.answers == getattr(country(before.target_new), attribute)
