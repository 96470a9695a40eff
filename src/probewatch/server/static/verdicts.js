// Verdict badges (one per probe: flagged or ok, score against threshold), for the live
// response and for History entries; prompt-scope probes' verdicts apart from the response's.
import { fmt, h } from "./dom.js";
import { isEstimate, isPromptScope, promptProbes } from "./probes.js";
import { thresholdOf } from "./state.js";

function badge(name, v) {
  const flagged = Boolean(v.flagged);
  const where =
    typeof v.first_alert_token === "number" && v.first_alert_token >= 0 ? `, first alert at token ${v.first_alert_token}` : "";
  return h(
    "span",
    {
      class: `verdict ${flagged ? "flagged" : "ok"}`,
      "data-probe": name,
      title: `${name}: ${flagged ? "flagged" : "ok"} — score ${fmt(v.score)} vs threshold ${fmt(v.threshold)}${where}`,
    },
    h("span", { class: "verdict-mark", "aria-hidden": "true", text: flagged ? "▲" : "✓" }),
    h("span", { class: "verdict-name", text: name }),
    h("span", { class: "verdict-score", text: `${fmt(v.score)} / ${fmt(v.threshold)}` }),
  );
}

export function renderVerdicts(container, verdicts, empty = "No verdicts.") {
  const names = Object.keys(verdicts || {});
  container.replaceChildren(
    ...(names.length ? names.map((name) => badge(name, verdicts[name] || {})) : [h("span", { class: "muted small", text: empty })]),
  );
}

// {prompt, response}: a verdicts object split by the probes' scope (estimates dropped).
export function splitVerdicts(verdicts) {
  const prompt = {};
  const response = {};
  for (const [name, v] of Object.entries(verdicts || {})) {
    if (isEstimate(name)) continue;
    (isPromptScope(name) ? prompt : response)[name] = v;
  }
  return { prompt, response };
}

// The prompt verdict from the first chunk's prompt scores and prompt alerts (token_index -1):
// flagged when the score is over the threshold, as the monitor decides.
export function promptVerdicts(scores, alerts) {
  const flagged = new Set((alerts || []).filter((a) => a.token_index === -1).map((a) => a.probe));
  const verdicts = {};
  for (const probe of promptProbes()) {
    const score = (scores || {})[probe.name];
    if (typeof score !== "number" && !flagged.has(probe.name)) continue;
    const threshold = thresholdOf(probe.name);
    verdicts[probe.name] = {
      score,
      threshold,
      flagged: flagged.has(probe.name) || (typeof threshold === "number" && score > threshold),
    };
  }
  return verdicts;
}
