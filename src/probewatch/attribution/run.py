"""One attribution job from an `AttributeSpec`: the Python API behind `probewatch attribute`.

result = run_attribution(loaded, AttributeSpec(task="dla", prompt=..., answer=" Paris",
                                               wrong=" London"))
result["json"], result["html"]
"""

from pathlib import Path
from typing import Any

from probewatch.attribution.atp import AtPSpec, attribution_patching
from probewatch.attribution.dla import direct_attribution
from probewatch.attribution.lens import logit_lens
from probewatch.attribution.metrics import LogitDiffMetric, ProbeMetric, ProbMetric
from probewatch.attribution.patching import SweepSpec, activation_patching
from probewatch.attribution.report import heatmap_svg, page, token_view
from probewatch.attribution.targets import LogitDiff, ProbeScore, single_token
from probewatch.attribution.tuned_lens import load_tuned_lens
from probewatch.config import AttributeSpec, split_list
from probewatch.errors import ProbewatchError
from probewatch.tokens import encode


def _positions(text: str) -> Any:
    if text in ("last", "all"):
        return text
    try:
        return [int(p) for p in split_list(text)]
    except ValueError as exc:
        raise ProbewatchError(
            f"positions {text!r}", hint="last, all, or token indices such as 3,-1"
        ) from exc


def _probe(loaded: Any, spec: AttributeSpec) -> Any:
    from probewatch.probes.artifact import load_probe

    return load_probe(spec.probe, loaded)


def _target(loaded: Any, spec: AttributeSpec) -> Any:
    if spec.probe:
        return ProbeScore(_probe(loaded, spec))
    if not spec.answer:
        raise ProbewatchError("give --answer (and --wrong), or --probe", hint="--answer ' Paris'")
    tok = loaded.tokenizer
    wrong = single_token(tok, spec.wrong) if spec.wrong else None
    return LogitDiff(single_token(tok, spec.answer), wrong)


def _metric(loaded: Any, spec: AttributeSpec) -> Any:
    if spec.metric == "probe" or spec.probe:
        return ProbeMetric(_probe(loaded, spec))
    if spec.metric == "kl":
        return "kl"
    if not spec.answer:
        raise ProbewatchError(f"metric {spec.metric} needs --answer", hint="--answer ' Paris'")
    answer = single_token(loaded.tokenizer, spec.answer)
    if spec.metric == "prob":
        return ProbMetric(answer)
    if not spec.wrong:
        raise ProbewatchError("metric logit_diff needs --wrong", hint="--wrong ' London'")
    return LogitDiffMetric(answer, single_token(loaded.tokenizer, spec.wrong))


def _dla(loaded: Any, spec: AttributeSpec) -> dict[str, Any]:
    result = direct_attribution(
        loaded, [spec.prompt], _target(loaded, spec), _positions(spec.positions), spec.neurons
    )
    data = result.to_dict(top=spec.top)
    layers = [f"L{i}" for i in range(result.layers_used)]
    heads = [f"H{h}" for h in range(result.heads.shape[2])]
    sections = []
    for n in range(len(result.target)):
        position = int(result.token[n])
        sections.append(
            heatmap_svg(
                result.heads[n, : result.layers_used],
                layers,
                heads,
                f"heads → {result.target_label} at token {position}",
            )
        )
        mlp = result.mlp[n, : result.layers_used][:, None]
        sections.append(heatmap_svg(mlp, layers, ["MLP"], "MLPs"))
    summary = {
        "target": result.target_label,
        "model's value": f"{float(result.target[0]):.6g}",
        "sum of parts": f"{float(result.total()[0]):.6g}",
        "max error": result.error(),
        "top parts": ", ".join(f"{k} {v:+.3f}" for k, v in result.parts(0)[:8]),
    }
    return {"json": data, "html": page("Direct logit attribution", sections, summary)}


