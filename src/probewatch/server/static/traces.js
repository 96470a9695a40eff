// Per-probe score traces of the current response: raw score, running aggregate, threshold
// line, alert marks and a cursor that follows the hovered token. Only probes that judge the
// response (and the progress estimate) have a trace: a prompt-scope probe's per-token score
// means nothing, its verdict is the Prompt verdict.
import { on } from "./bus.js";
import { el, fmt, h, svg } from "./dom.js";
import { colourProbes, selectProbe } from "./probes.js";
import { state, thresholdOf } from "./state.js";

const W = 300;
const H = 54;
let traceFrame = 0;
let traceNodes = new Map(); // probe → {wrap, score, aggregate, threshold, band, marks, cursor, value}

export function scheduleTraces() {
  if (!traceFrame) traceFrame = requestAnimationFrame(() => renderTraces(false));
}

const tracedProbes = () => state.probes.filter((p) => p.scope !== "prompt");

function buildTraces() {
  traceNodes = new Map();
  const colourable = new Set(colourProbes().map((p) => p.name));
  const charts = tracedProbes().map((probe) => {
    const name = probe.name;
    const what = colourable.has(name) ? "click to colour tokens by this probe" : "an estimate, never a colour";
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", class: "trace-svg" });
    const band = svg("rect", { x: 0, y: 0, width: W, height: 0, class: "trace-band" });
    const threshold = svg("line", { x1: 0, x2: W, y1: 0, y2: 0, class: "trace-threshold" });
    const aggregate = svg("polyline", { points: "", class: "trace-aggregate" });
    const score = svg("polyline", { points: "", class: "trace-score" });
    const marks = svg("g", { class: "trace-marks" });
    const cursor = svg("line", { x1: 0, x2: 0, y1: 0, y2: H, class: "trace-cursor", visibility: "hidden" });
    chart.append(band, threshold, aggregate, score, marks, cursor);
    const value = h("span", { class: "trace-value", text: "–" });
    const t = thresholdOf(name);
    const wrap = h(
      "button",
      {
        type: "button",
        class: `trace${name === state.selected ? " selected" : ""}`,
        "data-probe": name,
        title: `${probe.description || name} — ${what}`,
        onclick: () => selectProbe(name),
      },
      h(
        "div",
        { class: "trace-head" },
        h("span", { class: "trace-name", text: name }),
        value,
        h("span", { class: "trace-thr muted", text: typeof t === "number" ? `thr ${fmt(t)}` : "" }),
      ),
      chart,
    );
    traceNodes.set(name, { wrap, score, aggregate, threshold, band, marks, cursor, value });
    return wrap;
  });
  const none = h("span", { class: "muted small", text: "No response probes loaded." });
  el.traces.replaceChildren(...(charts.length ? charts : [none]));
}

const yOf = (p) => (H - 2 - Math.min(Math.max(p, 0), 1) * (H - 4)).toFixed(1);
const xScale = (tokens) => {
  const span = Math.max(tokens.length - 1, 24);
  return (i) => ((i / span) * W).toFixed(1);
};

export function renderTraces(rebuild) {
  traceFrame = 0;
  if (rebuild || traceNodes.size !== tracedProbes().length) buildTraces();
  const tokens = state.turn ? state.turn.tokens : [];
  const xOf = xScale(tokens);
  const alerts = state.turn ? state.turn.alerts : [];
  for (const [name, nodes] of traceNodes) {
    const scorePts = [];
    const aggPts = [];
    tokens.forEach((tok, i) => {
      if (typeof tok.scores[name] === "number") scorePts.push(`${xOf(i)},${yOf(tok.scores[name])}`);
      if (typeof tok.aggregates[name] === "number") aggPts.push(`${xOf(i)},${yOf(tok.aggregates[name])}`);
    });
    nodes.score.setAttribute("points", scorePts.join(" "));
    nodes.aggregate.setAttribute("points", aggPts.join(" "));
    const t = thresholdOf(name);
    const hasT = typeof t === "number";
    nodes.threshold.setAttribute("visibility", hasT ? "visible" : "hidden");
    if (hasT) {
      nodes.threshold.setAttribute("y1", yOf(t));
      nodes.threshold.setAttribute("y2", yOf(t));
      nodes.band.setAttribute("height", yOf(t));
    }
    nodes.marks.replaceChildren(
      ...alerts
        .filter((a) => a.probe === name)
        .map((a) => {
          const i = tokens.findIndex((tok) => tok.index === a.token_index);
          const x = xOf(i < 0 ? a.token_index : i);
          return svg("line", { x1: x, x2: x, y1: 0, y2: H, class: "trace-alert" });
        }),
    );
    const last = tokens.length ? tokens[tokens.length - 1].scores[name] : undefined;
    nodes.value.textContent = fmt(last);
    nodes.value.classList.toggle("over", hasT && typeof last === "number" && last >= t);
    nodes.wrap.classList.toggle("selected", name === state.selected);
    nodes.wrap.classList.toggle("fired", alerts.some((a) => a.probe === name));
  }
}

// `index` is a token index of the current response, or null to hide the cursor.
export function setCursor(index) {
  const tokens = state.turn ? state.turn.tokens : [];
  const i = index === null ? -1 : tokens.findIndex((tok) => tok.index === index);
  const xOf = xScale(tokens);
  for (const nodes of traceNodes.values()) {
    if (i < 0) {
      nodes.cursor.setAttribute("visibility", "hidden");
    } else {
      nodes.cursor.setAttribute("x1", xOf(i));
      nodes.cursor.setAttribute("x2", xOf(i));
      nodes.cursor.setAttribute("visibility", "visible");
    }
  }
}

on("probes", () => renderTraces(true));
on("select", () => renderTraces(true));
