// The token inspector: click a generated token and this card shows views of it. The built-in
// view lists every probe's score and aggregate; other modules add views with
// `registerTokenView` (the extension point for per-token analyses such as attribution):
//
//   import { registerTokenView } from "./inspector.js";
//   registerTokenView({
//     id: "attribution",
//     title: "Who wrote this token",
//     render: async (selection, container) => { ... },  // may fetch from the server
//   });
//
// `selection` is {turn, token, messages, prefix}: `messages` the conversation the response
// answered (the request's messages), `token` {index, text, scores, aggregates}, `prefix` the
// response text before this token. A view renders into `container` (cleared each time); a view
// that throws shows its error in place and leaves the other views alone.
import { on } from "./bus.js";
import { el, fmt, h } from "./dom.js";
import { isPromptScope } from "./probes.js";
import { thresholdOf } from "./state.js";

const views = [];

export function registerTokenView(view) {
  if (!view || !view.id || typeof view.render !== "function") {
    throw new Error("a token view needs an id and a render(selection, container) function");
  }
  views.push(view);
}

function scoresView(selection, container) {
  const { token } = selection;
  const names = Object.keys(token.scores).filter((name) => !isPromptScope(name));
  const rows = names.map((name) => {
    const t = thresholdOf(name);
    return h(
      "tr",
      { "data-probe": name },
      h("td", { text: name }),
      h("td", { class: "num", text: fmt(token.scores[name]) }),
      h("td", { class: "num", text: fmt(token.aggregates[name]) }),
      h("td", { class: "num muted", text: typeof t === "number" ? fmt(t) : "–" }),
    );
  });
  container.append(
    h(
      "table",
      { class: "inspector-table" },
      h("thead", {}, h("tr", {}, ["probe", "score", "aggregate", "threshold"].map((c) => h("th", { text: c })))),
      h("tbody", {}, rows),
    ),
  );
}

registerTokenView({ id: "scores", title: "Probe scores", render: scoresView });

function show({ turn, token }) {
  const before = turn.tokens.slice(0, turn.tokens.indexOf(token));
  const selection = { turn, token, messages: turn.messages, prefix: before.map((t) => t.text).join("") };
  for (const span of el.response.querySelectorAll(".tok.inspected")) span.classList.remove("inspected");
  token.span.classList.add("inspected");
  el.inspector.hidden = false;
  el.inspector.scrollIntoView({ block: "nearest" });
  el.inspector.dataset.tokenIndex = String(token.index);
  el.inspectorBody.replaceChildren(
    h("div", { class: "inspector-token" }, h("code", { text: token.text }), h("span", { class: "muted small", text: ` token ${token.index}` })),
    ...views.map((view) => {
      const container = h("div", { class: "inspector-view-body" });
      const section = h("section", { class: "inspector-view", "data-view": view.id }, h("h4", { text: view.title || view.id }), container);
      Promise.resolve()
        .then(() => view.render(selection, container))
        .catch((err) => container.replaceChildren(h("p", { class: "error-line", text: err.message || String(err) })));
      return section;
    }),
  );
}

export function closeInspector() {
  el.inspector.hidden = true;
  for (const span of el.response.querySelectorAll(".tok.inspected")) span.classList.remove("inspected");
}

export function bindInspector() {
  el.inspectorClose.addEventListener("click", closeInspector);
}

on("token-click", show);
