"""Job configs: the Python API's arguments and the source of every CLI flag.

Each dataclass field's docstring is its `--help` text and its default is the flag's default
(`probewatch.cli_args` turns fields into flags), so a setting is written once. `Literal`
types are the single list of choices (the steering modes and direction methods included).
Validation happens in `__post_init__` and raises ProbewatchError with a hint, so a bad
argument fails before any model loads.

This module imports no torch, numpy or transformers: `probewatch --help` and argument checks
stay fast.
"""

import ipaddress
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from probewatch.errors import ProbewatchError

# last: the final token; all: every token; mask: the final message's tokens (a chat's answer);
# span: the tokens of each example's character spans (meta "spans", else "answer_span").
Positions = Literal["last", "all", "mask", "span"]
Task = Literal["auto", "binary", "regression"]
Scope = Literal["prompt", "response"]
Dtype = Literal["float32", "float16", "bfloat16"]
Mode = Literal["ablate", "add", "gated", "orthogonalize"]
Method = Literal["mean_diff", "pca_diff"]
Engine = Literal["hf", "vllm"]

MODES: tuple[str, ...] = get_args(Mode)
METHODS: tuple[str, ...] = get_args(Method)
DATA_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet", ".pq")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
MIN_API_KEY_LENGTH = 16


def parse_options(text: str) -> dict[str, Any]:
    """'k=v,k2=v2' -> {k: v, ...}; values are JSON where they parse (numbers, true), else text."""
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ProbewatchError(f"bad option {item!r}", hint="write key=value, e.g. alpha=0.3")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value.strip()
    return options


def parse_named(text: str) -> dict[str, Any]:
    """'ema_max' or 'rolling_max:window=16' -> {"name": ..., params...} (aggregator specs)."""
    name, _, rest = text.partition(":")
    if not name.strip():
        raise ProbewatchError(f"bad aggregator {text!r}", hint="e.g. mean or ema_max:alpha=0.3")
    return {"name": name.strip(), **parse_options(rest)}


def as_positions(value: str) -> Positions:
    """`value` checked against the Positions choices (for values read from a card)."""
    _choice(value, get_args(Positions), "positions")
    return value  # type: ignore[return-value]  # checked just above


