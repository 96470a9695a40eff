"""Direct logit attribution: the parts add up to the model's own target on every family."""

import pytest
import torch

from probewatch.attribution.anatomy import anatomy
from probewatch.attribution.dla import direct_attribution
from probewatch.attribution.targets import LogitDiff, LogProb, ProbeScore, single_token
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.probes.artifact import ProbeArtifact, build_card
from probewatch.probes.linear import LogisticProbe
from probewatch.probes.mlp import MLPProbe
from tests.helpers import perturbed

TEXTS = ["hello world", "a somewhat longer text, here", "x"]


def _probe(loaded: LoadedModel, site: str) -> ProbeArtifact:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, loaded.d_model, generator=gen)
    y = (x[:, 0] + 0.3 * torch.randn(64, generator=gen) > 0).long()
    probe = LogisticProbe(c=1.0).fit(x, y)
    return ProbeArtifact(probe, build_card(probe, loaded, site, "last", {"name": "p"}, {}))


def test_logit_difference_parts_sum_to_the_models_own(family_model: LoadedModel) -> None:
    result = direct_attribution(family_model, TEXTS, LogitDiff([5, 6, 7], 9), positions="all")
    assert result.error() < 1e-4
    assert float(result.target.abs().max()) > 0.1  # a real target, not a zero identity
    assert result.heads.shape[1:] == (family_model.n_layers, anatomy(family_model.model).n_heads)
    # The parts are the model's, not one lump: several heads carry weight.
    assert int((result.heads.abs() > 1e-3).sum()) > result.heads[0].numel()


def test_probe_score_parts_sum_to_the_probe_score(family_model: LoadedModel) -> None:
    for site in ("resid.1", "final_norm"):
        result = direct_attribution(family_model, TEXTS, ProbeScore(_probe(family_model, site)))
        assert result.error() < 1e-4, site
    early = direct_attribution(family_model, TEXTS, ProbeScore(_probe(family_model, "resid.1")))
    assert early.layers_used == 2 and bool((early.heads[:, 2:] == 0).all())


def test_log_probability_and_neurons_add_up() -> None:
    loaded = perturbed("gemma2")  # soft-capped logits and post-norms
    result = direct_attribution(loaded, TEXTS, LogProb(3), positions=[0, -1], neurons=True)
    assert result.error() < 1e-4
    logp = torch.log_softmax(loaded.model(**_ids(loaded)).logits[0, -1].double(), -1)[3]
    assert abs(float(result.target[1]) - float(logp.detach())) < 1e-5
    assert result.neurons is not None
    for layer, neurons in enumerate(result.neurons):
        # No down-projection bias here, and an RMS post-norm has no offset: neurons = MLP row.
        assert neurons.shape[1] == 64
        assert torch.allclose(neurons.sum(1), result.mlp[:, layer], atol=1e-6), layer


def _ids(loaded: LoadedModel) -> dict[str, torch.Tensor]:
    return {"input_ids": loaded.tokenizer([TEXTS[0]], return_tensors="pt").input_ids}


def test_batched_rows_equal_one_text_at_a_time() -> None:
    loaded = perturbed("qwen3")
    together = direct_attribution(loaded, TEXTS, LogitDiff(5, 9))
    for i, text in enumerate(TEXTS):
        alone = direct_attribution(loaded, [text], LogitDiff(5, 9))
        assert torch.allclose(together.heads[i], alone.heads[0], atol=1e-5)


def test_bad_requests_are_refused_clearly() -> None:
    loaded = perturbed("llama")
    with pytest.raises(ProbewatchError, match="outside example"):
        direct_attribution(loaded, TEXTS, LogitDiff(5), positions=[20])
    with pytest.raises(ProbewatchError, match="token ids for 3 examples"):
        direct_attribution(loaded, TEXTS, LogitDiff([5, 6]))
    with pytest.raises(ProbewatchError, match="tokens for this tokenizer"):
        single_token(loaded.tokenizer, "two tokens")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, loaded.d_model, generator=gen)
    mlp = MLPProbe(max_epochs=2).fit(x, (x[:, 0] > 0).long())
    artifact = ProbeArtifact(mlp, build_card(mlp, loaded, "resid.1", "last", {"name": "m"}, {}))
    with pytest.raises(ProbewatchError, match="not affine"):
        direct_attribution(loaded, TEXTS, ProbeScore(artifact))


@pytest.mark.real
def test_default_model_parts_sum_to_its_logit_difference_and_probe_score(
    default_model: LoadedModel,
) -> None:
    tok = default_model.tokenizer
    paris, london = single_token(tok, " Paris"), single_token(tok, " London")
    texts = ["The Eiffel Tower is in the city of", "The capital of France is the city of"]
    result = direct_attribution(default_model, texts, LogitDiff(paris, london))
    assert result.error() < 1e-4
    assert float(result.target.min()) > 1.0  # the model does prefer Paris
    probe = direct_attribution(default_model, texts, ProbeScore(_probe(default_model, "resid.19")))
    assert probe.error() < 1e-4
