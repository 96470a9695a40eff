// The conversation: sending a message, streaming the answer chunk by chunk into the page,
// stopping it, and starting over.
import { addAlert, resetAlerts } from "./alerts.js";
import { authHeaders, errorMessage } from "./api.js";
import { el, fmt, h, hideError, showError } from "./dom.js";
import { loadEvents } from "./history.js";
import { closeInspector } from "./inspector.js";
import { mergeProbes } from "./probes.js";
import { finishProgress, resetProgress, updateProgress } from "./progress.js";
import { sseEvents } from "./sse.js";
import { state } from "./state.js";
import { addToken } from "./tokens.js";
import { renderTraces, scheduleTraces } from "./traces.js";
import { promptVerdicts, renderVerdicts, splitVerdicts } from "./verdicts.js";

const waiting = (text) => h("span", { class: "muted small", text });

function scrollPinned() {
  const r = el.response;
  return r.scrollHeight - r.scrollTop - r.clientHeight < 80;
}

function scrollToEnd() {
  el.response.scrollTop = el.response.scrollHeight;
}

function addUserMessage(text) {
  el.empty.hidden = true;
  const scores = h("div", { class: "prompt-scores" });
  const node = h(
    "div",
    { class: "msg msg-user" },
    h("div", { class: "msg-role", text: "You" }),
    h("div", { class: "msg-body", text }),
    scores,
  );
  el.response.append(node);
  return { node, scores };
}

// The prompt verdict: on the user's message and in the Verdicts card, as soon as it is known
// (the stream's first chunk, before the first token).
function showPromptVerdict(turn, verdicts) {
  turn.promptVerdicts = { ...turn.promptVerdicts, ...verdicts };
  const names = Object.keys(turn.promptVerdicts);
  if (!names.length) return;
  renderVerdicts(el.promptVerdicts, turn.promptVerdicts);
  turn.user.scores.replaceChildren(
    h("span", { class: "muted", text: "prompt verdict" }),
    ...names.map((name) => {
      const v = turn.promptVerdicts[name];
      return h("span", {
        class: `chip ${v.flagged ? "chip-flagged" : "chip-ok"}`,
        "data-probe": name,
        title: `${name}: ${fmt(v.score)} at the last prompt token (threshold ${fmt(v.threshold)})`,
        text: `${v.flagged ? "▲" : "✓"} ${name} ${fmt(v.score)}`,
      });
    }),
  );
}

function newTurn(user, messages) {
  const body = h("div", { class: "msg-body tokens" });
  const status = h("div", { class: "msg-status muted small" });
  const node = h(
    "div",
    { class: "msg msg-assistant streaming" },
    h("div", { class: "msg-role", text: "Assistant" }),
    body,
    status,
  );
  el.response.append(node);
  return {
    node,
    body,
    status,
    user,
    messages, // what this response answers (a copy of the request's messages)
    tokens: [],
    spans: new Map(),
    text: "",
    promptVerdicts: {},
    alerts: [],
    verdicts: null,
    finish: null,
    eventId: null,
  };
}

function resetPanels() {
  resetProgress();
  el.promptVerdicts.replaceChildren(waiting("Scoring the prompt…"));
  el.verdicts.replaceChildren(waiting("Scoring…"));
  renderTraces(true);
}

function handleChunk(turn, chunk) {
  if (chunk && chunk.error) throw new Error(chunk.error.message || "server error");
  const pw = chunk.probewatch || {};
  const choice = (chunk.choices && chunk.choices[0]) || {};
  const delta = choice.delta || {};
  if (pw.probes) {
    mergeProbes(pw.probes);
    if (!turn.tokens.length) resetProgress();
  }
  // Input monitoring first: the prompt's scores and alerts come before any token.
  const promptAlerts = (pw.alerts || []).filter((a) => a && a.token_index === -1);
  if (pw.prompt_scores || promptAlerts.length) showPromptVerdict(turn, promptVerdicts(pw.prompt_scores, promptAlerts));
  const content = typeof delta.content === "string" ? delta.content : "";
  if (content) {
    turn.text += content;
    if (pw.scores) {
      const index = typeof pw.token_index === "number" ? pw.token_index : turn.tokens.length;
      addToken(turn, index, content, pw.scores, pw.aggregates || {});
    } else {
      turn.body.append(document.createTextNode(content));
    }
    scheduleTraces();
  }
  updateProgress(pw.progress);
  for (const alert of pw.alerts || []) addAlert(turn, alert);
  if (pw.verdicts) {
    turn.verdicts = pw.verdicts;
    const { prompt, response } = splitVerdicts(pw.verdicts);
    if (Object.keys(prompt).length) showPromptVerdict(turn, prompt);
    renderVerdicts(el.verdicts, response, "No response probes.");
  }
  if (choice.finish_reason) turn.finish = choice.finish_reason;
  if (pw.event_id) turn.eventId = pw.event_id;
}

