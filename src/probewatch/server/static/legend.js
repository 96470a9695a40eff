// The colour scale of token backgrounds and the legend that explains it: what colours a token,
// where the threshold is and how it was set, what an alert is, and what never colours.
import { on } from "./bus.js";
import { el, fmt, h } from "./dom.js";
import { probeInfo, progressProbe, promptProbes } from "./probes.js";
import { state, thresholdOf } from "./state.js";

// Clear → amber → red on the probability scale, as a translucent background so the same
// scale reads on the light and the dark theme.
export function colourFor(p) {
  if (typeof p !== "number" || !Number.isFinite(p) || p < 0.03) return "";
  const amber = [245, 158, 11];
  const red = [220, 38, 38];
  if (p <= 0.5) {
    return `rgba(${amber.join(",")},${((p / 0.5) ** 1.6 * 0.42).toFixed(3)})`;
  }
  const t = (p - 0.5) / 0.5;
  const mix = amber.map((a, i) => Math.round(a + (red[i] - a) * t));
  return `rgba(${mix.join(",")},${(0.42 + t * 0.4).toFixed(3)})`;
}

const pct = (x) => `${+(x * 100).toFixed(1)}%`;

function thresholdText(probe) {
  const t = thresholdOf(probe.name);
  if (typeof t !== "number") return "no threshold (never alerts)";
  const fpr = typeof probe.target_fpr === "number" ? `, set for ${pct(probe.target_fpr)} false positives` : "";
  return `threshold ${fmt(t)}${fpr}`;
}

const names = (probes) => probes.map((p) => p.name).join(", ");

function helpLines(selected) {
  const lines = [];
  if (selected) {
    const about = selected.description && selected.description !== selected.name ? ` (${selected.description})` : "";
    lines.push(
      `Token background: the ${selected.name} probe's score at that token${about}, a calibrated ` +
        "probability from clear (0) through amber (0.5) to red (1).",
      `Dashed mark on the scale: its ${thresholdText(selected)}. A token at or above it is outlined.`,
      "Red underline: an alert — the probe's running aggregate (not the single token) crossed the " +
        "threshold there; the Alerts panel lists it and the verdict counts it.",
    );
  } else {
    lines.push("No response-scope probe is served, so tokens are not coloured.");
  }
  const prompt = promptProbes();
  if (prompt.length) {
    lines.push(
      `${names(prompt)}: judge the request only (scope "prompt"), once, before the first token — ` +
        "see the Prompt verdict. Their per-token scores mean nothing, so they never colour tokens.",
    );
  }
  const progress = progressProbe();
  if (progress) {
    lines.push(
      `${progress.name}: an estimate of how far the answer has got, shown as the progress bar with ` +
        "its measured error; it is not a judgement and never colours tokens.",
    );
  }
  lines.push("Hover a token for every probe's score; click it to inspect it.");
  return lines;
}

export function renderLegend() {
  const selected = probeInfo(state.selected) || null;
  const t = selected ? thresholdOf(selected.name) : undefined;
  el.legendThreshold.hidden = typeof t !== "number";
  if (typeof t === "number") {
    el.legendThreshold.style.left = `${(t * 100).toFixed(1)}%`;
    el.legendThreshold.title = `threshold ${fmt(t)}`;
  }
  el.legendText.replaceChildren(
    ...(selected
      ? [h("strong", { text: selected.name }), ` score per token · ${thresholdText(selected)}`]
      : ["tokens are not coloured: no response-scope probe"]),
  );
  el.legendHelpBody.replaceChildren(h("ul", {}, helpLines(selected).map((text) => h("li", { text }))));
}

on("probes", renderLegend);
on("select", renderLegend);
