// The History panel: the server's event log (GET /v1/events), newest first; an entry opens to
// show its verdicts, alerts and prompt.
import { api } from "./api.js";
import { el, fmt, h, placeholder } from "./dom.js";
import { state } from "./state.js";
import { renderVerdicts } from "./verdicts.js";

function eventTime(created) {
  if (typeof created !== "number") return "";
  const date = new Date(created * 1000);
  const today = new Date().toDateString() === date.toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : date.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function firstWords(text, n = 12) {
  if (!text) return "(no response text stored)";
  const words = text.trim().split(/\s+/);
  return words.slice(0, n).join(" ") + (words.length > n ? " …" : "");
}

function eventDetail(event) {
  const verdicts = h("div", { class: "verdicts" });
  renderVerdicts(verdicts, event.verdicts);
  const lastUser = Array.isArray(event.prompt)
    ? [...event.prompt].reverse().find((m) => m && m.role === "user")
    : null;
  const alerts = (event.alerts || []).map((a) =>
    h("li", { text: `${a.probe} at token ${a.token_index}: ${fmt(a.value)} ≥ ${fmt(a.threshold)}` }),
  );
  return h(
    "div",
    { class: "event-detail" },
    verdicts,
    alerts.length ? h("ul", { class: "event-alerts" }, alerts) : null,
    lastUser ? h("p", { class: "small" }, h("span", { class: "muted", text: "Prompt: " }), String(lastUser.content)) : null,
    h("p", { class: "muted small" }, [
      `${event.n_tokens ?? "?"} tokens · ${event.model || ""}`,
      event.steering ? ` · steered ${event.steering.vector} × ${event.steering.strength}` : "",
      ` · ${event.id}`,
    ]),
  );
}

function eventRow(event) {
  const flagged = Object.entries(event.verdicts || {})
    .filter(([, v]) => v && v.flagged)
    .map(([name]) => name);
  const item = h("li", {
    class: `event${event.flagged ? " is-flagged" : ""}${event.id === state.lastEventId ? " latest" : ""}`,
    "data-event-id": event.id,
  });
  item.append(
    h(
      "button",
      {
        type: "button",
        class: "event-summary",
        "aria-expanded": "false",
        onclick: (e) => {
          const open = item.classList.toggle("open");
          e.currentTarget.setAttribute("aria-expanded", String(open));
          if (open && !item.querySelector(".event-detail")) item.append(eventDetail(event));
        },
      },
      h(
        "div",
        { class: "event-line" },
        h("span", { class: "event-time", text: eventTime(event.created) }),
        h(
          "span",
          { class: "event-flags" },
          flagged.length
            ? flagged.map((name) => h("span", { class: "chip chip-flagged", text: name }))
            : h("span", { class: "chip chip-ok", text: "ok" }),
        ),
      ),
      h("div", { class: "event-text", text: firstWords(event.response) }),
    ),
  );
  return item;
}

export async function loadEvents() {
  let events;
  try {
    events = (await api("v1/events?limit=20")).data || [];
  } catch (err) {
    el.history.replaceChildren(placeholder(`History unavailable: ${err.message}`));
    return;
  }
  el.history.replaceChildren(...(events.length ? events.map(eventRow) : [placeholder("No events yet.")]));
}

export function bindHistory() {
  el.historyRefresh.addEventListener("click", loadEvents);
}
