"""Every probe kind: learns a synthetic problem, refuses bad input, and round-trips exactly."""

import json
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from threadpoolctl import threadpool_limits

from probewatch.errors import ProbewatchError
from probewatch.metrics.scores import auroc, r2
from probewatch.probes import PROBE_KINDS, AttentionProbe, Probe, make_probe, pad_sequences
from probewatch.probes.linear import LogisticProbe
from probewatch.probes.ridge import RidgeProbe, grouped_cv_mse, loo_mse


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny problems run far faster on one thread, and the machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


def separable(n: int, d: int = 24, shift: float = 3.0, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Isotropic Gaussian noise, positives shifted by `shift` along a fixed random unit vector,
    so the best achievable AUROC is Φ(shift/√2) ≈ 0.98."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(d, generator=torch.Generator().manual_seed(99))
    direction /= direction.norm()
    y = (torch.arange(n) % 2).float()[torch.randperm(n, generator=g)]
    x = torch.randn(n, d, generator=g) + shift * y[:, None] * direction + 5.0  # offset on purpose
    return x, y


def xor(n: int, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Label = sign(x0·x1): no linear probe can beat chance; a small MLP can."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] * x[:, 1] > 0).float()


def sequences(n: int, d: int = 16, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Variable-length noise sequences; each positive has one token marked by a large shift
    along a fixed direction, at a random position."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.zeros(d)
    direction[0] = 1.0
    y = (torch.arange(n) % 2).float()
    seqs = []
    for label in y:
        length = int(torch.randint(3, 13, (1,), generator=g))
        seq = torch.randn(length, d, generator=g)
        if label:
            seq[int(torch.randint(0, length, (1,), generator=g))] += 6.0 * direction
        seqs.append(seq)
    return seqs, y


BINARY = [
    ("logistic", {}),
    ("logistic", {"c": None}),
    ("mass_mean", {}),
    ("mass_mean", {"covariance": "iid"}),
    ("mass_mean", {"covariance": "iid", "shrinkage": 0.2}),
    ("pca_diff", {}),
    ("mlp", {}),
    ("attention", {}),
]


def test_every_registered_kind_is_covered() -> None:
    assert {kind for kind, _ in BINARY} | {"ridge"} == set(PROBE_KINDS)
    assert PROBE_KINDS["ridge"].task == "regression"
    assert all(PROBE_KINDS[k].task == "binary" for k, _ in BINARY)


def round_trip(probe: Probe) -> Probe:
    """Through the artifact's formats: safetensors bytes and JSON text."""
    tensors = load_bytes(save_bytes({k: v.contiguous() for k, v in probe.tensors().items()}))
    config = json.loads(json.dumps(probe.config()))
    return type(probe).from_state(tensors, config)


@pytest.mark.parametrize(("kind", "config"), BINARY)
def test_binary_kinds_learn_and_round_trip(kind: str, config: dict[str, object]) -> None:
    x, y = separable(400)
    x_test, y_test = separable(400, seed=1)
    probe = make_probe(kind, **config).fit(x, y)
    scores = probe.score(x_test)
    assert scores.shape == (400,)
    assert auroc(scores.numpy(), y_test.numpy()) > 0.95
    # Scores are logits with 0 as the boundary: accuracy at 0 is far above chance.
    assert ((scores > 0).float() == y_test).float().mean() > 0.85
    loaded = round_trip(probe)
    assert torch.equal(loaded.score(x_test), scores)
    assert loaded.config() == probe.config()
    assert loaded.score(torch.zeros(1, x.shape[1])).shape == (1,)  # what load_probe checks


@pytest.mark.parametrize("kind", ["logistic", "mass_mean", "pca_diff", "mlp", "attention"])
def test_binary_kinds_refuse_bad_input(kind: str) -> None:
    x, y = separable(40)
    with pytest.raises(ProbewatchError, match="only one class"):
        make_probe(kind).fit(x, torch.ones(40))
    with pytest.raises(ProbewatchError, match="other than 0 and 1"):
        make_probe(kind).fit(x, y * 2)
    with pytest.raises(ProbewatchError, match="NaN"):
        make_probe(kind).fit(x.masked_fill(x > 6, float("nan")), y)
    with pytest.raises(ProbewatchError, match="aligned"):
        make_probe(kind).fit(x, y[:-1])
    with pytest.raises(ProbewatchError, match="dimensions"):
        make_probe(kind).fit(x[:, :, None, None], y)


def test_make_probe_refuses_unknown_kinds_and_options() -> None:
    with pytest.raises(ProbewatchError, match="unknown probe kind"):
        make_probe("svm")
    with pytest.raises(ProbewatchError, match="bad options"):
        make_probe("mlp", hiden=3)
    with pytest.raises(ProbewatchError, match="covariance"):
        make_probe("mass_mean", covariance="full")
    with pytest.raises(ProbewatchError, match="shrinkage"):
        make_probe("mass_mean", covariance="iid", shrinkage=1.5)
    with pytest.raises(ProbewatchError, match="val_fraction"):
        make_probe("mlp", val_fraction=1.0)


def test_logistic_default_is_unchanged_and_cv_records_its_choice() -> None:
    x, y = separable(200)
    assert make_probe("logistic").fit(x, y).config() == {"c": 0.05, "max_iter": 2000}
    probe = make_probe("logistic", c=None, c_grid=[0.001, 0.1, 10.0], cv_folds=3).fit(x, y)
    fitted = probe.config()["fitted"]
    assert len(fitted["cv_log_loss"]) == 3
    best = int(np.argmin(fitted["cv_log_loss"]))
    assert fitted["c"] == [0.001, 0.1, 10.0][best]
    # The CV probe equals a fixed-c probe at the chosen c.
    fixed = make_probe("logistic", c=fitted["c"]).fit(x, y)
    assert torch.allclose(fixed.score(x), probe.score(x))


def test_iid_mass_mean_removes_correlated_nuisance() -> None:
    """A high-variance nuisance direction overlapping the signal hurts the plain difference
    of means; the covariance-corrected (Fisher) direction removes it."""
    g = torch.Generator().manual_seed(3)
    d, n = 16, 600
    signal = torch.zeros(d)
    signal[0] = 1.0
    nuisance = torch.zeros(d)
    nuisance[0], nuisance[1] = 1.0, 1.0
    nuisance /= nuisance.norm()

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.rand(n, generator=g) < 0.5).float()
        x = torch.randn(n, d, generator=g) + 8.0 * torch.randn(n, 1, generator=g) * nuisance
        return x + 3.0 * y[:, None] * signal, y

    x, y = sample(n)
    x_test, y_test = sample(n)
    plain = auroc(make_probe("mass_mean").fit(x, y).score(x_test).numpy(), y_test.numpy())
    iid = make_probe("mass_mean", covariance="iid").fit(x, y)
    corrected = auroc(iid.score(x_test).numpy(), y_test.numpy())
    assert corrected > 0.9 > plain + 0.2  # Fisher optimum ≈ 0.93, plain ≈ 0.64


def test_iid_mass_mean_is_stable_with_fewer_examples_than_dimensions() -> None:
    x, y = separable(40, d=200, shift=5.0)
    x_test, y_test = separable(400, d=200, shift=5.0, seed=1)
    probe = make_probe("mass_mean", covariance="iid").fit(x, y)
    scores = probe.score(x_test)
    assert torch.isfinite(scores).all()
    assert auroc(scores.numpy(), y_test.numpy()) > 0.95
    assert 0 < probe.config()["fitted"]["shrinkage"] <= 1


def test_pca_diff_finds_the_signal_direction_with_positives_higher() -> None:
    x, y = separable(300)
    probe = make_probe("pca_diff").fit(x, y)
    direction = torch.randn(24, generator=torch.Generator().manual_seed(99))
    cosine = float(probe.direction() @ (direction / direction.norm()))
    assert cosine > 0.9  # sign-aligned, not just parallel
    # Unbalanced classes still work, and pairing is seeded.
    keep = (y == 0) | (torch.arange(300) % 5 == 0)
    again = make_probe("pca_diff", seed=0).fit(x[keep], y[keep])
    assert torch.equal(again.score(x), make_probe("pca_diff").fit(x[keep], y[keep]).score(x))


def test_mlp_learns_what_no_linear_probe_can_and_is_deterministic() -> None:
    x, y = xor(400)
    x_test, y_test = xor(600, seed=1)
    linear = auroc(make_probe("logistic").fit(x, y).score(x_test).numpy(), y_test.numpy())
    options = {"hidden": 32, "lr": 1e-2}
    mlp = make_probe("mlp", **options).fit(x, y)
    assert auroc(mlp.score(x_test).numpy(), y_test.numpy()) > 0.95 > linear + 0.3
    again = make_probe("mlp", **options).fit(x, y)
    assert torch.equal(again.score(x_test), mlp.score(x_test))
    other_seed = make_probe("mlp", **options, seed=1).fit(x, y)
    assert not torch.equal(other_seed.score(x_test), mlp.score(x_test))


def test_attention_pools_variable_length_sequences() -> None:
    seqs, y = sequences(300)
    test_seqs, y_test = sequences(300, seed=1)
    probe = AttentionProbe().fit_sequences(seqs, y)
    scores = probe.score_sequences(test_seqs)
    assert scores.shape == (300,)
    assert auroc(scores.numpy(), y_test.numpy()) > 0.95
    # It looks at the marked token: most weight on it in a positive sequence.
    positive = next(s for s, label in zip(test_seqs, y_test, strict=True) if label)
    assert int(probe.attention_weights(positive).argmax()) == int(positive[:, 0].argmax())
    # Per-token scores keep the common interface.
    assert probe.score(test_seqs[0]).shape == (len(test_seqs[0]),)
    loaded = round_trip(probe)
    assert isinstance(loaded, AttentionProbe)
    assert torch.equal(loaded.score_sequences(test_seqs), scores)


def test_attention_scores_do_not_depend_on_padding_or_batching() -> None:
    seqs, y = sequences(60)
    probe = AttentionProbe(max_epochs=5).fit_sequences(seqs, y)
    x, mask = pad_sequences(seqs[:10])
    wider = torch.cat([x, torch.full((10, 7, x.shape[2]), 123.0)], dim=1)  # junk padding
    wider_mask = torch.cat([mask, torch.zeros(10, 7, dtype=torch.bool)], dim=1)
    batched = probe.score_padded(x, mask)
    assert torch.allclose(probe.score_padded(wider, wider_mask), batched, atol=1e-6)
    one_by_one = torch.cat([probe.score_sequences([s]) for s in seqs[:10]])
    assert torch.allclose(one_by_one, batched, atol=1e-6)


def test_attention_refuses_empty_sequences_and_bad_masks() -> None:
    seqs, y = sequences(20)
    x, mask = pad_sequences(seqs)
    mask[3] = False
    with pytest.raises(ProbewatchError, match="no real tokens"):
        AttentionProbe().fit(x, y, mask=mask)
    with pytest.raises(ProbewatchError, match="mask has shape"):
        AttentionProbe().fit(x, y, mask=mask[:, :2])
    with pytest.raises(ProbewatchError, match="no rows"):
        pad_sequences([torch.zeros(0, 16)])
    with pytest.raises(ProbewatchError, match="widths"):
        pad_sequences([torch.zeros(2, 16), torch.zeros(2, 8)])


def linear_targets(n: int, d: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * 3 + 1
    w = torch.randn(d, generator=torch.Generator().manual_seed(7))
    return x, x @ w + 0.5 * torch.randn(n, generator=g) + 40.0


def test_ridge_predicts_continuous_targets_and_round_trips() -> None:
    x, y = linear_targets(200)
    x_test, y_test = linear_targets(200, seed=1)
    probe = make_probe("ridge").fit(x, y)
    predictions = probe.score(x_test)
    assert r2(predictions.numpy(), y_test.numpy()) > 0.95
    loaded = round_trip(probe)
    assert torch.equal(loaded.score(x_test), predictions)
    assert probe.config()["fitted"]["alpha"] in probe.config()["alphas"]


@pytest.mark.parametrize("d", [5, 30])  # more and fewer examples than dimensions
def test_ridge_closed_form_leave_one_out_matches_refitting(d: int) -> None:
    x, y = linear_targets(20, d=d)
    x = x.double()
    y = y.double()
    alphas = [0.1, 10.0]

    def design(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[rows] - x[rows].mean(0), y[rows] - y[rows].mean()

    z, yc = design(torch.arange(20))
    u, s, _ = torch.linalg.svd(z, full_matrices=False)
    fast = loo_mse(u, s, yc, alphas)
    for alpha, expected in zip(alphas, fast, strict=True):
        errors = []
        for i in range(20):
            rows = torch.tensor([j for j in range(20) if j != i])
            zi, yi = design(rows)
            w = torch.linalg.solve(zi.T @ zi + alpha * torch.eye(d, dtype=zi.dtype), zi.T @ yi)
            prediction = (x[i] - x[rows].mean(0)) @ w + y[rows].mean()
            errors.append(float((y[i] - prediction) ** 2))
        assert expected == pytest.approx(np.mean(errors), rel=1e-8)


def near_copies(
    n_groups: int, per_group: int = 8, d: int = 40, seed: int = 3
) -> tuple[torch.Tensor, ...]:
    """Rows that come in groups of near-copies (the tokens of one response): a group's rows
    share one random vector and one target, and only the first 5 features carry the target.
    Leave-one-row-out sees a row's near-copies in training and rewards memorizing them."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_groups, d, generator=g)
    w = torch.zeros(d)
    w[:5] = 1.0
    targets = centres @ w + torch.randn(n_groups, generator=g)
    groups = torch.arange(n_groups).repeat_interleave(per_group)
    x = centres[groups] + 0.05 * torch.randn(groups.shape[0], d, generator=g)
    return x, targets[groups], groups


def test_ridge_chooses_alpha_over_whole_groups_when_rows_share_them() -> None:
    x, y, groups = near_copies(30)
    x_new, y_new, _ = near_copies(30, seed=4)
    by_row = RidgeProbe().fit(x, y)
    by_group = RidgeProbe().fit(x, y, groups=groups)
    assert by_row.chosen_by == "leave-one-out" and by_row.cv_mse is None
    assert by_group.chosen_by == "5-fold cross-validation over 30 groups"
    assert by_group.loo is None and by_group.cv_mse is not None
    assert by_group.chosen_alpha is not None and by_row.chosen_alpha is not None
    assert by_group.chosen_alpha > by_row.chosen_alpha
    fresh = [r2(p.score(x_new).numpy(), y_new.numpy()) for p in (by_row, by_group)]
    assert fresh[1] > fresh[0]
    # The choice is part of the card and survives a round trip; unique groups = leave-one-out.
    assert round_trip(by_group).config()["fitted"]["alpha_chosen_by"] == by_group.chosen_by
    assert RidgeProbe().fit(x, y, groups=torch.arange(x.shape[0])).chosen_by == "leave-one-out"


def test_logistic_cross_validates_c_over_whole_groups_when_rows_share_them() -> None:
    x, y, groups = near_copies(40)
    x_new, y_new, _ = near_copies(40, seed=4)
    labels, new_labels = (y > y.median()).long(), (y_new > y.median()).long()
    by_row = LogisticProbe(c=None).fit(x, labels)
    by_group = LogisticProbe(c=None).fit(x, labels, groups=groups)
    # Near-copies in the held-out fold make a weak penalty look perfect (log loss ~0).
    assert by_row.cv_losses is not None and min(by_row.cv_losses) < 0.05
    assert by_group.chosen_c is not None and by_row.chosen_c is not None
    assert by_group.chosen_c < by_row.chosen_c
    fresh = [auroc(p.score(x_new).numpy(), new_labels.numpy()) for p in (by_row, by_group)]
    assert fresh[1] > fresh[0]
    one_group_each = torch.where(labels > 0, 1, 0)
    with pytest.raises(ProbewatchError, match="groups"):
        LogisticProbe(c=None).fit(x, labels, groups=one_group_each)


def test_ridge_grouped_cross_validation_matches_refitting() -> None:
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GroupKFold

    x, y, groups = near_copies(12, per_group=3, d=10)
    z, y64 = x.double(), y.double()
    alphas = [0.5, 50.0]
    fast = grouped_cv_mse(z, y64, groups.numpy(), alphas, folds=4)
    for alpha, expected in zip(alphas, fast, strict=True):
        squared = 0.0
        for fit_rows, held in GroupKFold(n_splits=4).split(z, groups=groups.numpy()):
            model = Ridge(alpha=alpha).fit(z[fit_rows].numpy(), y64[fit_rows].numpy())
            squared += float(((model.predict(z[held].numpy()) - y64[held].numpy()) ** 2).sum())
        assert expected == pytest.approx(squared / z.shape[0], rel=1e-8)


def test_ridge_refuses_bad_input() -> None:
    x, y = linear_targets(10)
    with pytest.raises(ProbewatchError, match="at least 3"):
        RidgeProbe().fit(x[:2], y[:2])
    with pytest.raises(ProbewatchError, match="positive"):
        RidgeProbe(alpha=0.0)
    with pytest.raises(ProbewatchError, match="alphas"):
        RidgeProbe(alphas=[])
    with pytest.raises(ProbewatchError, match="NaN"):
        RidgeProbe().fit(x, y.masked_fill(y > y.median(), float("nan")))
    with pytest.raises(ProbewatchError, match="2 dimensions"):
        RidgeProbe().fit(x[0], y[:1])
    with pytest.raises(ProbewatchError, match="one id per row"):
        RidgeProbe().fit(x, y, groups=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ProbewatchError, match="integer"):
        RidgeProbe().fit(x, y, groups=torch.zeros(10))
    with pytest.raises(ProbewatchError, match="cv_folds"):
        RidgeProbe(cv_folds=1)