function buildRequest() {
  const body = {
    model: state.model || "probewatch",
    messages: state.messages,
    stream: true,
  };
  const maxTokens = parseInt(el.maxTokens.value, 10);
  if (Number.isFinite(maxTokens) && maxTokens > 0) body.max_tokens = maxTokens;
  const temperature = parseFloat(el.temperature.value);
  if (Number.isFinite(temperature) && temperature >= 0) body.temperature = temperature;
  const vector = el.steerVector.value.trim();
  const strength = parseFloat(el.steerStrength.value);
  if (el.steerVector.closest("details").open && vector && Number.isFinite(strength)) {
    body.steering = { vector, strength };
  }
  return body;
}

export async function send() {
  const text = el.prompt.value.trim();
  if (!text || state.busy || !state.ready) return;
  hideError();
  el.prompt.value = "";
  state.messages.push({ role: "user", content: text });
  const user = addUserMessage(text);
  const turn = newTurn(user, state.messages.map((m) => ({ ...m })));
  state.turn = turn;
  resetPanels();
  scrollToEnd();
  state.busy = true;
  state.controller = new AbortController();
  updateButtons();
  let outcome = "ok";
  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...authHeaders() },
      body: JSON.stringify(buildRequest()),
      signal: state.controller.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    if (!response.body) throw new Error("the browser gave no response stream");
    for await (const data of sseEvents(response.body)) {
      if (data === "[DONE]") break;
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch {
        continue; // not JSON: ignore rather than abort the response
      }
      const pinned = scrollPinned();
      handleChunk(turn, chunk);
      if (pinned) scrollToEnd();
    }
  } catch (err) {
    outcome = err && err.name === "AbortError" ? "stopped" : "error";
    if (outcome === "error") {
      showError(err.message || String(err));
      turn.status.textContent = `Error: ${err.message || err}`;
      turn.node.classList.add("failed");
    }
  } finally {
    finishTurn(turn, outcome);
  }
}

function finishTurn(turn, outcome) {
  turn.node.classList.remove("streaming");
  state.busy = false;
  state.controller = null;
  updateButtons();
  renderTraces(true);
  if (turn.text) {
    state.messages.push({ role: "assistant", content: turn.text });
  } else if (outcome !== "ok") {
    // Nothing came back: drop the unanswered question so the conversation stays well formed.
    state.messages.pop();
  }
  const parts = [`${turn.tokens.length} tokens`];
  if (outcome === "stopped") parts.push("stopped");
  else if (turn.finish === "length") parts.push("hit max tokens");
  if (turn.alerts.length) parts.push(`${turn.alerts.length} alert${turn.alerts.length > 1 ? "s" : ""}`);
  if (outcome !== "error") turn.status.textContent = parts.join(" · ");
  if (!turn.verdicts) {
    el.verdicts.replaceChildren(waiting(outcome === "ok" ? "No verdicts returned." : `Response ${outcome}.`));
  }
  if (!Object.keys(turn.promptVerdicts).length) {
    el.promptVerdicts.replaceChildren(waiting(outcome === "ok" ? "No prompt probes." : `Response ${outcome}.`));
  }
  finishProgress(outcome === "ok" ? turn.finish : outcome);
  if (turn.eventId) state.lastEventId = turn.eventId;
  loadEvents();
  el.prompt.focus();
}

export function stop() {
  if (state.controller) state.controller.abort();
}

function clearConversation() {
  if (state.busy) stop();
  state.messages = [];
  state.turn = null;
  for (const node of el.response.querySelectorAll(".msg")) node.remove();
  el.empty.hidden = false;
  resetAlerts();
  closeInspector();
  el.promptVerdicts.replaceChildren(waiting("Judged before the first token."));
  el.verdicts.replaceChildren(waiting("Verdicts appear when a response ends."));
  resetProgress();
  renderTraces(true);
  hideError();
  el.prompt.focus();
}

export function updateButtons() {
  el.send.disabled = !state.ready || state.busy;
  el.send.title = state.ready ? "" : "waiting for the model to load";
  el.stop.hidden = !state.busy;
  el.send.hidden = state.busy;
}

export function bindConversation() {
  el.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  el.prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  el.stop.addEventListener("click", stop);
  el.clear.addEventListener("click", clearConversation);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.busy) stop();
  });
}
