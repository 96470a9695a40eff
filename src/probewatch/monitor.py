"""Live monitoring: generate while scoring every new token with every probe.

    monitor = Monitor(loaded, [load_probe(p, loaded) for p in paths])
    for step in monitor.stream([[{"role": "user", "content": "Hi"}]]):
        if isinstance(step, TokenStep):
            step.text, step.scores, step.alerts

Cost stays close to zero: forward hooks keep only the newest position of each probed site,
every probe whose score is an affine function of the activation is one column of a single
block matrix over the probed sites, so a token costs one matrix multiply (other probes are
scored on their own), and
aggregators update in O(1) per token. Decoding is our own KV-cached loop, so scoring needs no
second forward pass and happens on the device the model runs on.
"""

import contextlib
import inspect
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from probewatch.errors import ProbewatchError
from probewatch.hooks import Hook, add_vector, hidden_of, registered_hooks
from probewatch.metrics.calibration import PlattScaler
from probewatch.models.loading import LoadedModel
from probewatch.probes.aggregators import Aggregator, Stream, make_aggregator
from probewatch.probes.artifact import ProbeArtifact
from probewatch.sites import layer_list, parse_site, resolve_module
from probewatch.tokens import prompt_text

Message = dict[str, str]
# A fast tokenizer must not be called from two threads at once ("Already borrowed"): the
# server counts prompt tokens in worker threads while the batcher encodes a batch.
_ENCODE_LOCK = threading.Lock()
DEFAULT_AGGREGATOR = {"name": "ema_max", "alpha": 0.3}


@dataclass
class MonitoredProbe:
    """A probe as the monitor uses it: raw scores are logits; thresholds are on the aggregate."""

    name: str
    artifact: ProbeArtifact
    aggregator: Aggregator
    threshold: float | None  # logit scale, flag when aggregate > threshold
    platt: PlattScaler | None
    # "prompt": the probe judges the request (trained at the last prompt token, e.g. harm);
    # its verdict is the prompt score. "response": it judges the generated tokens.
    scope: str = "response"

    @property
    def task(self) -> str:
        return self.artifact.probe.task

    def probability(self, logit: float) -> float:
        """Calibrated probability for binary probes; regression outputs pass through clipped."""
        if self.task == "regression":
            return min(max(logit, 0.0), 1.0)
        z = self.platt.a * logit + self.platt.b if self.platt else logit
        return 1.0 / (1.0 + math.exp(-max(min(z, 60.0), -60.0)))

    @classmethod
    def from_artifact(cls, name: str, artifact: ProbeArtifact) -> "MonitoredProbe":
        card = artifact.card
        agg_config = (card.get("monitor") or {}).get("aggregator") or card.get("aggregator")
        aggregator = make_aggregator(**(agg_config or DEFAULT_AGGREGATOR))
        threshold = (card.get("threshold") or {}).get("value")
        calibration = card.get("calibration") or {}
        platt = PlattScaler.from_dict(calibration) if {"a", "b"} <= set(calibration) else None
        scope = str((card.get("monitor") or {}).get("scope", "response"))
        if scope not in ("prompt", "response"):
            raise ProbewatchError(f"probe {name!r}: unknown monitor scope {scope!r}")
        return cls(name, artifact, aggregator, threshold, platt, scope)

    def describe(self) -> dict[str, Any]:
        card = self.artifact.card
        threshold = self.probability(self.threshold) if self.threshold is not None else None
        return {
            "name": self.name,
            "site": self.artifact.site,
            "kind": card.get("kind"),
            "task": self.task,
            "scope": self.scope,
            "positions": card.get("positions"),
            "aggregator": self.aggregator.config(),
            "threshold": threshold,
            "target_fpr": (card.get("threshold") or {}).get("target_fpr"),
            "description": card.get("description") or card.get("dataset", {}).get("name", ""),
            "metrics": card.get("metrics", {}),
            "version": card.get("created", ""),
        }


