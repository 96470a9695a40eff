// probewatch dashboard: chat with the model and watch its activation probes, token by token.
// Native ES modules, no build step, no network access beyond the probewatch server
// (docs/API.md). This module starts the page; each panel lives in its own module:
//   conversation.js  sending, streaming, stop       tokens.js     coloured token spans, tooltip
//   probes.js        probe list and selection       legend.js     colour scale and its legend
//   alerts.js        the Alerts panel               verdicts.js   verdict badges
//   traces.js        per-probe traces               progress.js   the thinking-progress bar
//   history.js       the event log                  inspector.js  click-a-token views (extend here)
//   settings.js      API key and theme              sse.js, api.js, dom.js, state.js, bus.js
import { api } from "./api.js";
import { bindConversation, updateButtons } from "./conversation.js";
import { el } from "./dom.js";
import { bindHistory, loadEvents } from "./history.js";
import { bindInspector } from "./inspector.js";
import "./attribution.js";
import "./legend.js";
import { bindProbes, loadProbes } from "./probes.js";
import { bindSettings } from "./settings.js";
import { sseEvents } from "./sse.js";
import { state } from "./state.js";
import { bindTokens } from "./tokens.js";
import { renderTraces } from "./traces.js";

function setHealth(kind, text) {
  el.health.className = `pill pill-${kind}`;
  el.health.textContent = text;
}

async function pollHealth() {
  let delay = 1000;
  try {
    const response = await fetch("health", { cache: "no-store" });
    if (response.ok) {
      setHealth("ready", "ready");
      state.ready = true;
      delay = 15000;
      if (!state.initialised) {
        state.initialised = true;
        initialise();
      }
    } else {
      setHealth("loading", "model loading…");
      state.ready = false;
    }
  } catch {
    setHealth("down", "server unreachable");
    state.ready = false;
    delay = 2000;
  }
  updateButtons();
  setTimeout(pollHealth, delay);
}

async function loadModel() {
  try {
    const body = await api("v1/models");
    const first = body && body.data && body.data[0];
    if (first && first.id) {
      state.model = first.id;
      el.modelName.textContent = first.id;
    }
  } catch {
    /* the model name is cosmetic; the server picks its model anyway */
  }
}

async function initialise() {
  await Promise.allSettled([loadModel(), loadProbes(), loadEvents()]);
}

// For tests and the console: the stream parser, nothing stateful.
window.probewatch = Object.freeze({ sseEvents });

bindSettings(() => {
  if (state.ready) initialise();
});
bindProbes();
bindConversation();
bindTokens();
bindHistory();
bindInspector();
renderTraces(true);
updateButtons();
pollHealth();
el.prompt.focus();
