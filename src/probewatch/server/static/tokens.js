// Generated tokens: one span each, coloured by the selected probe, with a tooltip of every
// probe's score on hover; a click hands the token to the inspector (inspector.js).
import { emit, on } from "./bus.js";
import { el, fmt, h, visibleToken } from "./dom.js";
import { colourFor } from "./legend.js";
import { ensureProbeNames, isEstimate, isPromptScope } from "./probes.js";
import { state, thresholdOf } from "./state.js";
import { setCursor } from "./traces.js";

const tokenOf = new WeakMap(); // span → {turn, token}

function paint(span) {
  const { token } = tokenOf.get(span);
  const p = token.scores[state.selected];
  span.style.backgroundColor = colourFor(p);
  const t = thresholdOf(state.selected);
  span.classList.toggle("over", typeof p === "number" && typeof t === "number" && p >= t);
}

function recolour() {
  for (const span of el.response.querySelectorAll(".tok")) paint(span);
}

export function addToken(turn, index, text, scores, aggregates) {
  const span = h("span", {
    class: "tok",
    "data-index": index,
    "data-scores": JSON.stringify(scores),
    text,
  });
  const token = { index, text, scores, aggregates, span };
  tokenOf.set(span, { turn, token });
  paint(span);
  turn.body.append(span);
  turn.tokens.push(token);
  turn.spans.set(index, span);
  ensureProbeNames(Object.keys(scores));
}

function showTooltip(span) {
  const { turn, token } = tokenOf.get(span);
  // Prompt-scope probes are left out: their per-token score is not a judgement of the token.
  const names = Object.keys(token.scores).filter((name) => !isPromptScope(name));
  const rows = names.map((name) => {
    const p = token.scores[name];
    const t = thresholdOf(name);
    const over = typeof t === "number" && p >= t;
    return h(
      "div",
      { class: `tip-row${name === state.selected ? " selected" : ""}${over ? " over" : ""}` },
      h("span", { class: "tip-name", text: isEstimate(name) ? `${name} (est.)` : name }),
      h(
        "span",
        { class: "tip-bar" },
        h("span", { class: "tip-fill", style: `width:${Math.round(p * 100)}%;background:${colourFor(Math.max(p, 0.2))}` }),
        typeof t === "number" ? h("span", { class: "tip-threshold", style: `left:${t * 100}%` }) : null,
      ),
      h("span", { class: "tip-value", text: fmt(p) }),
    );
  });
  const alerted = span.dataset.alerts ? ` · alert: ${span.dataset.alerts}` : "";
  el.tooltip.replaceChildren(
    h(
      "div",
      { class: "tip-head" },
      h("code", { text: visibleToken(span.textContent) }),
      h("span", { class: "muted", text: `token ${span.dataset.index}${alerted}` }),
    ),
    ...rows,
  );
  el.tooltip.hidden = false;
  const box = span.getBoundingClientRect();
  const tip = el.tooltip.getBoundingClientRect();
  let left = Math.min(box.left, window.innerWidth - tip.width - 8);
  let top = box.bottom + 6;
  if (top + tip.height > window.innerHeight - 8) top = box.top - tip.height - 6;
  left = Math.max(8, left);
  el.tooltip.style.left = `${left}px`;
  el.tooltip.style.top = `${Math.max(8, top)}px`;
  setCursor(turn === state.turn ? token.index : null);
}

export function hideTooltip() {
  el.tooltip.hidden = true;
  setCursor(null);
}

export function bindTokens() {
  const spanAt = (e) => e.target.closest && e.target.closest(".tok");
  el.response.addEventListener("mouseover", (e) => {
    const span = spanAt(e);
    if (span) showTooltip(span);
  });
  el.response.addEventListener("mouseout", (e) => {
    const span = spanAt(e);
    if (span && !(e.relatedTarget && span.contains(e.relatedTarget))) hideTooltip();
  });
  el.response.addEventListener("scroll", hideTooltip, { passive: true });
  el.response.addEventListener("click", (e) => {
    const span = spanAt(e);
    if (span) emit("token-click", tokenOf.get(span));
  });
}

on("select", recolour);
