// The served probes: the list from /v1/probes (and each stream's first chunk), their
// thresholds and scopes, and which one colours the tokens.
//
// A probe's scope says what it judges: "prompt" probes (harm, eval_awareness) judge the request
// once, at its last token, so their per-token scores mean nothing and they never colour tokens;
// "response" probes judge the generated tokens. A "regression" probe (progress) is an estimate,
// shown as the progress bar, never as a colour.
import { api } from "./api.js";
import { emit } from "./bus.js";
import { el, h, showError, store } from "./dom.js";
import { state } from "./state.js";

export const probeInfo = (name) => state.probes.find((p) => p.name === name);
export const isPromptScope = (name) => (probeInfo(name) || {}).scope === "prompt";
export const isEstimate = (name) => (probeInfo(name) || {}).task === "regression";
// Probes whose per-token score may colour tokens: response scope, a yes/no judgement.
export const colourProbes = () => state.probes.filter((p) => p.scope !== "prompt" && p.task !== "regression");
export const promptProbes = () => state.probes.filter((p) => p.scope === "prompt");
export const progressProbe = () => state.probes.find((p) => p.task === "regression" && p.scope !== "prompt");

const sameProbe = (a, b) => a.threshold === b.threshold && a.scope === b.scope && a.task === b.task;

export function mergeProbes(list) {
  let changed = false;
  for (const probe of list || []) {
    if (!probe || !probe.name) continue;
    const known = probeInfo(probe.name);
    if (!known) {
      state.probes.push({ ...probe });
      changed = true;
    } else if (!sameProbe(known, probe) && (probe.scope || probe.task || probe.threshold !== undefined)) {
      Object.assign(known, probe);
      changed = true;
    }
    if (typeof probe.threshold === "number") state.thresholds[probe.name] = probe.threshold;
  }
  if (changed) renderProbeSelect();
}

export function ensureProbeNames(names) {
  const missing = names.filter((n) => !probeInfo(n));
  if (missing.length) mergeProbes(missing.map((name) => ({ name })));
}

export async function loadProbes() {
  try {
    const body = await api("v1/probes");
    mergeProbes(body.data);
    if (!state.probes.length) {
      el.probeSelect.replaceChildren(h("option", { text: "no probes loaded" }));
    }
  } catch (err) {
    el.probeSelect.replaceChildren(h("option", { text: "probes unavailable" }));
    showError(`Could not list probes: ${err.message}`);
  }
}

function renderProbeSelect() {
  const choices = colourProbes();
  if (!choices.some((p) => p.name === state.selected)) state.selected = (choices[0] || {}).name || null;
  el.probeSelect.replaceChildren(
    ...(choices.length
      ? choices.map((p) => h("option", { value: p.name, title: p.description || null, text: p.name }))
      : [h("option", { value: "", text: "no response probe" })]),
  );
  el.probeSelect.disabled = !choices.length;
  if (state.selected) el.probeSelect.value = state.selected;
  emit("probes");
}

export function selectProbe(name) {
  if (!name || name === state.selected || !colourProbes().some((p) => p.name === name)) return;
  state.selected = name;
  store.set("probe", name);
  el.probeSelect.value = name;
  emit("select");
}

export function bindProbes() {
  el.probeSelect.addEventListener("change", () => selectProbe(el.probeSelect.value));
}