class ProbeBank:
    """Probes grouped by site. Every affine probe, whatever its site, is one column of a single
    [sites·d, k] block matrix, so scoring a token is one concatenation and one matrix multiply
    (a few small ops per step instead of several per site: on a busy CPU each op can wait)."""

    def __init__(self, probes: Sequence[MonitoredProbe], d_model: int, device: torch.device):
        self.probes = list(probes)
        self.sites = sorted({p.artifact.site for p in probes})
        self._other: dict[str, list[int]] = {}
        forms: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for i, probe in enumerate(self.probes):
            form = probe.artifact.probe.affine()  # declared by the kind (AffineProbe)
            if form is None:
                self._other.setdefault(probe.artifact.site, []).append(i)
            else:
                forms[i] = form
        self._fused_sites = sorted({self.probes[i].artifact.site for i in forms})
        self._fused_idx = sorted(forms)
        weight = torch.zeros(len(self._fused_sites) * d_model, len(self._fused_idx))
        bias = torch.zeros(len(self._fused_idx))
        for column, i in enumerate(self._fused_idx):
            block = self._fused_sites.index(self.probes[i].artifact.site)
            weight[block * d_model : (block + 1) * d_model, column] = forms[i][0].float()
            bias[column] = forms[i][1].float().reshape(())
        self._weight, self._bias = weight.to(device), bias.to(device)
        self._all_fused = len(self._fused_idx) == len(self.probes)

    def score(self, acts: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        """Raw scores [B, n_probes] (logits) from each site's newest activations [B, d]."""
        fused = None
        if self._fused_idx:
            x = torch.cat([acts[site] for site in self._fused_sites], dim=1)
            fused = torch.addmm(self._bias, x.to(self._weight.dtype), self._weight)
            if self._all_fused:  # columns are already in probe order
                return fused
        device = next(iter(acts.values())).device if acts else torch.device("cpu")
        out = torch.empty(batch, len(self.probes), device=device)
        if fused is not None:
            out[:, self._fused_idx] = fused
        for site, idx in self._other.items():
            for i in idx:
                out[:, i] = (
                    self.probes[i].artifact.probe.score(acts[site].float().cpu()).to(out.device)
                )
        return out


@dataclass
class Alert:
    probe: str
    token_index: int
    value: float  # probability scale
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class TokenStep:
    """One generated token of one conversation of the batch."""

    row: int
    token_index: int
    token_id: int
    text: str  # the new text this token adds (may be "" mid-character)
    scores: dict[str, float]  # probability per probe at this token
    aggregates: dict[str, float]  # running aggregate per probe, probability scale
    alerts: list[Alert]  # alerts that fired at this token
    progress: float | None
    finish_reason: str | None = None  # "stop" or "length" on the row's last token


@dataclass
class PromptStep:
    """A conversation's prompt has been read: its scores and prompt-scope alerts, yielded for
    every row of the batch before the first token (input monitoring can act before output)."""

    row: int
    prompt_scores: dict[str, float]  # probability per probe at the last prompt token
    alerts: list[Alert]  # prompt-scope alerts, token_index -1


@dataclass
class MonitoredResponse:
    text: str = ""
    tokens: list[TokenStep] = field(default_factory=list)
    prompt_scores: dict[str, float] = field(default_factory=dict)
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    finish_reason: str = "length"  # "stop", "length", or "cancelled" (Monitor.stop)

    @property
    def flagged(self) -> bool:
        return any(v["flagged"] for v in self.verdicts.values())


class _RowState:
    def __init__(self, probes: Sequence[MonitoredProbe]) -> None:
        self.streams: list[Stream] = [p.aggregator.stream() for p in probes]
        self.alerted = [False] * len(probes)
        self.first_alert: list[int | None] = [None] * len(probes)
        self.token_ids: list[int] = []
        self.text = ""
        self.done = False
        self.response = MonitoredResponse()


class Monitor:
    """Generates for a batch of conversations while scoring every token with every probe."""

    def __init__(self, loaded: LoadedModel, probes: Sequence[ProbeArtifact | MonitoredProbe]):
        self.loaded = loaded
        monitored = [
            p if isinstance(p, MonitoredProbe) else MonitoredProbe.from_artifact(_name(p), p)
            for p in probes
        ]
        names = [p.name for p in monitored]
        if len(set(names)) != len(names):
            raise ProbewatchError(f"probe names must be unique, got {names}")
        self.probes = monitored
        self.bank = ProbeBank(monitored, loaded.d_model, loaded.device)
        self._latest: dict[str, torch.Tensor] = {}
        eos = {loaded.tokenizer.eos_token_id}
        for special in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>"):
            token_id = loaded.tokenizer.convert_tokens_to_ids(special)
            if isinstance(token_id, int) and token_id != loaded.tokenizer.unk_token_id:
                eos.add(token_id)
        self.stop_ids = {t for t in eos if t is not None}
        # The prompt pass needs logits for its last position only; the unembedding of every
        # prompt token would cost more than several decode steps ([B, T, vocab]).
        forward = inspect.signature(loaded.model.forward).parameters
        self._last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in forward else {}

    def describe(self) -> list[dict[str, Any]]:
        return [p.describe() for p in self.probes]

    def _read_hooks(self) -> list[tuple[nn.Module, Hook]]:
        """A hook per probed site that keeps only the newest position's activation."""
        pairs: list[tuple[nn.Module, Hook]] = []
        n_layers = len(layer_list(self.loaded.model))
        for site in self.bank.sites:
            module = resolve_module(self.loaded.model, parse_site(site, n_layers))

            def hook(_module: nn.Module, _args: Any, output: Any, site: str = site) -> None:
                self._latest[site] = hidden_of(output)[:, -1, :].detach()

            pairs.append((module, hook))
        return pairs

    def _encode(self, conversations: Sequence[Sequence[Message]]) -> tuple[torch.Tensor, ...]:
        tokenizer = self.loaded.tokenizer
        rendered = [prompt_text(tokenizer, c) for c in conversations]
        # A base model (no chat template): plain concatenation of the message contents.
        special = any(text is None for text in rendered)
        texts = [
            text if text is not None else "\n".join(m["content"] for m in c)
            for text, c in zip(rendered, conversations, strict=True)
        ]
        with _ENCODE_LOCK:  # padding settings live in the shared Rust tokenizer
            encoded = tokenizer(
                texts,
                add_special_tokens=special,
                padding=True,
                padding_side="left",
                return_tensors="pt",
            )
        device = self.loaded.device
        return encoded["input_ids"].to(device), encoded["attention_mask"].to(device)

    def prompt_ids(self, conversation: Sequence[Message]) -> list[int]:
        """The token ids `stream` feeds the model for this conversation (template applied)."""
        return [int(t) for t in self._encode([conversation])[0][0].tolist()]

    def new_row(self) -> "_RowState":
        """The state `read_prompt` and `advance` update, for an engine that generates
        elsewhere (engines.vllm) and scores through this monitor."""
        return _RowState(self.probes)

    def read_prompt(self, row: "_RowState", scores: torch.Tensor) -> "PromptStep":
        """A row's raw prompt scores [n_probes] (last prompt position): prompt scores and
        prompt-scope alerts, as `stream` yields them before the first token."""
        return self._read_prompt(row, 0, scores)

    def advance(
        self, row: "_RowState", token_id: int, scores: torch.Tensor, last_step: bool
    ) -> TokenStep:
        """One token generated elsewhere, with the raw scores [n_probes] of the step that
        consumed it: aggregates, alerts, and on the last step the verdicts."""
        return self._advance(row, 0, token_id, scores, last_step)

    def prompt_length(self, conversation: Sequence[Message]) -> int:
        """Tokens `stream` feeds the model for this conversation (its rendered prompt)."""
        return int(self._encode([conversation])[0].shape[1])

    @torch.no_grad()
    def stream(
        self,
        conversations: Sequence[Sequence[Message]],
        max_new_tokens: int | Sequence[int] = 128,
        temperature: float | Sequence[float] = 0.0,
        seed: int | Sequence[int | None] | None = None,
        steering: Sequence[tuple[str, torch.Tensor, float]] = (),
    ) -> Iterator[PromptStep | TokenStep]:
        """Yield one PromptStep per conversation once the prompts are read, then one TokenStep
        per generated token per conversation, as they are produced. The last step of each row
        has `finish_reason`; `responses` collects the results; `stop(row)` ends a row early.

        `max_new_tokens`, `temperature` and `seed` may be given per conversation (one batch can
        serve requests with different settings): each row samples from its own generator, so a
        seeded row draws the same tokens alone or batched. `steering` adds (site, vector,
        scale) to the residual stream of the whole batch."""
        if not conversations:
            raise ProbewatchError("no conversations to generate for")
        n = len(conversations)
        limits = [max_new_tokens] * n if isinstance(max_new_tokens, int) else list(max_new_tokens)
        temps = [temperature] * n if isinstance(temperature, int | float) else list(temperature)
        seeds = [seed] * n if seed is None or isinstance(seed, int) else list(seed)
        if len(limits) != n or len(temps) != n or len(seeds) != n:
            raise ProbewatchError("give one max_new_tokens, temperature and seed per conversation")
        if min(limits) < 1:
            raise ProbewatchError("max_new_tokens must be at least 1")
        if not all(math.isfinite(t) and t >= 0 for t in temps):
            raise ProbewatchError("temperature must be a finite number >= 0")
        model = self.loaded.model
        input_ids, attention_mask = self._encode(conversations)
        generators = [_generator(s, input_ids.device) for s in seeds]
        rows = [_RowState(self.probes) for _ in conversations]
        self._rows = rows
        self.responses = [row.response for row in rows]
        temperatures = torch.tensor(temps, device=input_ids.device).unsqueeze(1)
        sample = temperatures[:, 0] > 0
        try:
            with contextlib.ExitStack() as steer:
                # Read hooks first: they see each site's output before steering is added.
                steer.enter_context(registered_hooks(self._read_hooks()))
                for site, vector, scale in steering:
                    steer.enter_context(add_vector(model, site, vector, scale))
                position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
                cache = DynamicCache()
                out = model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    past_key_values=cache,
                    use_cache=True,
                    **self._last_logits_only,
                )
                prompt_scores = self.bank.score(self._latest, len(rows)).float().cpu()
                for i, row in enumerate(rows):
                    yield self._read_prompt(row, i, prompt_scores[i])
                next_position = position_ids[:, -1:] + 1
                for step in range(max(limits)):
                    if all(row.done for row in rows):  # every row stopped by the caller
                        break
                    logits = out.logits[:, -1, :].float()
                    next_ids = logits.argmax(dim=-1, keepdim=True)
                    if bool(sample.any()):
                        probs = torch.softmax(logits / temperatures.clamp_min(1e-6), dim=-1)
                        for i in sample.nonzero()[:, 0].tolist():
                            drawn = torch.multinomial(probs[i], 1, generator=generators[i])
                            next_ids[i, 0] = drawn[0]
                    attention_mask = torch.cat([attention_mask, torch.ones_like(next_ids)], dim=1)
                    out = model(
                        input_ids=next_ids,
                        attention_mask=attention_mask,
                        position_ids=next_position,
                        past_key_values=out.past_key_values,
                        use_cache=True,
                    )
                    next_position = next_position + 1
                    scores = self.bank.score(self._latest, len(rows)).float().cpu()
                    ids = next_ids[:, 0].tolist()
                    for i, row in enumerate(rows):
                        if row.done:
                            continue
                        yield self._advance(row, i, ids[i], scores[i], step == limits[i] - 1)
                    if all(row.done for row in rows):
                        break
        finally:
            self._latest = {}

    def _read_prompt(self, row: _RowState, i: int, scores: torch.Tensor) -> PromptStep:
        response = row.response
        response.prompt_scores = {
            p.name: p.probability(float(scores[k])) for k, p in enumerate(self.probes)
        }
        for k, p in enumerate(self.probes):
            value = float(scores[k])
            if p.scope == "prompt" and p.threshold is not None and value > p.threshold:
                # Input monitoring: flagged before the first token is generated.
                row.alerted[k] = True
                row.first_alert[k] = -1
                response.alerts.append(
                    Alert(p.name, -1, p.probability(value), p.probability(p.threshold))
                )
        return PromptStep(i, dict(response.prompt_scores), list(response.alerts))

    def stop(self, row: int) -> None:
        """End row `row` of the running `stream` now (its client left): it gets no more tokens,
        its response keeps the tokens so far, with finish_reason "cancelled"."""
        state = self._rows[row]
        if not state.done:
            self._finish(state, "cancelled")

    def _advance(
        self, row: _RowState, i: int, token_id: int, scores: torch.Tensor, last_step: bool
    ) -> TokenStep:
        index = len(row.token_ids)
        stop = token_id in self.stop_ids
        text = ""
        if not stop:
            row.token_ids.append(token_id)
            with _ENCODE_LOCK:
                full = self.loaded.tokenizer.decode(row.token_ids, skip_special_tokens=True)
            # Decoding the whole response keeps multi-byte characters and spaces right.
            text = full[len(row.text) :] if full.startswith(row.text) else full
            row.text = full
        probabilities, aggregates = {}, {}
        alerts: list[Alert] = []
        progress = None
        for k, probe in enumerate(self.probes):
            logit = float(scores[k])
            probabilities[probe.name] = probe.probability(logit)
            value = row.streams[k].update(logit)
            aggregates[probe.name] = probe.probability(value)
            if probe.task == "regression":
                progress = probabilities[probe.name]
            if probe.scope == "prompt":
                continue
            if probe.threshold is not None and not row.alerted[k] and value > probe.threshold:
                row.alerted[k] = True
                row.first_alert[k] = index
                alerts.append(
                    Alert(
                        probe.name,
                        index,
                        aggregates[probe.name],
                        probe.probability(probe.threshold),
                    )
                )
        finish = "stop" if stop else ("length" if last_step else None)
        step = TokenStep(
            i, index, token_id, text, probabilities, aggregates, alerts, progress, finish
        )
        response = row.response
        response.tokens.append(step)
        response.alerts.extend(alerts)
        if finish:
            self._finish(row, finish)
        return step

    def _finish(self, row: _RowState, reason: str) -> None:
        row.done = True
        response = row.response
        response.text = row.text
        response.finish_reason = reason
        response.verdicts = {
            p.name: {
                "score": response.prompt_scores[p.name]
                if p.scope == "prompt" or not response.tokens
                else p.probability(row.streams[k].value),
                "threshold": p.probability(p.threshold) if p.threshold is not None else None,
                "flagged": row.alerted[k],
                "first_alert_token": row.first_alert[k],
            }
            for k, p in enumerate(self.probes)
            if p.task != "regression"
        }

    def generate(
        self, conversations: Sequence[Sequence[Message]], **kwargs: Any
    ) -> list[MonitoredResponse]:
        """Run `stream` to the end and return one MonitoredResponse per conversation."""
        for _ in self.stream(conversations, **kwargs):
            pass
        return self.responses


def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # nondeterministic, like an unseeded torch.multinomial
    else:
        generator.manual_seed(seed)
    return generator


def _name(artifact: ProbeArtifact) -> str:
    if artifact.card.get("name"):
        return str(artifact.card["name"])
    if artifact.path is not None:
        return artifact.path.name
    return str(artifact.card.get("dataset", {}).get("name", "probe"))
