"""Logit lens and tuned lens: exact at the last layer on every family; the tuned lens learns."""

import pytest
import torch

from probewatch.attribution.anatomy import anatomy
from probewatch.attribution.lens import direction_lens, logit_lens
from probewatch.attribution.tuned_lens import (
    TunedLensSpec,
    compare_lenses,
    load_tuned_lens,
    save_tuned_lens,
    train_tuned_lens,
)
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from tests.helpers import perturbed

TEXT = "the cat sat on the mat"


def test_last_layer_of_the_lens_is_the_models_own_distribution(family_model: LoadedModel) -> None:
    lens = logit_lens(family_model, TEXT, target=5, k=3)
    ids = family_model.tokenizer([TEXT], return_tensors="pt").input_ids
    probs = torch.softmax(family_model.model(input_ids=ids).logits[0].detach(), -1)
    assert torch.allclose(lens.top_probs[-1], probs.topk(3, -1).values, atol=1e-5)
    assert float(lens.kl[-1].abs().max()) < 1e-5 and float(lens.kl[:-1].max()) > 1e-3
    assert lens.target_prob is not None and lens.target_rank is not None
    assert torch.allclose(lens.target_prob[-1], probs[:, 5], atol=1e-6)
    assert bool((lens.entropy >= -1e-5).all())
    assert len(lens.sites) == family_model.n_layers + 1 == len(lens.to_dict()["top"])


def test_direction_lens_reads_an_unembedding_row_as_its_token() -> None:
    loaded = perturbed("gemma2")
    anat = anatomy(loaded.model)
    direction = anat.unembed[42].detach().double() / anat.final_norm.gain
    read = direction_lens(loaded, direction, k=3)
    assert read["promotes"][0][0] == loaded.tokenizer.decode([42])
    assert read["promotes"][0][1] > read["suppresses"][0][1]


def test_tuned_lens_learns_saves_and_refuses_another_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    loaded = perturbed("llama")
    texts = [f"{TEXT} number {i} and some more words" for i in range(12)]
    spec = TunedLensSpec(steps=60, texts_per_step=4, lr=1e-2, vocab_sample=300, time_budget_s=60)
    lens = train_tuned_lens(loaded, texts, spec)
    assert lens.history[-1]["loss"] < 0.8 * lens.history[0]["loss"]
    rows = compare_lenses(loaded, lens, texts[:6])
    assert all(r["tuned_lens_kl"] < r["logit_lens_kl"] for r in rows[:-1])
    assert rows[-1]["tuned_lens_kl"] == rows[-1]["logit_lens_kl"]  # identity at the last block
    path = save_tuned_lens(lens, loaded, tmp_path / "lens")
    again = load_tuned_lens(path, loaded)
    assert torch.equal(again.weight, lens.weight)
    with pytest.raises(ProbewatchError, match=r"--overwrite|exists"):
        save_tuned_lens(lens, loaded, tmp_path / "lens")
    with pytest.raises(ProbewatchError):
        load_tuned_lens(path, perturbed("qwen3", seed=1))
