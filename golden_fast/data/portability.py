"""A small two-hop portability set for CounterFact, built from hand-written tables.

CounterFact carries no portability probes, and no public portability data is reachable
from here, so this module derives them: when an edit's new object is a country or a
city that the tables below know, the edit has consequences one hop further, e.g.

    "Danielle Darrieux, a citizen of France" -> "Japan"
    => "The capital of the country of which Danielle Darrieux is a citizen is" -> "Tokyo"

    "Apple Inc. is headquartered in Cupertino" -> "London"
    => "The city where Apple Inc. is headquartered is in the country of" -> "United Kingdom"

How the set is built (`add_portability`), deterministically, per request:

1. Relation. CounterFact's flat files hold no relation id, so the relation is read off
   the prompt template (the prompt with the subject replaced by ``{}``, whitespace
   collapsed), by exact match against `RELATION_TEMPLATES`: the templates CounterFact
   uses for "located in" (P17/P131/P276), citizenship (P27), country of origin (P495),
   location of formation (P740), place of birth (P19), place of death (P20) and
   headquarters (P159). Templates of place relations where the two-hop question is
   *not* well defined are listed in `EXCLUDED_TEMPLATES` with the reason (capital:
   contradicts the subject; twin city, work location: several true objects; named
   after: the object may be a person with a place's name; owner, "from", "by":
   the template is shared with non-place relations). Every other template is not a
   place relation.
2. Object. ``target_new`` must be a country of `COUNTRIES` or a city of `CITIES`, by
   exact name (whitespace collapsed; a few listed alternative names such as "Kiev"/
   "Kyiv" count). Names shared by well-known places in different countries
   (Birmingham, Cambridge, Santiago, Victoria, Georgia, ...) are deliberately absent.
3. Probes, answered through the *new* object:
   - a country: the capital, then the official language, then the continent of that
     country (the first two that survive step 4);
   - a city: the country the city is in (one probe); citizenship with a city object is
     skipped (not a well-formed edit).
   Tables hold ``None`` where the answer is not unique (several co-official languages,
   disputed or split capitals, transcontinental countries): those probes are skipped.
4. A probe is dropped when it could not tell an edit from no edit or is answered by
   copying: (a) *unchanged*: the same question asked through ``ground_truth`` (when the
   tables know it) has an overlapping answer, e.g. Manchester -> London, both in the
   United Kingdom; (b) *repeats the object*: an answer contains ``target_new`` as a whole
   word (Mexico -> "Mexico City"); (c) *answer in prompt*: an answer occurs in the probe
   prompt (a subject like "Bank of Japan").

Probes are `Probe(prompt, answers, name)` exactly as the knowedit suite scores them:
the prompt is literal text with the subject filled in, completed by ``" " + answer``;
``answers`` are aliases (first canonical), the best alias counting; ``name`` is
``"two_hop:<relation>:<attribute>"`` (attribute: capital, language, continent, country).

The tables are public general knowledge written for golden-fast (status 2025); they
are small on purpose: only entries whose answer is uncontroversial.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from golden_fast.data.request import EditRequest, Probe

__all__ = [
    "ATTRIBUTES",
    "CITIES",
    "COUNTRIES",
    "EXCLUDED_TEMPLATES",
    "RELATION_CLAUSES",
    "RELATION_TEMPLATES",
    "Country",
    "PortabilityReport",
    "add_portability",
    "capital_of",
    "continent_of",
    "describe_tables",
    "countries_of_city",
    "country",
    "language_of",
    "normalise",
    "portability_probes",
    "probe_answers_from_tables",
    "relation_of",
]


def normalise(text: str) -> str:
    """Whitespace collapsed and stripped: the form every name and template is matched in."""
    return " ".join(text.split())


# ---- tables ----------------------------------------------------------------------------

_EU, _AS, _AF = ("Europe",), ("Asia",), ("Africa",)
_NA, _SA, _OC = ("North America",), ("South America",), ("Oceania", "Australia")


@dataclass(frozen=True)
class Country:
    """One row of `COUNTRIES`. Answer tuples are aliases, first canonical; None where
    the answer is not unique (the probe is then skipped).

    Attributes:
        name: canonical name (the `COUNTRIES` key).
        capital: the capital city.
        language: the single official (national) language.
        continent: the continent, None for transcontinental countries.
        names: how the country is answered (first = `name`), e.g. "USA".
    """

    name: str
    capital: tuple[str, ...] | None
    language: tuple[str, ...] | None
    continent: tuple[str, ...] | None
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", (self.name, *(n for n in self.names if n != self.name)))


def _c(name, capital, language, continent, *names) -> Country:
    tup = lambda v: (v,) if isinstance(v, str) else v  # noqa: E731
    return Country(name, tup(capital), tup(language), tup(continent), tuple(names))


# Languages: None where the country has several co-official national languages
# (Canada, Switzerland, Belgium, Finland, Ireland, India, Singapore, ...).
# Capitals: None where split or disputed (Bolivia, South Africa, Sri Lanka, Israel).
# Continents: None for transcontinental countries (Russia, Turkey, Kazakhstan, Caucasus, Cyprus).
_COUNTRY_ROWS = [
    _c("Afghanistan", "Kabul", None, _AS),
    _c("Albania", "Tirana", "Albanian", _EU),
    _c("Algeria", "Algiers", None, _AF),
    _c("Argentina", "Buenos Aires", "Spanish", _SA),
    _c("Armenia", "Yerevan", "Armenian", None),
    _c("Australia", "Canberra", "English", _OC),
    _c("Austria", "Vienna", "German", _EU),
    _c("Azerbaijan", "Baku", ("Azerbaijani", "Azeri"), None),
    _c("Bahrain", "Manama", "Arabic", _AS),
    _c("Bangladesh", "Dhaka", ("Bengali", "Bangla"), _AS),
    _c("Belarus", "Minsk", None, _EU),
    _c("Belgium", "Brussels", None, _EU),
    _c("Bolivia", None, None, _SA),
    _c("Brazil", ("Brasília", "Brasilia"), "Portuguese", _SA),
    _c("Bulgaria", "Sofia", "Bulgarian", _EU),
    _c("Cambodia", "Phnom Penh", "Khmer", _AS),
    _c("Cameroon", ("Yaoundé", "Yaounde"), None, _AF),
    _c("Canada", "Ottawa", None, _NA),
    _c("Chile", "Santiago", "Spanish", _SA),
    _c("China", "Beijing", ("Chinese", "Mandarin", "Standard Chinese"), _AS),
    _c("Colombia", ("Bogotá", "Bogota"), "Spanish", _SA),
    _c("Croatia", "Zagreb", "Croatian", _EU),
    _c("Cuba", "Havana", "Spanish", _NA),
    _c("Cyprus", "Nicosia", None, None),
    _c("Czech Republic", "Prague", "Czech", _EU, "Czechia"),
    _c("Denmark", "Copenhagen", "Danish", _EU),
    _c("Ecuador", "Quito", "Spanish", _SA),
    _c("Egypt", "Cairo", "Arabic", _AF),
    _c("England", "London", "English", _EU),
    _c("Estonia", "Tallinn", "Estonian", _EU),
    _c("Ethiopia", "Addis Ababa", None, _AF),
    _c("Fiji", "Suva", None, _OC),
    _c("Finland", "Helsinki", None, _EU),
    _c("France", "Paris", "French", _EU),
    _c("Germany", "Berlin", "German", _EU),
    _c("Ghana", "Accra", "English", _AF),
    _c("Greece", "Athens", "Greek", _EU),
    _c("Guatemala", "Guatemala City", "Spanish", _NA),
    _c("Haiti", "Port-au-Prince", None, _NA),
    _c("Honduras", "Tegucigalpa", "Spanish", _NA),
    _c("Hungary", "Budapest", "Hungarian", _EU),
    _c("Iceland", ("Reykjavík", "Reykjavik"), "Icelandic", _EU),
    _c("India", ("New Delhi", "Delhi"), None, _AS),
    _c("Indonesia", "Jakarta", "Indonesian", _AS),
    _c("Iran", "Tehran", ("Persian", "Farsi"), _AS),
    _c("Iraq", "Baghdad", None, _AS),
    _c("Ireland", "Dublin", None, _EU),
    _c("Israel", None, "Hebrew", _AS),
    _c("Italy", "Rome", "Italian", _EU),
    _c("Jamaica", "Kingston", "English", _NA),
    _c("Japan", "Tokyo", "Japanese", _AS),
    _c("Jordan", "Amman", "Arabic", _AS),
    _c("Kazakhstan", "Astana", None, None),
    _c("Kenya", "Nairobi", None, _AF),
    _c("Kuwait", "Kuwait City", "Arabic", _AS),
    _c("Laos", "Vientiane", "Lao", _AS),
    _c("Latvia", "Riga", "Latvian", _EU),
    _c("Lebanon", "Beirut", "Arabic", _AS),
    _c("Libya", "Tripoli", "Arabic", _AF),
    _c("Lithuania", "Vilnius", "Lithuanian", _EU),
    _c("Luxembourg", "Luxembourg", None, _EU),
    _c("Madagascar", "Antananarivo", None, _AF),
    _c("Malaysia", "Kuala Lumpur", ("Malay", "Malaysian"), _AS),
    _c("Malta", "Valletta", None, _EU),
    _c("Mexico", "Mexico City", "Spanish", _NA),
    _c("Monaco", "Monaco", "French", _EU),
    _c("Mongolia", ("Ulaanbaatar", "Ulan Bator"), "Mongolian", _AS),
    _c("Morocco", "Rabat", None, _AF),
    _c("Myanmar", ("Naypyidaw", "Nay Pyi Taw"), "Burmese", _AS, "Burma"),
    _c("Nepal", "Kathmandu", ("Nepali", "Nepalese"), _AS),
    _c("Netherlands", "Amsterdam", "Dutch", _EU, "the Netherlands", "Holland"),
    _c("New Zealand", "Wellington", None, _OC),
    _c("Niger", "Niamey", None, _AF),
    _c("Nigeria", "Abuja", "English", _AF),
    _c("North Korea", "Pyongyang", "Korean", _AS),
    _c("Norway", "Oslo", "Norwegian", _EU),
    _c("Oman", "Muscat", "Arabic", _AS),
    _c("Pakistan", "Islamabad", None, _AS),
    _c("Panama", "Panama City", "Spanish", _NA),
    _c("Paraguay", ("Asunción", "Asuncion"), None, _SA),
    _c("Peru", "Lima", None, _SA),
    _c("Philippines", "Manila", None, _AS, "the Philippines"),
    _c("Poland", "Warsaw", "Polish", _EU),
    _c("Portugal", "Lisbon", "Portuguese", _EU),
    _c("Qatar", "Doha", "Arabic", _AS),
    _c("Romania", "Bucharest", "Romanian", _EU),
    _c("Russia", "Moscow", "Russian", None),
    _c("Rwanda", "Kigali", None, _AF),
    _c("Saudi Arabia", "Riyadh", "Arabic", _AS),
    _c("Scotland", "Edinburgh", None, _EU),
    _c("Senegal", "Dakar", "French", _AF),
    _c("Serbia", "Belgrade", "Serbian", _EU),
    _c("Singapore", "Singapore", None, _AS),
    _c("Slovakia", "Bratislava", "Slovak", _EU),
    _c("Slovenia", "Ljubljana", ("Slovene", "Slovenian"), _EU),
    _c("Somalia", "Mogadishu", None, _AF),
    _c("South Africa", None, None, _AF),
    _c("South Korea", "Seoul", "Korean", _AS),
    _c("Spain", "Madrid", ("Spanish", "Castilian"), _EU),
    _c("Sri Lanka", None, None, _AS),
    _c("Sudan", "Khartoum", None, _AF),
    _c("Sweden", "Stockholm", "Swedish", _EU),
    _c("Switzerland", ("Bern", "Berne"), None, _EU),
    _c("Syria", "Damascus", "Arabic", _AS),
    _c("Taiwan", "Taipei", ("Mandarin", "Chinese"), _AS),
    _c("Tanzania", "Dodoma", None, _AF),
    _c("Thailand", "Bangkok", "Thai", _AS),
    _c("Tunisia", "Tunis", "Arabic", _AF),
    _c("Turkey", "Ankara", "Turkish", None, "Türkiye"),
    _c("Uganda", "Kampala", None, _AF),
    _c("Ukraine", ("Kyiv", "Kiev"), "Ukrainian", _EU),
    _c("United Kingdom", "London", "English", _EU, "UK", "Britain", "Great Britain"),
    _c(
        "United States",
        ("Washington, D.C.", "Washington"),
        "English",
        _NA,
        "United States of America",
        "USA",
        "US",
        "America",
    ),
    _c("Uruguay", "Montevideo", "Spanish", _SA),
    _c("Venezuela", "Caracas", "Spanish", _SA),
    _c("Vietnam", "Hanoi", "Vietnamese", _AS),
    _c("Wales", "Cardiff", None, _EU),
    _c("Yemen", ("Sanaa", "Sana'a"), "Arabic", _AS),
    _c("Zimbabwe", "Harare", None, _AF),
]

#: canonical country name -> `Country`
COUNTRIES: dict[str, Country] = {c.name: c for c in _COUNTRY_ROWS}

# alternative names that count as the country when they are an edit's object
_COUNTRY_NAMES: dict[str, str] = {
    **{c.name: c.name for c in _COUNTRY_ROWS},
    "Czechia": "Czech Republic",
    "Burma": "Myanmar",
    "The Netherlands": "Netherlands",
    "the Netherlands": "Netherlands",
    "Holland": "Netherlands",
    "The Philippines": "Philippines",
    "the Philippines": "Philippines",
    "Türkiye": "Turkey",
    "UK": "United Kingdom",
    "Great Britain": "United Kingdom",
    "United States of America": "United States",
    "USA": "United States",
}

_UK, _US = "United Kingdom", "United States"
_ENG, _SCO, _WAL = (_UK, "England"), (_UK, "Scotland"), (_UK, "Wales")


def _cities(country_names: str | tuple[str, ...], cities: str) -> dict[str, tuple[str, ...]]:
    """{city: countries} for a "; "-separated list of cities."""
    names = (country_names,) if isinstance(country_names, str) else country_names
    return {city.strip(): names for city in cities.split(";")}


# city -> the countries it lies in (first = the sovereign state; UK cities add their nation).
# Left out on purpose: names of well-known places in more than one country (Birmingham,
# Cambridge, Perth, Portsmouth, Plymouth, Canterbury, Newcastle, Halifax, Hamilton, Kingston,
# Waterloo, Victoria, Santiago, Valencia, Guadalajara, Alexandria, Tripoli, Hyderabad,
# Syracuse, Rochester, Olympia, Stamford, Saint Petersburg, Georgetown, Salvador), cities of
# disputed or historical states (Jerusalem, Constantinople, Bethlehem, Babylon, Hong Kong),
# and names that are mostly not cities (Reading, Mobile, Nancy, Gap, Hope).
CITIES: dict[str, tuple[str, ...]] = {
    **_cities(
        _ENG,
        "London; Manchester; Liverpool; Leeds; Sheffield; Bristol; Nottingham; Leicester; Southampton; "
        "Norwich; Oxford; Brighton; Bradford; Coventry; Blackburn; Bolton; Derby",
    ),
    **_cities(_SCO, "Edinburgh; Glasgow; Aberdeen; Dundee"),
    **_cities(_WAL, "Cardiff; Swansea"),
    **_cities((_UK, "Northern Ireland"), "Belfast"),
    **_cities("Ireland", "Dublin; Cork"),
    **_cities(
        _US,
        "New York City; Los Angeles; Chicago; Houston; Philadelphia; Phoenix; San Antonio; San Diego; Dallas; "
        "San Francisco; Seattle; Boston; Detroit; Atlanta; Miami; Baltimore; Pittsburgh; Cincinnati; "
        "Cleveland; Denver; Minneapolis; Milwaukee; Indianapolis; Nashville; Memphis; New Orleans; Las Vegas; "
        "Honolulu; Tampa; Sacramento; Albuquerque; Tucson; Spokane; Tacoma; Fresno; Pasadena; Wichita; "
        "Anaheim; Hartford; Charlotte; St. Louis; Kansas City; Salt Lake City; Washington, D.C.",
    ),
    **_cities("Canada", "Toronto; Montreal; Vancouver; Ottawa; Calgary; Edmonton; Winnipeg"),
    **_cities("Australia", "Sydney; Melbourne; Brisbane; Adelaide; Canberra; Darwin; Hobart"),
    **_cities("New Zealand", "Auckland; Wellington; Christchurch"),
    **_cities("France", "Paris; Lyon; Marseille; Nice; Toulouse; Bordeaux; Strasbourg; Lille; Nantes; Cannes"),
    **_cities(
        "Germany",
        "Berlin; Hamburg; Munich; Cologne; Frankfurt; Dresden; Dortmund; Stuttgart; Düsseldorf; Dusseldorf; "
        "Leipzig; Bonn; Hanover; Hannover; Nuremberg; Bremen",
    ),
    **_cities("Austria", "Vienna; Salzburg; Graz; Innsbruck"),
    **_cities("Switzerland", "Zurich; Zürich; Geneva; Bern; Basel; Lausanne"),
    **_cities("Italy", "Rome; Milan; Naples; Florence; Venice; Turin; Genoa; Bologna; Palermo; Pisa; Verona"),
    **_cities("Spain", "Madrid; Barcelona; Seville; Bilbao; Málaga; Malaga"),
    **_cities("Portugal", "Lisbon; Porto"),
    **_cities("Netherlands", "Amsterdam; Rotterdam; The Hague; Utrecht"),
    **_cities("Belgium", "Brussels; Antwerp; Ghent"),
    **_cities("Denmark", "Copenhagen; Aarhus"),
    **_cities("Sweden", "Stockholm; Gothenburg; Malmö; Malmo; Uppsala"),
    **_cities("Norway", "Oslo; Bergen"),
    **_cities("Finland", "Helsinki"),
    **_cities("Iceland", "Reykjavik; Reykjavík"),
    **_cities("Poland", "Warsaw; Kraków; Krakow; Gdańsk; Gdansk; Wrocław"),
    **_cities("Czech Republic", "Prague; Brno"),
    **_cities("Hungary", "Budapest"),
    **_cities("Romania", "Bucharest"),
    **_cities("Bulgaria", "Sofia"),
    **_cities("Greece", "Athens; Thessaloniki"),
    **_cities("Serbia", "Belgrade"),
    **_cities("Croatia", "Zagreb"),
    **_cities("Slovenia", "Ljubljana"),
    **_cities("Slovakia", "Bratislava"),
    **_cities("Ukraine", "Kyiv; Kiev; Kharkiv; Odesa; Odessa; Lviv"),
    **_cities("Russia", "Moscow; Novosibirsk"),
    **_cities("Belarus", "Minsk"),
    **_cities("Lithuania", "Vilnius"),
    **_cities("Latvia", "Riga"),
    **_cities("Estonia", "Tallinn"),
    **_cities("Turkey", "Istanbul; Ankara; Izmir"),
    **_cities("Iran", "Tehran"),
    **_cities("Iraq", "Baghdad"),
    **_cities("Syria", "Damascus; Aleppo"),
    **_cities("Lebanon", "Beirut"),
    **_cities("Jordan", "Amman"),
    **_cities("Israel", "Tel Aviv; Haifa"),
    **_cities("Saudi Arabia", "Riyadh; Jeddah; Mecca; Medina"),
    **_cities("United Arab Emirates", "Dubai; Abu Dhabi"),
    **_cities("Qatar", "Doha"),
    **_cities("Yemen", "Aden"),
    **_cities("Afghanistan", "Kabul"),
    **_cities("Pakistan", "Karachi; Lahore; Islamabad"),
    **_cities("India", "Mumbai; Delhi; New Delhi; Bangalore; Bengaluru; Chennai; Kolkata; Calcutta; Ahmedabad; Pune"),
    **_cities("Bangladesh", "Dhaka"),
    **_cities("Nepal", "Kathmandu"),
    **_cities("Thailand", "Bangkok"),
    **_cities("Vietnam", "Hanoi; Ho Chi Minh City"),
    **_cities("Cambodia", "Phnom Penh"),
    **_cities("Indonesia", "Jakarta"),
    **_cities("Malaysia", "Kuala Lumpur"),
    **_cities("Philippines", "Manila"),
    **_cities("China", "Beijing; Shanghai; Guangzhou; Shenzhen; Wuhan; Nanjing; Chengdu"),
    **_cities("Japan", "Tokyo; Osaka; Kyoto; Hiroshima; Yokohama; Nagoya; Sapporo; Nagasaki"),
    **_cities("South Korea", "Seoul; Busan"),
    **_cities("North Korea", "Pyongyang"),
    **_cities("Egypt", "Cairo"),
    **_cities("Nigeria", "Lagos; Abuja"),
    **_cities("Kenya", "Nairobi"),
    **_cities("Ethiopia", "Addis Ababa"),
    **_cities("South Africa", "Johannesburg; Cape Town; Durban"),
    **_cities("Morocco", "Casablanca; Rabat"),
    **_cities("Tunisia", "Tunis"),
    **_cities("Algeria", "Algiers"),
    **_cities("Ghana", "Accra"),
    **_cities("Sudan", "Khartoum"),
    **_cities("Uganda", "Kampala"),
    **_cities("Senegal", "Dakar"),
    **_cities("Mexico", "Mexico City"),
    **_cities("Cuba", "Havana"),
    **_cities("Argentina", "Buenos Aires"),
    **_cities("Brazil", "São Paulo; Sao Paulo; Rio de Janeiro; Brasília; Brasilia"),
    **_cities("Peru", "Lima"),
    **_cities("Colombia", "Bogotá; Bogota; Medellín"),
    **_cities("Venezuela", "Caracas"),
    **_cities("Uruguay", "Montevideo"),
    **_cities("Ecuador", "Quito"),
}

# countries that only appear as a city's country (not an edit object the tables describe)
_EXTRA_COUNTRY_NAMES: dict[str, tuple[str, ...]] = {
    "United Arab Emirates": ("United Arab Emirates", "UAE"),
    "Northern Ireland": ("Northern Ireland",),
}


def country(name: str) -> Country | None:
    """The `COUNTRIES` row for a country name (canonical or a listed alternative), else None."""
    key = _COUNTRY_NAMES.get(normalise(name))
    return COUNTRIES[key] if key else None


def countries_of_city(name: str) -> tuple[str, ...] | None:
    """The countries a city of `CITIES` lies in (first = sovereign state), else None."""
    return CITIES.get(normalise(name))


def _country_names(name: str) -> tuple[str, ...]:
    row = COUNTRIES.get(name)
    return row.names if row else _EXTRA_COUNTRY_NAMES.get(name, (name,))


def capital_of(name: str) -> tuple[str, ...] | None:
    """Capital aliases of a country (by any of its listed names), None when unknown or not unique."""
    row = country(name)
    return row.capital if row else None


def language_of(name: str) -> tuple[str, ...] | None:
    """Official-language aliases of a country, None when unknown or several are co-official."""
    row = country(name)
    return row.language if row else None


def continent_of(name: str) -> tuple[str, ...] | None:
    """Continent aliases of a country, None when unknown or transcontinental."""
    row = country(name)
    return row.continent if row else None


# ---- relations -------------------------------------------------------------------------

#: relation -> CounterFact prompt templates (exact, whitespace-collapsed) that express it
RELATION_TEMPLATES: dict[str, tuple[str, ...]] = {
    # P17 country / P131 located in / P276 location
    "located": (
        "{} is located in",
        "{}, in",
        "{} is in",
        "{} can be found in",
        "{} is located in the country of",
        "{}, located in",
        "{}, which is located in",
        "{} is within",
        "The location of {} is",
        "Where is {}? It is located in",
    ),
    # P27 country of citizenship
    "citizenship": (
        "{} is a citizen of",
        "{}, a citizen of",
        "{}, who is a citizen of",
        "{} has a citizenship from",
        "{}, who has a citizenship from",
        "{} holds a citizenship from",
        "{}, who holds a citizenship from",
    ),
    # P495 country of origin
    "origin": (
        "{} originated in",
        "{}, that originated in",
        "{} originates from",
        "{} originated from",
        "{} was created in",
        "{}, created in",
        "{}, that was created in",
        "{} was created in the country of",
        "{} was formulated in",
        "{}, formulated in",
        "{}, that was formulated in",
        "{} was developed in",
        "{}, developed in",
        "{}, that was developed in",
        "{} was from",
        "{}, that was from",
    ),
    # P740 location of formation
    "founded": (
        "{} was founded in",
        "{}, founded in",
        "{} that was founded in",
        "{} was formed in",
        "{} formed in",
        "{}, that was formed in",
        "{} was started in",
        "{} started in",
        "{}, that was started in",
    ),
    # P19 place of birth
    "birthplace": (
        "{} was born in",
        "{} is native to",
        "{} was native to",
        "{} is originally from",
        "{} was originally from",
    ),
    # P20 place of death
    "deathplace": (
        "{} died in",
        "{} died at",
        "{} died in the city of",
        "{} passed away in",
        "{} passed away at",
        "{} lost their life at",
        "{} expired at",
        "{}'s life ended in",
        "{} succumbed at",
    ),
    # P159 headquarters location
    "headquarters": (
        "{} is headquartered in",
        "{}, whose headquarters are in",
        "{}'s headquarters are in",
        "The headquarters of {} is in",
        "The headquarter of {} is in",
        "The headquarter of {} is located in",
        "{} is based in",
    ),
}

#: relation -> the clause that names the first hop inside a probe ("{}" = the subject)
RELATION_CLAUSES: dict[str, str] = {
    "located": "where {} is located",
    "citizenship": "of which {} is a citizen",
    "origin": "where {} originated",
    "founded": "where {} was founded",
    "birthplace": "where {} was born",
    "deathplace": "where {} died",
    "headquarters": "where {} is headquartered",
}

#: place-relation templates whose two-hop question is not well defined: relation -> (reason, templates)
EXCLUDED_TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "capital": (
        "the new object is the subject's capital: its country contradicts the subject itself",
        (
            "The capital of {} is",
            "The capital city of {} is",
            "{}'s capital is",
            "{}'s capital city is",
            "{}'s capital,",
            "{}'s capital city,",
            "{}, which has the capital",
            "{}, which has the capital city",
        ),
    ),
    "twin_city": (
        "a city has several twin cities: 'the twin city of X' has no single answer",
        ("The twin city of {} is", "What is the twin city of {}? It is", "{} is a twin city of"),
    ),
    "work_location": (
        "people work in several places: 'the city where X worked' has no single answer",
        (
            "{} worked in",
            "{} worked in the city of",
            "{} found employment in",
            "{} was employed in",
            "{} took up work in",
            "{} used to work in",
        ),
    ),
    "named_after": (
        "the object may be a person that bears a place's name (Florence, Victoria, Adelaide)",
        (
            "{} is named after",
            "{} is named for",
            "{}, named after",
            "{}, named for",
            "{} was named after",
            "{} was named for",
            "{}, which is named after",
            "{}, which is named for",
            "{}, which was named after",
            "{}, which was named for",
            "{} is called after",
            "{} was called after",
            "{}, called after",
            "{}, which is called after",
            "{}, which was called after",
        ),
    ),
    "owner_or_unclear": (
        "template shared by owner/maker/employer relations: the first hop is not a place",
        (
            "{} is owned by",
            "{}'s owner",
            "{} owner",
            "{}, by",
            "{}, from",
            "{} from",
            "{} is from",
            "{} works for",
        ),
    ),
}

_TEMPLATE_RELATION: dict[str, str] = {t: rel for rel, ts in RELATION_TEMPLATES.items() for t in ts}
_TEMPLATE_EXCLUDED: dict[str, str] = {t: rel for rel, (_, ts) in EXCLUDED_TEMPLATES.items() for t in ts}


def relation_of(request_or_template: EditRequest | str) -> str | None:
    """The usable relation of a request (or a ``{}`` template), else None."""
    template = request_or_template.template if isinstance(request_or_template, EditRequest) else request_or_template
    return _TEMPLATE_RELATION.get(normalise(template))


# ---- probes ----------------------------------------------------------------------------

#: probe attribute -> prompt pattern ("{clause}" = the relation's clause)
ATTRIBUTES: dict[str, str] = {
    "capital": "The capital of the country {clause} is",
    "language": "The official language of the country {clause} is",
    "continent": "The country {clause} is on the continent of",
    "country": "The city {clause} is in the country of",
}
_COUNTRY_ATTRIBUTES = ("capital", "language", "continent")


def _answers_via(attribute: str, place: str) -> tuple[str, ...] | None:
    """The second hop through `place` (a country for capital/language/continent, a city
    for country): alias tuple, None when the tables have no unique answer."""
    if attribute == "country":
        row = country(place)
        if row is not None:  # the old object may be a country where the new one is a city
            return row.names
        countries = countries_of_city(place)
        if not countries:
            return None
        return tuple(dict.fromkeys(a for c in countries for a in _country_names(c)))
    row = country(place)
    if row is None:
        # the old object may be a city where the new one is a country: go through its country
        countries = countries_of_city(place)
        row = COUNTRIES.get(countries[0]) if countries else None
    return getattr(row, attribute) if row else None


def _word_in(needle: str, haystack: str, *, ignore_case: bool) -> bool:
    flags = re.IGNORECASE if ignore_case else 0
    return re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack, flags) is not None


def _candidates(req: EditRequest, relation: str, kind: str) -> list[tuple[str, Probe | None, str, bool]]:
    """(attribute, probe or None, drop reason or "", checked) for each candidate probe, in
    preference order; checked: the answer through ground_truth was known and compared."""
    clause = RELATION_CLAUSES[relation].replace("{}", req.subject)
    attributes = ("country",) if kind == "city" else _COUNTRY_ATTRIBUTES
    out = []
    for attribute in attributes:
        answers = _answers_via(attribute, req.target_new)
        if not answers:
            out.append((attribute, None, "no_unique_answer", False))
            continue
        prompt = ATTRIBUTES[attribute].format(clause=clause)
        old = _answers_via(attribute, req.ground_truth) if req.ground_truth else None
        lowered = {a.casefold() for a in answers}
        if any(_word_in(req.target_new, a, ignore_case=True) for a in answers):
            reason = "repeats_object"
        elif any(_word_in(a, prompt, ignore_case=False) for a in answers):
            reason = "answer_in_prompt"
        elif old is not None and lowered & {a.casefold() for a in old}:
            reason = "unchanged"
        else:
            reason = ""
        probe = Probe(prompt, answers, f"two_hop:{relation}:{attribute}")
        out.append((attribute, probe, reason, old is not None))
    return out


def _object_kind(target: str) -> str | None:
    if country(target) is not None:
        return "country"
    if countries_of_city(target) is not None:
        return "city"
    return None


@dataclass
class PortabilityReport:
    """What `add_portability` did: counts, all deterministic.

    Attributes:
        records: requests seen.
        probed: requests that got at least one probe.
        probes: probes added.
        by_relation: relation -> {"records": requests with that relation, "probed": ...}.
        by_probe: probe name ("two_hop:<relation>:<attribute>") -> probes added.
        skipped: reason -> requests that got no probe. Reasons: "no_target_new",
            "not_a_place_relation", "excluded:<relation>" (see `EXCLUDED_TEMPLATES`),
            "object_not_in_tables", "city_object_for_citizenship", "no_probe_left",
            "already_present" (the request already had these probes).
        dropped: reason -> candidate probes not added ("no_unique_answer", "unchanged",
            "repeats_object", "answer_in_prompt"; "over_limit" beyond `max_probes`).
        unchecked: probes added whose ground_truth the tables do not know, so that the
            answer could not be checked to differ from the unedited one.
    """

    records: int = 0
    probed: int = 0
    probes: int = 0
    by_relation: dict[str, dict[str, int]] = field(default_factory=dict)
    by_probe: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    unchecked: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """A few lines for a terminal or a README."""
        lines = [f"{self.probed} of {self.records} requests got {self.probes} two-hop probes"]
        for rel, c in self.by_relation.items():
            lines.append(f"  {rel}: {c['probed']} of {c['records']} requests")
        lines.append("  probes: " + ", ".join(f"{k} {v}" for k, v in self.by_probe.items()))
        lines.append("  no probe: " + ", ".join(f"{k} {v}" for k, v in self.skipped.items()))
        lines.append("  dropped probes: " + ", ".join(f"{k} {v}" for k, v in self.dropped.items()))
        return "\n".join(lines)


def _sorted(counter: Counter) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True)
class _Outcome:
    probes: tuple[Probe, ...]
    skip: str  # why no probe ("" when there are probes)
    dropped: dict[str, int]
    unchecked: int  # probes whose answer through ground_truth is unknown


def _outcome(req: EditRequest, max_probes: int, drop_unchanged: bool) -> _Outcome:
    if req.target_new is None:
        return _Outcome((), "no_target_new", {}, 0)
    template = normalise(req.template)
    relation = _TEMPLATE_RELATION.get(template)
    if relation is None:
        excluded = _TEMPLATE_EXCLUDED.get(template)
        return _Outcome((), f"excluded:{excluded}" if excluded else "not_a_place_relation", {}, 0)
    kind = _object_kind(req.target_new)
    if kind is None:
        return _Outcome((), "object_not_in_tables", {}, 0)
    if kind == "city" and relation == "citizenship":
        return _Outcome((), "city_object_for_citizenship", {}, 0)
    probes: list[Probe] = []
    dropped: Counter = Counter()
    unchecked = 0
    for _, probe, reason, checked in _candidates(req, relation, kind):
        if reason == "unchanged" and not drop_unchanged:
            reason = ""
        if reason:
            dropped[reason] += 1
        elif len(probes) >= max_probes:
            dropped["over_limit"] += 1
        else:
            probes.append(probe)
            unchecked += not checked
    return _Outcome(tuple(probes), "" if probes else "no_probe_left", dict(dropped), unchecked)


def portability_probes(req: EditRequest, *, max_probes: int = 2, drop_unchanged: bool = True) -> tuple[Probe, ...]:
    """The two-hop probes for one request (possibly none); the rules are in the module
    docstring, `add_portability` applies them to a list and counts what it skipped."""
    return _outcome(req, max_probes, drop_unchanged).probes


def add_portability(
    requests: Iterable[EditRequest], *, max_probes: int = 2, drop_unchanged: bool = True
) -> tuple[list[EditRequest], PortabilityReport]:
    """Add two-hop portability probes to every request whose new object the tables know.

    Args:
        requests: edit requests (CounterFact, flat or ROME format; any request works,
            the relation is recognised from its prompt template).
        max_probes: at most this many new probes per request (countries give up to three
            candidates: capital, language, continent, in that order).
        drop_unchanged: drop a probe whose answer through ``ground_truth`` overlaps its
            answer through ``target_new`` (it cannot tell an edit from no edit).

    Returns:
        (requests, report): the requests in order, each a copy with the new probes after
        any it already had (a probe whose prompt it already has is not added twice;
        requests without new probes are returned as they are), and a `PortabilityReport`
        of what was added and why the rest was not.
    """
    if max_probes < 1:
        raise ValueError(f"max_probes must be at least 1, got {max_probes}")
    out: list[EditRequest] = []
    records = probed = n_probes = unchecked = 0
    rel_records: Counter = Counter()
    rel_probed: Counter = Counter()
    by_probe: Counter = Counter()
    skipped: Counter = Counter()
    dropped: Counter = Counter()
    for req in requests:
        records += 1
        relation = relation_of(req) if req.target_new is not None else None
        if relation:
            rel_records[relation] += 1
        result = _outcome(req, max_probes, drop_unchanged)
        dropped.update(result.dropped)
        have = {p.prompt for p in req.portability}
        new = tuple(p for p in result.probes if p.prompt not in have)
        if not new:
            skipped[result.skip or "already_present"] += 1
            out.append(req)
            continue
        probed += 1
        rel_probed[relation] += 1
        n_probes += len(new)
        unchecked += result.unchecked
        by_probe.update(p.name for p in new)
        out.append(dataclasses.replace(req, portability=req.portability + new))
    report = PortabilityReport(
        records=records,
        probed=probed,
        probes=n_probes,
        by_relation={
            rel: {"records": rel_records[rel], "probed": rel_probed[rel]}
            for rel in RELATION_TEMPLATES
            if rel_records[rel]
        },
        by_probe=_sorted(by_probe),
        skipped=_sorted(skipped),
        dropped=_sorted(dropped),
        unchecked=unchecked,
    )
    return out, report


def probe_answers_from_tables(probe: Probe) -> bool:
    """True when every alias of `probe` is an answer the tables can give (a check for tests
    and for files written by `add_portability`)."""
    return set(probe.answers) <= _ALL_ANSWERS


def _all_answers() -> frozenset[str]:
    out: set[str] = set()
    for row in COUNTRIES.values():
        for value in (row.capital, row.language, row.continent, row.names):
            out.update(value or ())
    for countries in CITIES.values():
        for c in countries:
            out.update(_country_names(c))
    return frozenset(out)


_ALL_ANSWERS = _all_answers()


def describe_tables() -> dict[str, int]:
    """Table sizes, for reports: countries, capitals, languages, continents, cities."""
    rows: Sequence[Country] = list(COUNTRIES.values())
    return {
        "countries": len(rows),
        "capitals": sum(r.capital is not None for r in rows),
        "languages": sum(r.language is not None for r in rows),
        "continents": sum(r.continent is not None for r in rows),
        "cities": len(CITIES),
    }
