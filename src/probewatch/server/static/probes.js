// The served probes: the list from /v1/probes (and each stream's first chunk), their
// thresholds, and which one colours the tokens.
import { api } from "./api.js";
import { emit } from "./bus.js";
import { el, h, showError, store } from "./dom.js";
import { state } from "./state.js";

export function mergeProbes(list) {
  let changed = false;
  for (const probe of list || []) {
    if (!probe || !probe.name) continue;
    const known = state.probes.find((p) => p.name === probe.name);
    if (!known) {
      state.probes.push({ ...probe });
      changed = true;
    } else if (known.threshold !== probe.threshold) {
      Object.assign(known, probe);
      changed = true;
    }
    if (typeof probe.threshold === "number") state.thresholds[probe.name] = probe.threshold;
  }
  if (changed) renderProbeSelect();
}

export function ensureProbeNames(names) {
  const missing = names.filter((n) => !state.probes.some((p) => p.name === n));
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
  if (!state.probes.some((p) => p.name === state.selected)) {
    const harm = state.probes.find((p) => p.name === "harm");
    state.selected = (harm || state.probes[0] || {}).name || null;
  }
  el.probeSelect.replaceChildren(
    ...state.probes.map((p) => h("option", { value: p.name, title: p.description || null, text: p.name })),
  );
  el.probeSelect.disabled = !state.probes.length;
  if (state.selected) el.probeSelect.value = state.selected;
  emit("probes");
}

export function selectProbe(name) {
  if (!name || name === state.selected) return;
  state.selected = name;
  store.set("probe", name);
  el.probeSelect.value = name;
  emit("select");
}

export function bindProbes() {
  el.probeSelect.addEventListener("change", () => selectProbe(el.probeSelect.value));
}
