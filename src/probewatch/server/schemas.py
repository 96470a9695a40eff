"""The server's contract, written once: request bodies, response bodies, stream chunks and the
stored event. FastAPI validates requests and responses with these models and publishes them in
`/openapi.json`; the event log validates events with `Event`; docs/API.md is tested against them.

Requests are strict (no "5" for 5, no `false` for a seed, no NaN, no lone surrogates) so that
everything a request carries is checked before it joins a batch. Response models forbid extra
fields, so a field added to a response without being added here fails the tests.
"""

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

SEED_MAX = 2**63 - 1


def _encodable(text: str) -> str:
    """Refuse text that is not valid Unicode (a lone surrogate such as \\ud800)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text contains an unpaired surrogate at position {exc.start}") from exc
    return text


def _whole(value: Any) -> Any:
    """JSON Schema's integer admits 5.0: take a whole float as the int it spells (never a
    bool, a string or 5.5, which strict validation then refuses)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Text = Annotated[str, AfterValidator(_encodable)]
Integer = Annotated[int, BeforeValidator(_whole)]
# The length constraint before the Unicode check, so an empty name reads "String should have
# at least 1 character" rather than pydantic's generic "Value should have at least 1 item".
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_encodable)]
Probability = Annotated[float, Field(description="calibrated probability (0..1)")]


class Request(BaseModel):
    # OpenAI clients send fields we do not use (top_p, n, user, ...): ignore, don't fail.
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# -- requests -----------------------------------------------------------------------------------


class ChatMessage(Request):
    role: Literal["system", "user", "assistant"]
    content: Text


class Steering(Request):
    vector: Name = Field(description="name of a steering vector served by this server")
    strength: float = Field(description="multiplier of the vector (finite)")


class ChatRequest(Request):
    model: Text | None = Field(default=None, description="the served model's name or 'default'")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: Integer | None = Field(default=None, ge=1)
    max_completion_tokens: Integer | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=5.0)
    seed: Integer | None = Field(
        default=None,
        ge=0,
        le=SEED_MAX,
        description="sampling seed of this request alone: the same tokens batched or not",
    )
    probes: list[Name] | None = Field(
        default=None, description="probes to report (default: all loaded probes)"
    )
    steering: Steering | None = None


class AttributionMessage(ChatMessage):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class AttributionRequest(Request):
    """`POST /v1/attribution`. Not an OpenAI route, so a field it does not know is refused
    (a misspelt `prefix` would otherwise attribute the wrong token)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    messages: list[AttributionMessage] = Field(
        min_length=1, description="the conversation the response answers; ends with the user"
    )
    prefix: Text = Field(
        min_length=1,
        description="the response text up to and including the token to attribute (its last "
        "token is the one attributed)",
    )
    top: Integer = Field(default=8, ge=1, le=50, description="parts listed per target")
    probes: list[Name] | None = Field(
        default=None, description="probes to attribute (default: all loaded probes)"
    )


class EventsQuery(BaseModel):
    """Query parameters of GET /v1/events (strings on the wire, so not strict)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=2**62)
    probe: Name | None = Field(default=None, description="events with a verdict for this probe")
    flagged: bool | None = Field(default=None, description="with probe: that probe's verdict")
    since: float | None = Field(default=None, ge=0, description="unix seconds, inclusive")


# -- pieces of responses ------------------------------------------------------------------------


class ErrorDetail(Reply):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, not_found, ...")


class ErrorBody(Reply):
    """Every 4xx/5xx answer, and the SSE chunk that ends a stream which failed."""

    error: ErrorDetail


class Alert(Reply):
    probe: str
    token_index: int = Field(
        ge=-1, description="token that raised it; -1 for a prompt-scope probe (the prompt)"
    )
    value: Probability
    threshold: Probability


class Verdict(Reply):
    score: Probability = Field(description="aggregate at the end (prompt score for scope prompt)")
    threshold: float | None = Field(description="probability scale; null: the probe has none")
    flagged: bool
    first_alert_token: int | None = Field(default=None, description="-1: flagged on the prompt")


class ProbeInfo(Reply):
    name: str
    site: str
    kind: str | None
    task: Literal["binary", "regression"]
    scope: Literal["prompt", "response"] = Field(
        description="prompt: judges the request (verdict = prompt score); response: each token"
    )
    positions: Any
    aggregator: dict[str, Any]
    threshold: float | None = Field(description="probability scale")
    target_fpr: float | None
    description: str
    metrics: dict[str, Any]
    version: str


class ProbesListing(Reply):
    data: list[ProbeInfo]
    skipped: dict[str, str] = Field(description="probe directories not served, with the reason")
    vectors: list[str] = Field(description="steering vectors this server offers")
    vectors_skipped: dict[str, str] = Field(description="vector directories not served, why")