def _patch(loaded: Any, spec: AttributeSpec) -> dict[str, Any]:
    tok = loaded.tokenizer
    clean, corrupt = encode(tok, [spec.prompt]), encode(tok, [spec.corrupted])
    components = tuple(split_list(spec.components))
    sweep = SweepSpec(components=components)  # type: ignore[arg-type]
    if spec.positions not in ("last", "all"):
        sweep = SweepSpec(components=components, positions=tuple(_positions(spec.positions)))  # type: ignore[arg-type]
    metric = _metric(loaded, spec)
    if spec.task == "atp":
        if metric == "kl":
            raise ProbewatchError("atp needs a logit_diff, prob or probe metric")
        atp = attribution_patching(loaded, corrupt, clean, metric, AtPSpec(sweep, spec.grad_drop))
        return {
            "json": atp.to_dict(),
            "html": page(
                "Attribution patching",
                [],
                {
                    "method": atp.method,
                    "pearson vs exact": f"{atp.pearson:.3f}",
                    "spearman vs exact": f"{atp.spearman:.3f}",
                    "top-cell recall": atp.top_recall,
                },
            ),
        }
    results = activation_patching(loaded, clean, corrupt, metric, _Direction(sweep, spec.direction))
    tokens = [tok.decode([int(i)]) for i in clean.input_ids[0]]
    sections = []
    for name, result in results.items():
        for component in components:
            grid = result.grid(component)  # type: ignore[arg-type]
            columns = (
                [f"H{h}" for h in range(result.n_heads)]
                if component == "head"
                else [tokens[p] for p in result.positions]
            )
            rows = [f"L{i}" for i in range(result.n_layers)]
            sections.append(heatmap_svg(grid, rows, columns, f"{name}: {component}"))
        if "resid" in components:
            best = result.grid("resid").nan_to_num(0.0)
            strongest = best.abs().argmax(0)
            values = [float(best[int(strongest[j]), j]) for j in range(best.shape[1])]
            sections.append(
                token_view(
                    [tokens[p] for p in result.positions],
                    values,
                    f"{name}: strongest residual patch per token",
                )
            )
    data = {name: r.to_dict() for name, r in results.items()}
    summary = {
        name: f"base {r.base.tolist()}, donor {r.source.tolist()}" for name, r in results.items()
    }
    return {"json": data, "html": page("Activation patching", sections, summary)}


class _Direction:
    def __init__(self, sweep: SweepSpec, direction: str) -> None:
        self.sweep, self.direction = sweep, direction


def _lens(loaded: Any, spec: AttributeSpec) -> dict[str, Any]:
    translators = load_tuned_lens(spec.tuned_lens, loaded) if spec.tuned_lens else None
    target = single_token(loaded.tokenizer, spec.answer) if spec.answer else None
    lens = logit_lens(loaded, spec.prompt, target, k=5, translators=translators)
    name = "Tuned lens" if translators else "Logit lens"
    sections = [heatmap_svg(lens.kl, lens.sites, lens.tokens, f"{name}: KL(final ‖ layer)")]
    if lens.target_prob is not None:
        sections.append(heatmap_svg(lens.target_prob, lens.sites, lens.tokens, "p(answer)"))
    top = lens.top_tokens(len(lens.sites) // 2)
    summary = {"middle layer's top tokens": " | ".join(",".join(t[:3]) for t in top)}
    return {"json": lens.to_dict(), "html": page(name, sections, summary)}


def run_attribution(loaded: Any, spec: AttributeSpec) -> dict[str, Any]:
    """{"json": the numbers, "html": the offline report} for one job (not train-lens)."""
    if spec.task == "dla":
        return _dla(loaded, spec)
    if spec.task in ("patch", "atp"):
        return _patch(loaded, spec)
    if spec.task == "lens":
        return _lens(loaded, spec)
    raise ProbewatchError(f"task {spec.task!r} is not a report", hint="see --help")


def write_outputs(result: dict[str, Any], out: str | Path, overwrite: bool) -> Path:
    import json

    from probewatch.paths import atomic_directory, refuse_to_replace, write_json_atomic

    target = refuse_to_replace(out, overwrite, "an attribution report", "output directory")
    with atomic_directory(target, overwrite=overwrite) as scratch:
        write_json_atomic(scratch / "result.json", json.loads(json.dumps(result["json"])))
        (scratch / "report.html").write_text(result["html"], encoding="utf-8")
    return target
