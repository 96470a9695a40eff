// DOM helpers shared by every dashboard module: element lookup, element builders, formatting,
// the page's fixed elements and the browser-local settings store.

export const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";

// h("div", {class: "x", text: "hi", onclick: fn}, ...children): one element, no innerHTML.
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

export const fmt = (p) => (typeof p === "number" && Number.isFinite(p) ? p.toFixed(2) : "–");
export const visibleToken = (text) => text.replace(/\n/g, "↵").replace(/ /g, "·") || "∅";
export const placeholder = (text) => h("li", { class: "muted small placeholder", text });

// Settings kept in this browser's localStorage (private mode: they just don't persist).
export const store = {
  get: (key, fallback) => {
    try {
      const value = localStorage.getItem(`probewatch.${key}`);
      return value === null ? fallback : value;
    } catch {
      return fallback;
    }
  },
  set: (key, value) => {
    try {
      localStorage.setItem(`probewatch.${key}`, value);
    } catch {
      /* private mode */
    }
  },
};

// The page's fixed elements (index.html); modules are deferred, so the document is parsed.
export const el = {
  health: $("health"),
  modelName: $("model-name"),
  settings: $("settings"),
  settingsToggle: $("settings-toggle"),
  apiKey: $("api-key"),
  themeToggle: $("theme-toggle"),
  probeSelect: $("probe-select"),
  legendThreshold: $("legend-threshold"),
  legendText: $("legend-text"),
  legendHelpBody: $("legend-help-body"),
  clear: $("clear"),
  response: $("response"),
  empty: $("empty-state"),
  composer: $("composer"),
  prompt: $("prompt"),
  maxTokens: $("max-tokens"),
  temperature: $("temperature"),
  steerVector: $("steer-vector"),
  steerStrength: $("steer-strength"),
  send: $("send"),
  stop: $("stop"),
  chatError: $("chat-error"),
  progressBlock: $("progress-block"),
  progress: $("progress"),
  progressFill: document.querySelector("#progress .progress-fill"),
  progressBand: document.querySelector("#progress .progress-band"),
  progressLabel: $("progress-label"),
  progressNote: $("progress-note"),
  promptVerdicts: $("prompt-verdicts"),
  verdicts: $("verdicts"),
  traces: $("traces"),
  alerts: $("alerts"),
  alertCount: $("alert-count"),
  history: $("history"),
  historyRefresh: $("history-refresh"),
  historyFlagged: $("history-flagged"),
  historyNewer: $("history-newer"),
  historyOlder: $("history-older"),
  historyRange: $("history-range"),
  inspector: $("inspector"),
  inspectorBody: $("inspector-body"),
  inspectorClose: $("inspector-close"),
  tooltip: $("tooltip"),
};

export function showError(message) {
  el.chatError.textContent = message;
  el.chatError.hidden = false;
}

export function hideError() {
  el.chatError.hidden = true;
  el.chatError.textContent = "";
}
