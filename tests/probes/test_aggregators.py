"""Aggregators: streaming equals batch at every prefix, known values, config, bad input."""

import json
import math

import numpy as np
import pytest
import torch

from probewatch.errors import ProbewatchError
from probewatch.probes.aggregators import AGGREGATORS, Aggregator, make_aggregator

CASES = [
    ("mean", {}),
    ("max", {}),
    ("last", {}),
    ("ema_max", {"alpha": 0.3}),
    ("ema_max", {"alpha": 1.0}),
    ("rolling_max", {"window": 1}),
    ("rolling_max", {"window": 5}),
    ("softmax_weighted", {"temperature": 1.0}),
    ("softmax_weighted", {"temperature": 0.05}),
]


def test_every_aggregator_is_covered() -> None:
    assert {name for name, _ in CASES} == set(AGGREGATORS)


@pytest.mark.parametrize(("name", "params"), CASES)
@pytest.mark.parametrize("length", [1, 2, 4, 5, 6, 50])
def test_streaming_equals_batch_at_every_prefix(
    name: str, params: dict[str, float], length: int
) -> None:
    rng = np.random.default_rng(length)
    scores = rng.normal(0, 3, size=length)
    agg = make_aggregator(name, **params)
    stream = agg.stream()
    for t, score in enumerate(scores, start=1):
        returned = stream.update(float(score))
        assert returned == stream.value
        assert returned == pytest.approx(agg.aggregate(scores[:t]), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(
    ("name", "params", "scores", "expected"),
    [
        ("mean", {}, [1, 2, 6], 3.0),
        ("max", {}, [1, 7, 6], 7.0),
        ("last", {}, [1, 7, 6], 6.0),
        ("ema_max", {"alpha": 0.5}, [0, 2, 0], 1.0),  # e = 0, 1, 0.5
        ("ema_max", {"alpha": 0.5}, [4, 0, 0], 4.0),  # starts at the first score
        ("rolling_max", {"window": 2}, [0, 4, 0, 0], 2.0),
        ("rolling_max", {"window": 2}, [9, 0, 0, 0], 4.5),
        ("rolling_max", {"window": 3}, [1, 3], 2.0),  # shorter than the window: the mean
        ("rolling_max", {"window": 3}, [6, 0, 0, 0], 2.0),  # one early spike is diluted
        ("softmax_weighted", {"temperature": 1.0}, [2, 2], 2.0),
        ("softmax_weighted", {"temperature": 1.0}, [0, math.log(3)], 0.75 * math.log(3)),
        ("softmax_weighted", {"temperature": 2.0}, [0, math.log(9)], 0.75 * math.log(9)),
    ],
)
def test_known_values(
    name: str, params: dict[str, float], scores: list[float], expected: float
) -> None:
    agg = make_aggregator(name, **params)
    assert agg.aggregate(scores) == pytest.approx(expected)
    stream = agg.stream()
    for score in scores:
        stream.update(score)
    assert stream.value == pytest.approx(expected)


def test_softmax_weighted_limits_and_overflow() -> None:
    scores = np.array([0.0, 1.0, 5.0, 2.0])
    cold = make_aggregator("softmax_weighted", temperature=1e-3).aggregate(scores)
    hot = make_aggregator("softmax_weighted", temperature=1e6).aggregate(scores)
    assert cold == pytest.approx(5.0)
    assert hot == pytest.approx(2.0, rel=1e-4)
    huge = [1e4, -1e4, 2e4]
    agg = make_aggregator("softmax_weighted", temperature=1.0)
    stream = agg.stream()
    for score in huge:
        stream.update(score)
    assert stream.value == pytest.approx(2e4) == agg.aggregate(huge)


def test_rolling_stream_keeps_only_its_window() -> None:
    stream = make_aggregator("rolling_max", window=4).stream()
    for score in range(100):
        stream.update(float(score))
    assert len(stream.buffer) == 4  # type: ignore[attr-defined]


def test_accepts_tensors_and_config_round_trips_through_json() -> None:
    for name, params in CASES:
        agg = make_aggregator(name, **params)
        rebuilt = make_aggregator(**json.loads(json.dumps(agg.config())))
        assert isinstance(rebuilt, Aggregator)
        assert rebuilt.config() == agg.config()
        scores = torch.tensor([0.5, -1.0, 2.0, 0.25])
        assert rebuilt.aggregate(scores) == agg.aggregate(scores.tolist())
        stream = agg.stream()
        stream.update(torch.tensor(1.5))  # a 0-d tensor, as a probe's score[i] would be
        assert stream.value == 1.5


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("median", {}, "unknown aggregator"),
        ("mean", {"window": 3}, "bad options"),
        ("ema_max", {"alpha": 0.0}, "alpha"),
        ("ema_max", {"alpha": 1.5}, "alpha"),
        ("ema_max", {"alpha": "0.3"}, "alpha"),
        ("rolling_max", {"window": 0}, "window"),
        ("rolling_max", {"window": 2.5}, "window"),
        ("rolling_max", {"window": True}, "window"),
        ("softmax_weighted", {"temperature": -1.0}, "temperature"),
        ("softmax_weighted", {"temperature": math.inf}, "temperature"),
    ],
)
def test_bad_names_and_params(name: str, params: dict[str, object], match: str) -> None:
    with pytest.raises(ProbewatchError, match=match):
        make_aggregator(name, **params)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_bad_scores(name: str) -> None:
    agg = make_aggregator(name)
    with pytest.raises(ProbewatchError, match="no token scores"):
        agg.aggregate([])
    with pytest.raises(ProbewatchError, match="NaN"):
        agg.aggregate([1.0, float("nan")])
    with pytest.raises(ProbewatchError, match="1-D"):
        agg.aggregate([[1.0, 2.0]])
    stream = agg.stream()
    with pytest.raises(ProbewatchError, match="no tokens scored yet"):
        _ = stream.value
    with pytest.raises(ProbewatchError, match="not finite"):
        stream.update(float("inf"))
    assert stream.n == 0  # a refused score leaves the state untouched
