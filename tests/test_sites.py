import pytest
import torch
from torch import nn

from probewatch.errors import ProbewatchError
from probewatch.sites import ARCH_TABLES, Site, expand_sites, layer_list, parse_site, resolve_module
from tests.helpers import FAMILIES, tiny_model


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_a_table_and_resolves_every_site(family: str) -> None:
    loaded = tiny_model(family)
    assert loaded.model.config.model_type in ARCH_TABLES
    assert len(layer_list(loaded.model)) == 4
    for site in expand_sites("embed,resid.*,attn_out.*,mlp_out.*,final_norm", 4):
        assert isinstance(resolve_module(loaded.model, site), nn.Module)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.Linear(4, 4)
        self.feed_forward = nn.Linear(4, 4)


class _Config:
    model_type = "never-heard-of-it"
    num_hidden_layers = 3


class _Unknown(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = _Config()
        self.heads = nn.ModuleList([nn.Linear(4, 4)])  # a decoy of the wrong length
        self.backbone = nn.Module()
        self.backbone.blocks = nn.ModuleList([_Block() for _ in range(3)])


def test_unknown_architecture_falls_back_to_the_layer_list_of_the_right_length() -> None:
    model = _Unknown()
    assert layer_list(model) is model.backbone.blocks
    assert resolve_module(model, Site("attn_out", 1)) is model.backbone.blocks[1].attention
    assert resolve_module(model, Site("mlp_out", 2)) is model.backbone.blocks[2].feed_forward


def test_patterns_expand_in_forward_order_without_duplicates() -> None:
    sites = expand_sites("resid.2, attn_out.2, embed, resid.1-2, mlp_out.2", 4)
    assert [s.name for s in sites] == [
        "embed",
        "resid.1",
        "attn_out.2",
        "mlp_out.2",
        "resid.2",
    ]
    assert [s.name for s in expand_sites("all", 3)] == ["resid.0", "resid.1", "resid.2"]
    assert parse_site("resid.-1", 4) == Site("resid", 3)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("resid.4", "out of range"), ("resid", "unknown site"), ("blocks.2", "unknown site")],
)
def test_bad_site_names_get_a_clear_error(name: str, fragment: str) -> None:
    with pytest.raises(ProbewatchError, match=fragment) as info:
        parse_site(name, 4)
    assert info.value.hint


def test_gpt2_embed_site_is_token_plus_position_embedding() -> None:
    loaded = tiny_model("gpt2")
    ids = torch.tensor([[5, 6, 7]])
    seen: dict[str, torch.Tensor] = {}
    module = resolve_module(loaded.model, Site("embed"))
    handle = module.register_forward_hook(lambda m, a, out: seen.__setitem__("x", out))
    try:
        hidden = loaded.model(ids, output_hidden_states=True).hidden_states[0]
    finally:
        handle.remove()
    torch.testing.assert_close(seen["x"], hidden)
