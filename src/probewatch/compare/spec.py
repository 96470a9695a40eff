"""The settings of one comparison (torch-free): the Python API's argument and every flag of
`probewatch compare`."""

from dataclasses import dataclass, field
from pathlib import Path

from probewatch.config import Mode, ModelChoice, _at_least, _choice, split_list
from probewatch.errors import ProbewatchError

PROMPT_SETS = ("harmful", "harmless", "facts")


@dataclass(kw_only=True)
class CompareSpec(ModelChoice):
    """What `probewatch compare A B` runs on and measures. `model` is A."""

    model: str = field(default="default", metadata={"positional": True, "metavar": "A"})
    """model A: embedded name, model directory (an organism too) or cached hub id"""
    b: str | None = field(default=None, metadata={"positional": True, "nargs": "?", "metavar": "B"})
    """model B (default: A itself, under the intervention given by --steer)"""
    out: Path = Path("compare")
    """output directory for compare.json and compare.html"""
    prompts: Path | None = None
    """extra prompts (.txt, one per line, or .jsonl with "prompt"/"messages") compared too"""
    sets: str = "harmful,harmless,facts"
    """built-in prompt sets to include (comma list; '' for only --prompts)"""
    n: int = 32
    """prompts per built-in set"""
    sites: str = "resid.*"
    """sites whose representation drift is measured (and read by the ADL)"""
    patch_sites: str = "resid.*,attn_out.*,mlp_out.*"
    """sites patched from B into A to find which component carries the change ('' for none)"""
    patch_prompts: int = 8
    """prompts used for patching (those where the sides' first reply token differs most)"""
    max_new_tokens: int = 24
    """tokens each side generates per prompt"""
    temperature: float = 0.0
    """0 = greedy; above 0, replies are sampled (seeded)"""
    seed: int = 0
    """seed of the prompt sample, the sampling and the bootstrap"""
    batch_size: int = 8
    """sequences per forward pass"""
    n_boot: int = 1000
    """bootstrap resamples per interval"""
    probes: str | None = None
    """probe directories (comma list): flag rates, score shift, transfer, ADL cosines"""
    vectors: str | None = None
    """steering vector directories (comma list) compared with the activation difference"""
    behaviours: str | None = None
    """extra behaviour rows, ';'-separated NAME=PHRASE|PHRASE (reply contains a phrase)"""
    adl_texts: int = 64
    """unrelated texts for the activation-difference lens"""
    adl_positions: int = 5
    """first token positions read by the activation-difference lens"""
    top_spans: int = 10
    """most divergent spans listed"""
    drift_tolerance: float = 1e-3
    """relative L2 change a site's interval must exceed to count as drift (float noise ~1e-6)"""
    kl_tolerance: float = 1e-4
    """mean per-token KL (nats) an interval must exceed to count as a change"""
    transfer_n: int = 100
    """examples per split for probe transfer (0: no transfer check)"""
    transfer_tolerance: float = 0.02
    """AUROC drop of A's probe on B an interval must exceed to count as a change"""
    steer: Path | None = None
    """steering vector directory: B is A under this intervention (no second weight copy)"""
    steer_mode: Mode = "add"
    """what --steer does with the vector"""
    steer_scale: float = 4.0
    """steering strength for --steer add"""
    steer_sites: str | None = None
    """sites --steer acts on (default: all of the vector's)"""

    def __post_init__(self) -> None:
        _at_least(self, 1, "n", "max_new_tokens", "batch_size", "adl_texts", "adl_positions")
        _at_least(
            self, 0, "patch_prompts", "top_spans", "temperature", "transfer_n", "transfer_tolerance"
        )
        _at_least(self, 10, "n_boot")
        for name in self.set_list():
            _choice(name, PROMPT_SETS, "prompt set")
        self.out = Path(self.out)
        self.prompts = Path(self.prompts) if self.prompts else None
        self.steer = Path(self.steer) if self.steer else None
        if self.b is None and self.steer is None:
            raise ProbewatchError(
                "nothing to compare A with", hint="give model B, or --steer VECTOR for A under it"
            )
        if not self.set_list() and self.prompts is None:
            raise ProbewatchError(
                "no prompts: every built-in set is off", hint="give --prompts FILE"
            )

    def set_list(self) -> tuple[str, ...]:
        return tuple(split_list(self.sets))

    def probe_list(self) -> list[str]:
        return split_list(self.probes)

    def vector_list(self) -> list[str]:
        return split_list(self.vectors)

    def behaviour_list(self) -> list[str]:
        return [part.strip() for part in (self.behaviours or "").split(";") if part.strip()]
