// The thinking-progress bar: the server's regression probe estimates how much of the answer is
// written. It is shown as an estimate with its measured error, and it never moves backwards:
//  - the quantity (share of the answer written) only grows, so a fall in the per-token estimate
//    is the probe's noise, not the answer undoing itself; the bar shows the running maximum of
//    a smoothed estimate (EMA, alpha 0.3) instead of each noisy value, and the raw per-token
//    values stay visible in the probe's trace;
//  - the band around the bar is ± the probe's mean absolute error on held-out answers (its card's
//    metrics), so a reader sees how rough the number is;
//  - until the answer ends the bar stops at 95%: an unfinished answer is not complete, whatever
//    the probe says; it reaches 100% only when the model stops by itself.
import { on } from "./bus.js";
import { el } from "./dom.js";
import { progressProbe } from "./probes.js";

const ALPHA = 0.3;
const CAP = 0.95;
let track = { smooth: null, shown: null, mae: null, raw: [] };

const clamp = (x) => Math.min(Math.max(x, 0), 1);
const points = (x) => Math.round(x * 100);

const finite = (x) => (typeof x === "number" && Number.isFinite(x) ? x : null);
const metric = (name) => {
  const probe = progressProbe();
  return probe && probe.metrics ? finite(probe.metrics[name]) : null;
};

function draw(shown, label, band = true) {
  const known = typeof shown === "number";
  const value = known ? points(shown) : 0;
  el.progress.setAttribute("aria-valuenow", String(value));
  el.progress.classList.toggle("unknown", !known);
  el.progressFill.style.width = `${value}%`;
  const mae = track.mae;
  const showBand = known && band && mae !== null;
  el.progressBand.hidden = !showBand;
  if (showBand) {
    const low = clamp(shown - mae);
    el.progressBand.style.left = `${low * 100}%`;
    el.progressBand.style.width = `${(clamp(shown + mae) - low) * 100}%`;
  }
  el.progress.setAttribute("aria-valuetext", label);
  el.progressLabel.textContent = label;
}

function estimate(shown) {
  const error = track.mae === null ? ", error not measured" : ` ± ${points(track.mae)}`;
  return `≈ ${points(shown)}%${error}`;
}

// A new response: shows the bar only when a progress probe is served, with its error noted.
export function resetProgress() {
  const probe = progressProbe();
  track = { smooth: null, shown: null, mae: metric("mae"), raw: [] };
  el.progressBlock.hidden = !probe;
  if (!probe) return;
  // The card's position-only baseline says how much the probe adds over counting tokens.
  const baseline = metric("baseline_mae");
  const versus = baseline === null ? "" : ` (a guess from the token position alone: ± ${points(baseline)})`;
  el.progressNote.textContent =
    track.mae === null
      ? `${probe.name} probe: a rough estimate; its card has no measured error.`
      : `${probe.name} probe: a rough estimate; band = ± ${points(track.mae)} points, its mean ` +
        `absolute error on held-out answers${versus}. Never moves backwards (see docs/dashboard.md).`;
  draw(null, "waiting for the first token");
}

export function updateProgress(raw) {
  if (typeof raw !== "number" || !Number.isFinite(raw)) return;
  track.raw.push(raw);
  track.smooth = track.smooth === null ? raw : track.smooth + ALPHA * (raw - track.smooth);
  track.shown = Math.min(CAP, Math.max(track.shown ?? 0, clamp(track.smooth)));
  draw(track.shown, `${estimate(track.shown)} (estimate)`);
}

// `how`: "stop" (the model ended its answer), "length" (cut at max tokens), "stopped" or "error".
export function finishProgress(how) {
  if (el.progressBlock.hidden) return;
  if (track.shown === null) {
    draw(null, "no progress estimate");
  } else if (how === "stop") {
    draw(1, "answer finished", false);
  } else {
    const why = how === "length" ? "cut at max tokens" : how;
    draw(track.shown, `${why} (estimate was ${estimate(track.shown)})`);
  }
}

// The probe list arrived or changed while no response is shown: show or hide the bar for it.
on("probes", () => {
  if (track.shown === null) resetProgress();
});
