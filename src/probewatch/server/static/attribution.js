// "Who wrote this token": the heads and MLPs behind a generated token's logit and behind each
// probe's score at that token, from POST /v1/attribution (direct logit attribution on the
// served model; docs/attribution.md).
import { api } from "./api.js";
import { fmt, h } from "./dom.js";
import { registerTokenView } from "./inspector.js";

function partsTable(title, entry) {
  if (entry.skipped) return h("p", { class: "muted", text: `${title}: ${entry.skipped}` });
  const rows = entry.top.map((p) =>
    h("tr", { "data-part": p.part }, h("td", { text: p.part }), h("td", { text: fmt(p.value) })),
  );
  return h(
    "div",
    { class: "attribution-block", "data-target": title },
    h("h5", { text: `${title} = ${fmt(entry.value)}` }),
    h("table", { class: "attribution-table" }, h("tbody", {}, ...rows)),
  );
}

async function render(selection, container) {
  container.append(h("p", { class: "muted", text: "attributing…" }));
  const result = await api("v1/attribution", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      messages: selection.messages,
      prefix: selection.prefix + selection.token.text,
      top: 8,
    }),
  });
  const blocks = [partsTable(`logit of ${JSON.stringify(result.token)}`, result.logit)];
  for (const [name, entry] of Object.entries(result.probes)) blocks.push(partsTable(name, entry));
  container.replaceChildren(...blocks);
}

registerTokenView({ id: "attribution", title: "Who wrote this token", render });