def _at_least(config: object, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and value < minimum:
            flag = "--" + name.replace("_", "-")
            raise ProbewatchError(
                f"{name} must be at least {minimum:g}, not {value}", hint=f"pass a larger {flag}"
            )


def _choice(value: object, allowed: tuple[str, ...], name: str) -> None:
    if value is not None and value not in allowed:
        raise ProbewatchError(f"unknown {name} {value!r}", hint=f"use one of {', '.join(allowed)}")


@dataclass(kw_only=True)
class RunFlags:
    """How a command runs and reports, shared by every command that has the flag."""

    overwrite: bool = False
    """replace an existing output (otherwise it is refused)"""
    quiet: bool = False
    """no progress bars"""
    json: bool = False
    """print the result as JSON"""


@dataclass(kw_only=True)
class ModelChoice:
    """Which model a command loads."""

    model: str = "default"
    """embedded name (see `probewatch models`), local directory or cached hub id"""
    device: str | None = None
    """cpu, cuda or cuda:N (default: cuda when present)"""


@dataclass(kw_only=True)
class FileColumns:
    """How a user's CSV/TSV/JSONL/Parquet file maps to examples (see probewatch.data.files)."""

    text_column: str = "text"
    """column with the text to probe"""
    label_column: str = "label"
    """column with the label (0/1, true/false, yes/no; a number for regression)"""
    group_column: str = "group"
    """column naming an entity that must not cross splits (optional in the file)"""
    split_column: str = "split"
    """column with train/test per row; without it a file used for training is split by group"""
    messages_column: str = "messages"
    """column with a chat (a list of {role, content}) whose final message is probed"""
    spans_column: str = "spans"
    """column with [start, end] character spans to probe"""
    task: Task = "auto"
    """binary or regression; auto = regression only if some label is fractional"""
    allow_one_class: bool = field(default=False, metadata={"cli": False})
    """accept a file whose labels are all one class (scoring only)"""

    def __post_init__(self) -> None:
        _choice(self.task, get_args(Task), "task")

    def columns(self) -> "FileColumns":
        """Just the column mapping (drops what subclasses add)."""
        return FileColumns(**{f.name: getattr(self, f.name) for f in fields(FileColumns)})


@dataclass(kw_only=True)
class DataSource(FileColumns):
    """A built-in dataset by name, or the user's own file."""

    dataset: str | None = None
    """built-in dataset name (see `probewatch datasets list`)"""
    file: Path | None = None
    """your own .csv/.tsv/.jsonl/.parquet file"""
    limit: int | None = None
    """generated datasets: build at most this many items"""
    seed: int = 0
    """seed of the dataset split and of everything random downstream"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.file is not None:
            self.file = Path(self.file)
        if self.dataset and self.file:
            raise ProbewatchError("give --dataset or --file, not both")
        if self.dataset and Path(self.dataset).suffix.lower() in DATA_SUFFIXES:
            raise ProbewatchError(
                f"--dataset takes a built-in dataset name, and {self.dataset!r} looks like a file",
                hint=f"pass your own file as --file {self.dataset}",
            )
        _at_least(self, 1, "limit")

    @property
    def source(self) -> str | None:
        """What to load: the dataset name or the file path (None when neither was given)."""
        return self.dataset or (str(self.file) if self.file else None)

    def require(self) -> str:
        if self.source is None:
            raise ProbewatchError(
                "say which data to use", hint="--dataset NAME (built-in) or --file DATA.csv"
            )
        return self.source


@dataclass(kw_only=True)
class ProbeSpec(DataSource):
    """A probe's recipe: what it is trained on, where it reads and how it is thresholded and
    monitored. Stored in the probe's card as `recipe`, so the card says how to reproduce it."""

    sites: str = "all"
    """sites to sweep: all, resid.*, resid.10-14 or a comma list such as resid.12,mlp_out.3"""
    positions: Positions | None = None
    """tokens to read: last, all, mask (a chat's final message) or span (each example's
    character spans, e.g. the stated entity of an answer) (default: the dataset card's, else
    last; mask for per-token regression targets)"""
    kind: str | None = None
    """probe kind: logistic, mass_mean, ... (default: logistic; ridge for regression)"""
    probe_config: str = ""
    """options of the probe kind as key=value pairs, e.g. c=0.1 for logistic"""
    aggregator: str = "mean"
    """how token scores become one example score with --positions all/mask: mean, max, last,
    ema_max, rolling_max:window=8, softmax_weighted"""
    control: str | None = None
    """benign control dataset the threshold is set on (default: the validation negatives)"""
    target_fpr: float = 0.01
    """false-positive rate the alarm threshold is set at"""
    batch_size: int = 32
    """examples per forward pass while harvesting"""
    n_boot: int | None = field(default=None, metadata={"cli": False})
    """bootstrap resamples of the test confidence interval (default: 1000 binary, 500
    regression)"""
    scope: Scope = "response"
    """monitoring: judge the prompt (before generation) or the response, token by token"""
    monitor_aggregator: str | None = None
    """monitoring: how a response's token scores become its running score (default: the
    training aggregator, else the monitor's ema_max; last for regression)"""
    shortcut_audit: bool = True
    """audit a binary probe for shortcuts (early layers, a words/length baseline, the
    format-matched control) and put the verdict in its card"""

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice(self.positions, get_args(Positions), "positions")
        _choice(self.scope, get_args(Scope), "scope")
        if not 0 < self.target_fpr < 1:
            raise ProbewatchError(
                f"target_fpr must be between 0 and 1, not {self.target_fpr}",
                hint="e.g. --target-fpr 0.01 for 1%",
            )
        _at_least(self, 1, "batch_size", "n_boot")
        # Parse now so a typo fails before any model work.
        self.probe_options()
        self.aggregator_config()
        if self.monitor_aggregator:
            self.monitor_aggregator_config()

    def probe_options(self) -> dict[str, Any]:
        return parse_options(self.probe_config)

    def aggregator_config(self) -> dict[str, Any]:
        return parse_named(self.aggregator)

    def monitor_aggregator_config(self) -> dict[str, Any] | None:
        return parse_named(self.monitor_aggregator) if self.monitor_aggregator else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the card's `recipe`)."""
        data = asdict(self)
        data["file"] = str(self.file) if self.file else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProbeSpec":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(kw_only=True)
class EvalOptions:
    """How a saved probe is scored."""

    split: str = "test"
    """split of a built-in dataset to score, or "all" for a set the probe never trained on
    (every row of your file is scored)"""
    allow_model_mismatch: bool = False
    """score with other weights than the probe was trained on (recorded as a warning)"""
    n_boot: int = field(default=1000, metadata={"cli": False})
    """bootstrap resamples of the AUROC confidence interval"""


@dataclass(kw_only=True)
class EvalSpec(EvalOptions, DataSource):
    """What `probewatch eval` writes and shows besides the metrics."""

    probe: Path = field(metadata={"positional": True})
    """probe directory"""
    scores_out: Path | None = None
    """write every row's score, label and prediction to this .csv or .jsonl file"""
    worst: int = 5
    """show this many of the most confident mistakes"""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.probe = Path(self.probe)
        if not (self.probe / "card.json").is_file():
            what = "not a probe directory (no card.json)" if self.probe.exists() else "missing"
            raise ProbewatchError(
                f"no probe directory at {self.probe}: {what}",
                hint="pass a directory written by `probewatch train`",
            )
        if self.file is not None:
            self.split = "test"  # a user's file is scored whole (its rows are test rows)
        if self.scores_out is not None:
            self.scores_out = Path(self.scores_out)
            if self.scores_out.suffix.lower() not in (".csv", ".jsonl"):
                raise ProbewatchError(
                    f"--scores-out {self.scores_out}: unknown format",
                    hint="end the file name in .csv or .jsonl",
                )
        _at_least(self, 0, "worst")

    def options(self) -> EvalOptions:
        return EvalOptions(
            split=self.split, allow_model_mismatch=self.allow_model_mismatch, n_boot=self.n_boot
        )


@dataclass(kw_only=True)
class EngineChoice:
    """Which engine runs the model, and how a vLLM engine is built (docs/vllm.md). The vLLM
    taps, probe columns and steerable layers shape its compiled graph: fixed at start."""

    engine: Engine = "hf"
    """hf (probewatch's own loop) or vllm (probes in-graph inside vLLM; `make setup-vllm`)"""
    vllm_max_model_len: int = 2048
    """vLLM: longest sequence (prompt + output), in tokens"""
    vllm_max_num_seqs: int = 8
    """vLLM: most requests in its running batch"""
    vllm_kv_cache_gib: int = 1
    """vLLM on CPU: KV cache reserved up front, in GiB (VLLM_CPU_KVCACHE_SPACE)"""
    vllm_eager: bool = False
    """vLLM: skip torch.compile (starts in a minute instead of several, runs slower)"""
    vllm_sites: str = ""
    """vLLM: sites tapped beyond the loaded probes' (for probes uploaded later), comma list"""
    vllm_k_max: int = 16
    """vLLM: fused probe columns, i.e. affine probes that can be loaded at once"""
    vllm_tensor_parallel: int = 1
    """vLLM: tensor-parallel ranks per engine"""
    vllm_data_parallel: int = 1
    """vLLM: engines (data parallel); each publishes its own scores"""
    vllm_spare_worker_cores: bool = True
    """vLLM on CPU: keep this process's threads off the cores vLLM's workers are bound to"""

    def _check_engine(self) -> None:
        _choice(self.engine, get_args(Engine), "engine")
        _at_least(self, 1, "vllm_max_model_len", "vllm_max_num_seqs", "vllm_kv_cache_gib")
        _at_least(self, 1, "vllm_k_max", "vllm_tensor_parallel", "vllm_data_parallel")


@dataclass(kw_only=True)
class HarvestSpec(DataSource, EngineChoice):
    """Stream the activations of a dataset to an on-disk store (with `engine`: through vLLM)."""

    out: Path | None = None
    """store directory; an interrupted run resumes (default: the user cache, reused by
    later runs on the same model, data and positions)"""
    sites: str = "all"
    """sites to capture: all, resid.*, resid.10-14 or a comma list"""
    positions: Positions = "last"
    """tokens to store: last, all, mask (a chat's final message) or span (each example's
    character spans)"""
    batch_size: int = 32
    """examples per forward pass"""
    dtype: Dtype = "float32"
    """storage precision"""
    max_shard_mb: float = 256.0
    """largest shard file, in MiB"""
    overwrite: bool = False
    """replace an existing store made with other settings (otherwise it is refused)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.out = Path(self.out) if self.out is not None else None
        _choice(self.positions, get_args(Positions), "positions")
        _choice(self.dtype, get_args(Dtype), "dtype")
        _at_least(self, 1, "batch_size")
        if self.max_shard_mb <= 0:
            raise ProbewatchError("max_shard_mb must be positive", hint="e.g. --max-shard-mb 256")
        self._check_engine()


@dataclass(kw_only=True)
class ExtractSpec(DataSource):
    """Steering directions from a contrast dataset (label 1 minus label 0)."""

    sites: str
    """e.g. resid.10 or resid.8,resid.12"""
    positions: Positions = "last"
    """tokens whose activations are averaged"""
    method: Method = "mean_diff"
    """how the direction is computed"""
    split: str = "train"
    """split of the dataset the directions come from"""
    batch_size: int = 16
    """examples per forward pass"""

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice(self.positions, get_args(Positions), "positions")
        _choice(self.method, METHODS, "method")
        _at_least(self, 1, "batch_size")


@dataclass(kw_only=True)
class InterventionSpec:
    """What to do with a steering vector."""

    vector: Path = field(metadata={"positional": True})
    """steering vector directory (from `probewatch steer extract`)"""
    mode: Mode = "add"
    """what to do with the vector"""
    scale: float = 1.0
    """add/gated: steering strength"""
    sites: str | None = None
    """add/gated: sites to add at (default: all of the vector's); ablate/orthogonalize: the
    site whose direction is used"""
    probe: Path | None = None
    """gated: the probe that gates the steering"""
    threshold: float | None = None
    """gated: logit threshold (default: the probe's)"""
    allow_model_mismatch: bool = False
    """use a vector or probe made on other weights (recorded in the output)"""

    def __post_init__(self) -> None:
        self.vector = Path(self.vector)
        _choice(self.mode, MODES, "intervention mode")
        if self.mode == "gated" and self.probe is None:
            raise ProbewatchError("mode 'gated' needs the probe that gates it", hint="--probe DIR")

    def site_list(self) -> list[str] | None:
        return split_list(self.sites) or None


@dataclass(kw_only=True)
class AuditSpec:
    """How an intervention is audited against the original model."""

    n: int = 64
    """prompts per set (harmful, harmless)"""
    max_new_tokens: int = 24
    """greedy tokens generated per prompt"""
    batch_size: int = 16
    """prompts per forward pass"""
    seed: int = 0
    """seed of the prompt sample and the bootstrap"""
    allow_model_mismatch: bool = False
    """use a vector or probe made on other weights (recorded in the output)"""

    def __post_init__(self) -> None:
        _at_least(self, 1, "n", "max_new_tokens", "batch_size")


@dataclass(kw_only=True)
class RefusalDemoSpec(AuditSpec):
    """The refusal direction end to end: extract, choose the layer, audit ablation/addition."""

    n_val: int = 32
    """validation prompts per set for the layer choice"""
    layers: tuple[int, int, int] | None = field(
        default=None, metadata={"nargs": 3, "metavar": ("START", "STOP", "STEP")}
    )
    """candidate layers as range(START, STOP, STEP) (default: the first 80%)"""
    scale: float = 1.0
    """strength of the addition"""
    kl_max: float = 0.1
    """largest ablation KL on harmless validation requests a layer may have"""

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least(self, 1, "n_val")
        if self.layers is not None:
            start, stop, step = self.layers  # argparse gives a list
            self.layers = (start, stop, step)
            if step < 1 or not range(start, stop, step):
                raise ProbewatchError(
                    f"--layers {start} {stop} {step} selects no layer",
                    hint="START < STOP with STEP > 0, e.g. --layers 4 24 2",
                )

    def layer_range(self) -> range | None:
        return range(*self.layers) if self.layers is not None else None


@dataclass(kw_only=True)
class ServerConfig(ModelChoice, EngineChoice):
    """Settings of `probewatch serve` and `create_app`: every field is a flag."""

    probes_dir: Path = field(
        default_factory=lambda: Path("runs/demo/probes"), metadata={"flag": "--probes"}
    )
    """directory of probe artifacts (one subdirectory each); uploads land here"""
    vectors_dir: Path | None = field(default=None, metadata={"flag": "--vectors"})
    """directory of steering vectors (one subdirectory each)"""
    events_db: Path | None = None
    """SQLite event log (default: the user cache's events.sqlite)"""
    host: str = "127.0.0.1"
    """address to bind; beyond loopback an API key is required"""
    port: int = 8000
    """port to bind"""
    api_key: str | None = field(default=None, repr=False)
    """required on every /v1 request when set; mandatory beyond loopback (or PROBEWATCH_API_KEY)"""
    store_text: bool = True
    """keep prompts and responses in the event log (off: scores only)"""
    serve_shortcuts: bool = False
    """serve probes whose card's shortcut audit says "likely shortcut" (refused otherwise)"""
    max_body_bytes: int = 1_000_000
    """largest request body accepted"""
    max_prompt_tokens: int = 2048
    """longest prompt accepted, in tokens"""
    max_output_tokens: int = 512
    """most tokens a request may ask to generate"""
    default_max_tokens: int = 128
    """tokens generated when a request does not say"""
    max_batch: int = 8
    """most requests generated together"""
    batch_window_ms: float = 100.0
    """longest wait collecting a batch, in ms"""
    batch_idle_ms: float = 60.0
    """collecting stops when no request arrives for this long, in ms"""
    allowed_hosts: str = ""
    """more Host names to answer to, comma-separated (loopback and --host always; * for any)"""
    allowed_origins: str = ""
    """web origins besides the server's own whose pages may call /v1, comma-separated"""

    def __post_init__(self) -> None:
        self.probes_dir = Path(self.probes_dir)
        self.vectors_dir = Path(self.vectors_dir) if self.vectors_dir else None
        self.events_db = Path(self.events_db) if self.events_db else None
        if self.api_key is None:
            self.api_key = os.environ.get("PROBEWATCH_API_KEY") or None
        _at_least(self, 1, "max_body_bytes", "max_prompt_tokens", "max_output_tokens")
        _at_least(self, 1, "default_max_tokens", "max_batch")
        _at_least(self, 0, "batch_window_ms", "batch_idle_ms")
        self._check_engine()
        if not 0 < self.port < 65536:
            raise ProbewatchError(f"port {self.port} is out of range", hint="use 1-65535")

    @property
    def loopback(self) -> bool:
        if self.host in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def host_allow_list(self) -> set[str] | None:
        """Host names the server answers to; None: any (beyond loopback, where a key is needed)."""
        extra = split_list(self.allowed_hosts)
        if "*" in extra or (not self.loopback and not extra):
            return None
        return {*LOOPBACK_NAMES, self.host, *extra}

    def check(self) -> None:
        """What only matters once the server starts: a usable API key, required beyond
        loopback."""
        key = self.api_key
        if key is not None and (len(key) < MIN_API_KEY_LENGTH or key.strip() != key):
            raise ProbewatchError(
                f"the API key must be at least {MIN_API_KEY_LENGTH} characters, without "
                "surrounding spaces",
                hint="make one with: python -c 'import secrets; print(secrets.token_urlsafe())'",
            )
        if not self.loopback and not self.api_key:
            raise ProbewatchError(
                f"refusing to serve on {self.host} without an API key",
                hint="set --api-key or PROBEWATCH_API_KEY, or bind to 127.0.0.1",
            )


def split_list(text: str | None) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


AttributeTask = Literal["dla", "patch", "atp", "lens", "train-lens"]
PatchMetric = Literal["logit_diff", "prob", "kl", "probe"]


@dataclass(kw_only=True)
class AttributeSpec(ModelChoice):
    """One attribution job (`probewatch attribute TASK`); see docs/attribution.md."""

    task: AttributeTask = field(default="dla", metadata={"positional": True})
    """dla: which heads/MLPs wrote the target; patch: activation patching sweep; atp:
    attribution patching checked against exact patching; lens: logit/tuned lens; train-lens:
    train a tuned lens on held-out-split book passages"""
    prompt: str = ""
    """the (clean) prompt"""
    corrupted: str = ""
    """patch/atp: the corrupted prompt (same token length as the prompt)"""
    answer: str = ""
    """the token whose logit is the target, e.g. ' Paris' (one token)"""
    wrong: str = ""
    """the token the answer's logit is compared with, e.g. ' London'"""
    probe: str = ""
    """a probe directory: attribute (or patch with) its score instead of a logit"""
    metric: PatchMetric = "logit_diff"
    """patch/atp: what a patch is measured by"""
    positions: str = "last"
    """dla: last, all, or comma-separated token indices; patch: all or indices"""
    components: str = "resid,attn_out,mlp_out,head"
    """patch/atp: which components to patch"""
    direction: Literal["denoise", "noise", "both"] = "both"
    """patch: clean into corrupted (denoise), corrupted into clean (noise), or both"""
    grad_drop: bool = False
    """atp: AtP* GradDrop (one extra backward pass per layer)"""
    neurons: bool = False
    """dla: also attribute every MLP neuron"""
    tuned_lens: str = ""
    """lens: a tuned lens directory (from train-lens) to read instead of the logit lens"""
    budget_s: float = 840.0
    """train-lens: training time budget in seconds"""
    top: int = 15
    """how many parts/cells to list"""
    out: str = ""
    """output directory (result.json + report.html; train-lens: the lens artifact)"""

    def __post_init__(self) -> None:
        needs_prompt = self.task != "train-lens"
        if needs_prompt and not self.prompt:
            raise ProbewatchError(f"attribute {self.task} needs --prompt", hint="--prompt 'text'")
        if self.task in ("patch", "atp") and not self.corrupted:
            raise ProbewatchError(
                f"attribute {self.task} needs --corrupted", hint="a prompt of the same length"
            )
        if self.task == "train-lens" and not self.out:
            raise ProbewatchError("train-lens needs --out", hint="--out runs/lens")
        if self.top < 1 or self.budget_s <= 0:
            raise ProbewatchError("--top and --budget-s must be positive")
