// The colour scale of token backgrounds and the legend that explains it.
import { on } from "./bus.js";
import { el, fmt } from "./dom.js";
import { state, thresholdOf } from "./state.js";

// White → amber → red on the probability scale, as a translucent background so the same
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

export function renderLegend() {
  const t = thresholdOf(state.selected);
  el.legendThreshold.hidden = typeof t !== "number";
  if (typeof t === "number") {
    el.legendThreshold.style.left = `${(t * 100).toFixed(1)}%`;
    el.legendThreshold.title = `threshold ${fmt(t)}`;
  }
}

on("probes", renderLegend);
on("select", renderLegend);
