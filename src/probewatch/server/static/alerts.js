// The Alerts panel: one line per probe that crossed its threshold, newest first; a click
// scrolls to the token that raised it.
import { el, fmt, h, placeholder, visibleToken } from "./dom.js";
import { state } from "./state.js";
import { scheduleTraces } from "./traces.js";

export function addAlert(turn, alert) {
  if (!alert || !alert.probe) return;
  const key = `${state.messages.length}:${alert.probe}:${alert.token_index}`;
  if (state.alertKeys.has(key)) return; // the final chunk repeats the response's alerts
  state.alertKeys.add(key);
  turn.alerts.push(alert);
  const span = turn.spans.get(alert.token_index);
  if (span) {
    span.classList.add("alerted");
    const probes = span.dataset.alerts ? span.dataset.alerts.split(",") : [];
    if (!probes.includes(alert.probe)) probes.push(alert.probe);
    span.dataset.alerts = probes.join(",");
  }
  const waiting = el.alerts.querySelector(".placeholder");
  if (waiting) waiting.remove();
  const tokenText = span ? ` “${span.textContent.trim() || visibleToken(span.textContent)}”` : "";
  const item = h(
    "li",
    {
      class: "alert",
      "data-probe": alert.probe,
      "data-token-index": alert.token_index,
      title: span ? "Show the token" : null,
      onclick: () => {
        if (!span) return;
        span.scrollIntoView({ block: "center", behavior: "smooth" });
        span.classList.remove("flash");
        void span.offsetWidth; // restart the animation
        span.classList.add("flash");
      },
    },
    h("span", { class: "alert-icon", "aria-hidden": "true", text: "!" }),
    h(
      "span",
      { class: "alert-text" },
      h("strong", { text: alert.probe }),
      alert.token_index === -1 ? " on the prompt: " : ` at token ${alert.token_index}${tokenText}: `,
      h("b", { text: fmt(alert.value) }),
      typeof alert.threshold === "number" ? ` ≥ ${fmt(alert.threshold)}` : "",
    ),
    h("span", { class: "alert-time muted small", text: new Date().toLocaleTimeString() }),
  );
  el.alerts.prepend(item);
  el.alertCount.textContent = String(el.alerts.querySelectorAll(".alert").length);
  el.alertCount.classList.add("hot");
  scheduleTraces();
}

export function resetAlerts() {
  state.alertKeys.clear();
  el.alerts.replaceChildren(placeholder("No alerts yet."));
  el.alertCount.textContent = "0";
  el.alertCount.classList.remove("hot");
}