class Usage(Reply):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


# -- streaming ----------------------------------------------------------------------------------


class PromptPayload(Reply):
    """`probewatch` of the first chunk, sent before the first token: input monitoring."""

    probes: list[ProbeInfo] = Field(description="the probes reported, as in GET /v1/probes")
    prompt_scores: dict[str, Probability] = Field(description="each probe at the last prompt token")
    alerts: list[Alert] = Field(description="prompt-scope alerts (token_index -1)")


class TokenPayload(Reply):
    """`probewatch` of a token chunk."""

    token_index: int
    token: str
    scores: dict[str, Probability] = Field(description="each probe at this token")
    aggregates: dict[str, Probability] = Field(description="running aggregate per probe")
    alerts: list[Alert] = Field(description="alerts newly raised at this token")
    progress: float | None = Field(description="thinking-progress estimate, if that probe is on")


class FinalPayload(TokenPayload):
    """`probewatch` of the last chunk (it has `finish_reason`): the last token and the verdicts."""

    alerts: list[Alert] = Field(description="all alerts of the response")
    verdicts: dict[str, Verdict]
    prompt_scores: dict[str, Probability]
    event_id: str = Field(description="id of the event, committed to the log before this chunk")
    usage: Usage


class Delta(Reply):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(Reply):
    index: int
    delta: Delta
    finish_reason: Literal["stop", "length"] | None


class ChatChunk(Reply):
    """One `data:` line of a stream; the stream ends with `data: [DONE]`."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    probewatch: PromptPayload | FinalPayload | TokenPayload


# -- non-streaming ------------------------------------------------------------------------------


class TokenScores(Reply):
    token: str
    scores: dict[str, Probability]


class CompletionPayload(Reply):
    tokens: list[TokenScores]
    prompt_scores: dict[str, Probability]
    verdicts: dict[str, Verdict]
    alerts: list[Alert]
    progress: list[float | None] | None
    event_id: str


class AssistantMessage(Reply):
    role: Literal["assistant"]
    content: str


class CompletionChoice(Reply):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(Reply):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    probewatch: CompletionPayload


# -- attribution --------------------------------------------------------------------------------


class Part(Reply):
    part: str = Field(
        description="embed, L<layer>H<head>, attn_bias.<layer>, mlp.<layer>, or a constant row "
        "(unembed_bias, final_norm_bias, probe_bias, softcap_rest, ...)"
    )
    value: float


class PartsOf(Reply):
    """One target decomposed: its value as the model computes it, and its largest parts."""

    value: float = Field(
        description="the model's own value (the token's logit, a probe's raw score)"
    )
    error: float = Field(description="|sum of all parts - value| (all parts, not only top)")
    top: list[Part] = Field(description="the largest parts by magnitude, largest first")


class Skipped(Reply):
    skipped: str = Field(description="why this probe has no decomposition (e.g. not affine)")


class TokenAttribution(Reply):
    """Who wrote a token: the parts of its logit, and of each probe's raw score at it."""

    token: str = Field(description="the attributed token (the last token of prefix)")
    logit: PartsOf = Field(description="the token's logit at the position before it")
    probes: dict[str, PartsOf | Skipped] = Field(description="each probe's raw score at the token")


# -- events, models, health ---------------------------------------------------------------------


class EventSteering(Reply):
    vector: str
    strength: float


class EventMessage(Reply):
    role: str
    content: str


class Event(Reply):
    """One monitored response in the event log, as `GET /v1/events` returns it."""

    id: Annotated[str, Field(min_length=1, max_length=200)]
    created: float = Field(ge=0, description="unix seconds")
    request_id: str | None = None
    model: Annotated[str, Field(min_length=1)]
    model_fingerprint: str | None = None
    probes: dict[str, str | int] = Field(description="probe name -> version")
    verdicts: dict[Annotated[str, Field(min_length=1)], Verdict]
    alerts: list[Alert]
    prompt: list[EventMessage] | None = None
    response: str | None = Field(default=None, description="the text the client was sent")
    n_tokens: int = Field(ge=0, description="tokens the client was sent")
    flagged: bool
    steering: EventSteering | None = None
    finish_reason: Literal["stop", "length", "cancelled"] | None = Field(
        default=None, description="cancelled: the client left; null in logs written before 0.2"
    )


class EventsPage(Reply):
    data: list[Event]


class ModelCard(Reply):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelsList(Reply):
    object: Literal["list"]
    data: list[ModelCard]


class Health(Reply):
    status: Literal["ok", "loading", "error", "degraded"]
    error: str | None = Field(default=None, description="why the server is not ok")
