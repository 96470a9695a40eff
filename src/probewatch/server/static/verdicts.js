// Verdict badges (one per probe: flagged or ok, score against threshold), for the live
// response and for History entries.
import { fmt, h } from "./dom.js";

export function renderVerdicts(container, verdicts) {
  const names = Object.keys(verdicts || {});
  if (!names.length) {
    container.replaceChildren(h("span", { class: "muted small", text: "No verdicts." }));
    return;
  }
  container.replaceChildren(
    ...names.map((name) => {
      const v = verdicts[name] || {};
      const flagged = Boolean(v.flagged);
      const where = typeof v.first_alert_token === "number" ? `, first alert at token ${v.first_alert_token}` : "";
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
    }),
  );
}
