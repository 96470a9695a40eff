from collections import Counter

from probewatch.data import load_dataset


def test_cities_is_balanced_deduplicated_and_split_by_city() -> None:
    for name in ("cities", "neg_cities"):
        dataset = load_dataset(name)
        texts = [ex.text for ex in dataset.examples]
        assert len(texts) == len(set(texts)) > 2000
        for split in ("train", "test"):
            labels = Counter(ex.label for ex in dataset.split(split))
            assert labels[0.0] == labels[1.0] > 200
        train_cities = {ex.group for ex in dataset.split("train")}
        test_cities = {ex.group for ex in dataset.split("test")}
        assert not train_cities & test_cities
        assert 0.15 < len(test_cities) / (len(train_cities) + len(test_cities)) < 0.25


def test_building_twice_gives_identical_bytes_and_the_seed_matters() -> None:
    assert load_dataset("cities").to_jsonl() == load_dataset("cities").to_jsonl()
    assert load_dataset("cities").hash != load_dataset("cities", seed=1).hash


def test_affirmative_and_negated_forms_say_what_they_should() -> None:
    affirmative = load_dataset("cities").examples
    negated = load_dataset("neg_cities").examples
    for ex in affirmative:
        assert " is in " in ex.text
        assert ex.label == float(ex.meta["stated"] == ex.meta["country"])
    for ex in negated:
        assert " is not in " in ex.text
        assert ex.label == float(ex.meta["stated"] != ex.meta["country"])


def test_the_named_country_does_not_give_the_label_away() -> None:
    # Distractors follow the true-country distribution, so each frequent country is named
    # about as often in false statements as in true ones.
    examples = load_dataset("cities").examples
    named_true = Counter(ex.meta["stated"] for ex in examples if ex.label == 1.0)
    named_false = Counter(ex.meta["stated"] for ex in examples if ex.label == 0.0)
    for country, n_true in named_true.most_common(5):
        assert 0.6 < named_false[country] / n_true < 1.6, country


def test_card_carries_the_geonames_attribution() -> None:
    card = load_dataset("cities").describe()
    assert "GeoNames" in card["source"] and "CC-BY" in card["license"]
    assert card["splits"]["test"]["n"] > 0
