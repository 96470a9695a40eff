// The History panel: the server's event log (GET /v1/events), newest first, a page at a time
// (the log may hold thousands of events; the page only ever holds PAGE rows); an entry opens
// to show its verdicts, alerts and prompt.
import { api } from "./api.js";
import { el, fmt, h, placeholder } from "./dom.js";
import { state } from "./state.js";
import { renderVerdicts, splitVerdicts } from "./verdicts.js";

const PAGE = 20;
const view = { offset: 0, flaggedOnly: false, loading: 0 };

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

function verdictGroup(label, verdicts) {
  if (!Object.keys(verdicts).length) return null;
  const badges = h("div", { class: "verdicts" });
  renderVerdicts(badges, verdicts);
  return h("div", { class: "verdict-group" }, h("span", { class: "verdict-label", text: label }), badges);
}

function eventDetail(event) {
  const { prompt, response } = splitVerdicts(event.verdicts);
  const lastUser = Array.isArray(event.prompt)
    ? [...event.prompt].reverse().find((m) => m && m.role === "user")
    : null;
  const alerts = (event.alerts || []).map((a) =>
    h("li", {
      text: `${a.probe} ${a.token_index === -1 ? "on the prompt" : `at token ${a.token_index}`}: ${fmt(a.value)} ≥ ${fmt(a.threshold)}`,
    }),
  );
  return h(
    "div",
    { class: "event-detail" },
    verdictGroup("Prompt", prompt),
    verdictGroup("Response", response),
    alerts.length ? h("ul", { class: "event-alerts" }, alerts) : null,
    lastUser ? h("p", { class: "small" }, h("span", { class: "muted", text: "Prompt: " }), String(lastUser.content)) : null,
    h("p", { class: "muted small" }, [
      `${event.n_tokens ?? "?"} tokens${event.finish_reason ? ` (${event.finish_reason})` : ""} · ${event.model || ""}`,
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
          event.finish_reason === "cancelled" ? h("span", { class: "chip chip-cancelled", text: "cancelled" }) : null,
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

function renderPager(shown, more) {
  el.historyNewer.disabled = view.offset === 0;
  el.historyOlder.disabled = !more;
  el.historyRange.textContent = shown ? `${view.offset + 1}–${view.offset + shown}${more ? "" : " (oldest)"}` : "";
}

// Loads the page at `view.offset` (asking for one row more than shown, to know if there is an
// older page). A late answer to an earlier request is dropped.
export async function loadEvents() {
  const ticket = ++view.loading;
  const query = new URLSearchParams({ limit: String(PAGE + 1), offset: String(view.offset) });
  if (view.flaggedOnly) query.set("flagged", "true");
  let events;
  try {
    events = (await api(`v1/events?${query}`)).data || [];
  } catch (err) {
    if (ticket !== view.loading) return;
    el.history.replaceChildren(placeholder(`History unavailable: ${err.message}`));
    renderPager(0, false);
    return;
  }
  if (ticket !== view.loading) return;
  if (!events.length && view.offset > 0) {
    view.offset = Math.max(0, view.offset - PAGE); // the log shrank under us: step back
    loadEvents();
    return;
  }
  const rows = events.slice(0, PAGE);
  el.history.replaceChildren(...(rows.length ? rows.map(eventRow) : [placeholder(view.flaggedOnly ? "No flagged events." : "No events yet.")]));
  el.history.scrollTop = 0;
  renderPager(rows.length, events.length > PAGE);
}

function turnPage(step) {
  view.offset = Math.max(0, view.offset + step * PAGE);
  loadEvents();
}

export function bindHistory() {
  el.historyRefresh.addEventListener("click", loadEvents);
  el.historyNewer.addEventListener("click", () => turnPage(-1));
  el.historyOlder.addEventListener("click", () => turnPage(1));
  el.historyFlagged.addEventListener("change", () => {
    view.flaggedOnly = el.historyFlagged.checked;
    view.offset = 0;
    loadEvents();
  });
}
