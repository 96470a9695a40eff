"""Who wrote this token: the heads and MLPs behind one generated token's logit, and behind each
probe's score at that token (the dashboard's click-a-token view)."""

from collections.abc import Mapping, Sequence
from typing import Any

from probewatch.attribution.dla import Attribution, direct_attribution
from probewatch.attribution.targets import LogitDiff, ProbeScore
from probewatch.errors import ProbewatchError
from probewatch.tokens import Batch, render_chat


def _top(result: Attribution, top: int) -> list[dict[str, Any]]:
    return [{"part": name, "value": value} for name, value in result.parts(0)[:top]]


def who_wrote(
    loaded: Any,
    messages: Sequence[Mapping[str, str]],
    prefix: str,
    probes: Mapping[str, Any],
    top: int = 8,
) -> dict[str, Any]:
    """For the token that follows `prefix` in the response to `messages` (prefix + token given
    as one string whose last token is the clicked one): the parts of its logit, and of every
    affine residual-stream probe's score at it."""
    text, _ = render_chat(loaded.tokenizer, [dict(m) for m in messages])
    ids = loaded.tokenizer(text + prefix, add_special_tokens=False, return_tensors="pt").input_ids
    if ids.shape[1] < 2:
        raise ProbewatchError("nothing to attribute: the token has no context before it")
    context = Batch(ids[:, :-1], ids.new_ones(1, ids.shape[1] - 1), None)
    whole = Batch(ids, ids.new_ones(ids.shape), None)
    token_id = int(ids[0, -1])
    logit = direct_attribution(loaded, context, LogitDiff(token_id))
    out: dict[str, Any] = {
        "token": loaded.tokenizer.decode([token_id]),
        "logit": {"value": float(logit.target[0]), "error": logit.error(), "top": _top(logit, top)},
        "probes": {},
    }
    for name, artifact in probes.items():
        try:
            result = direct_attribution(loaded, whole, ProbeScore(artifact))
        except ProbewatchError as exc:  # not affine, or not on the residual stream
            out["probes"][name] = {"skipped": exc.message}
            continue
        out["probes"][name] = {
            "value": float(result.target[0]),
            "error": result.error(),
            "top": _top(result, top),
        }
    return out
