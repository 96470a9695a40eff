// probewatch dashboard: chat with the model and watch its activation probes, token by token.
// Plain JavaScript, no build step, no network access beyond the probewatch server (docs/API.md).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG_NS = "http://www.w3.org/2000/svg";
  const store = {
    get: (key, fallback) => {
      try {
        const value = localStorage.getItem(`probewatch.${key}`);
        return value === null ? fallback : value;
      } catch {
        return fallback;
      }
    },
    set: (key, value) => {
      try {
        localStorage.setItem(`probewatch.${key}`, value);
      } catch {
        /* private mode: settings just don't persist */
      }
    },
  };

  const state = {
    ready: false,
    initialised: false,
    model: null,
    probes: [], // [{name, threshold, description}]
    thresholds: {},
    selected: store.get("probe", null),
    messages: [], // the conversation sent to the model
    turn: null, // the assistant response being streamed or last streamed
    busy: false,
    controller: null,
    alertKeys: new Set(),
    lastEventId: null,
  };

  const el = {
    health: $("health"),
    modelName: $("model-name"),
    settings: $("settings"),
    settingsToggle: $("settings-toggle"),
    apiKey: $("api-key"),
    themeToggle: $("theme-toggle"),
    probeSelect: $("probe-select"),
    legendThreshold: $("legend-threshold"),
    clear: $("clear"),
    response: $("response"),
    empty: $("empty-state"),
    composer: $("composer"),
    prompt: $("prompt"),
    maxTokens: $("max-tokens"),
    temperature: $("temperature"),
    steerVector: $("steer-vector"),
    steerStrength: $("steer-strength"),
    send: $("send"),
    stop: $("stop"),
    chatError: $("chat-error"),
    progress: $("progress"),
    progressFill: document.querySelector("#progress .progress-fill"),
    progressLabel: $("progress-label"),
    verdicts: $("verdicts"),
    traces: $("traces"),
    alerts: $("alerts"),
    alertCount: $("alert-count"),
    history: $("history"),
    historyRefresh: $("history-refresh"),
    tooltip: $("tooltip"),
  };

  // ---------------------------------------------------------------- helpers

  function h(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    return node;
  }

  const fmt = (p) => (typeof p === "number" && Number.isFinite(p) ? p.toFixed(2) : "–");
  const thresholdOf = (name) => state.thresholds[name];
  const visibleToken = (text) => text.replace(/\n/g, "↵").replace(/ /g, "·") || "∅";

  // White → amber → red on the probability scale, as a translucent background so the same
  // scale reads on the light and the dark theme.
  function colourFor(p) {
    if (typeof p !== "number" || !Number.isFinite(p) || p < 0.03) return "";
    const amber = [245, 158, 11];
    const red = [220, 38, 38];
    if (p <= 0.5) {
      return `rgba(${amber.join(",")},${((p / 0.5) ** 1.6 * 0.42).toFixed(3)})`;
    }
    const t = (p - 0.5) / 0.5;
    const mix = amber.map((a, i) => Math.round(a + (red[i] - a) * t));
    return `rgba(${mix.join(",")},${(0.42 + t * 0.4).toFixed(3)})`;
  }

  function authHeaders() {
    const key = el.apiKey.value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function errorMessage(response) {
    let message = `${response.status} ${response.statusText}`.trim();
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch {
      /* not JSON: keep the status line */
    }
    if (response.status === 401 || response.status === 403) {
      openSettings(true);
      message += " — set the API key in settings (⚙).";
    }
    return message;
  }

  // Paths are relative so the dashboard also works behind a reverse-proxy prefix.
  async function api(path, options = {}) {
    const response = await fetch(path, {
      ...options,
      headers: { ...authHeaders(), ...(options.headers || {}) },
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    return response.json();
  }

  // ------------------------------------------------------- SSE stream parser

  // One event block ("data: …" lines, maybe comments or other fields) → its data, or null.
  function eventData(block) {
    const lines = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("data:")) lines.push(line.slice(5).replace(/^ /, ""));
    }
    return lines.length ? lines.join("\n") : null;
  }

  // Yields the data of each Server-Sent Event in a fetch body. Reads arrive in arbitrary
  // pieces (an event, half an event, several events, a split UTF-8 character), so text is
  // decoded in streaming mode and buffered until a blank line ends an event.
  async function* sseEvents(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
        // A lone trailing "\r" may be the first half of "\r\n": keep it for the next read.
        let hold = "";
        if (!done && buffer.endsWith("\r")) {
          hold = "\r";
          buffer = buffer.slice(0, -1);
        }
        buffer = buffer.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const data = eventData(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (data !== null) yield data;
        }
        buffer += hold;
        if (done) {
          const data = buffer.trim() ? eventData(buffer) : null;
          if (data !== null) yield data;
          return;
        }
      }
    } finally {
      reader.releaseLock();
    }
  }

  // ------------------------------------------------------------------ health

  function setHealth(kind, text) {
    el.health.className = `pill pill-${kind}`;
    el.health.textContent = text;
  }

  async function pollHealth() {
    let delay = 1000;
    try {
      const response = await fetch("health", { cache: "no-store" });
      if (response.ok) {
        setHealth("ready", "ready");
        state.ready = true;
        delay = 15000;
        if (!state.initialised) {
          state.initialised = true;
          initialise();
        }
      } else {
        setHealth("loading", "model loading…");
        state.ready = false;
      }
    } catch {
      setHealth("down", "server unreachable");
      state.ready = false;
      delay = 2000;
    }
    updateButtons();
    setTimeout(pollHealth, delay);
  }

  async function initialise() {
    await Promise.allSettled([loadModel(), loadProbes(), loadEvents()]);
  }

  async function loadModel() {
    try {
      const body = await api("v1/models");
      const first = body && body.data && body.data[0];
      if (first && first.id) {
        state.model = first.id;
        el.modelName.textContent = first.id;
      }
    } catch {
      /* the model name is cosmetic; the server picks its model anyway */
    }
  }

  // ------------------------------------------------------------------ probes

  function mergeProbes(list) {
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

  function ensureProbeNames(names) {
    const missing = names.filter((n) => !state.probes.some((p) => p.name === n));
    if (missing.length) mergeProbes(missing.map((name) => ({ name })));
  }

  async function loadProbes() {
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
      ...state.probes.map((p) =>
        h("option", { value: p.name, title: p.description || null, text: p.name }),
      ),
    );
    el.probeSelect.disabled = !state.probes.length;
    if (state.selected) el.probeSelect.value = state.selected;
    renderLegend();
    renderTraces(true);
  }

  function selectProbe(name) {
    if (!name || name === state.selected) return;
    state.selected = name;
    store.set("probe", name);
    el.probeSelect.value = name;
    recolour();
    renderLegend();
    renderTraces(true);
  }

  function renderLegend() {
    const t = thresholdOf(state.selected);
    el.legendThreshold.hidden = typeof t !== "number";
    if (typeof t === "number") {
      el.legendThreshold.style.left = `${(t * 100).toFixed(1)}%`;
      el.legendThreshold.title = `threshold ${fmt(t)}`;
    }
  }

  // ------------------------------------------------------------------ tokens

  function paint(span) {
    const p = span._scores ? span._scores[state.selected] : undefined;
    span.style.backgroundColor = colourFor(p);
    const t = thresholdOf(state.selected);
    span.classList.toggle("over", typeof p === "number" && typeof t === "number" && p >= t);
  }

  function recolour() {
    for (const span of el.response.querySelectorAll(".tok")) paint(span);
  }

  function addToken(turn, index, text, scores, aggregates) {
    const span = h("span", {
      class: "tok",
      "data-index": index,
      "data-scores": JSON.stringify(scores),
      text,
    });
    span._scores = scores;
    span._turn = turn;
    paint(span);
    turn.body.append(span);
    turn.tokens.push({ index, text, scores, aggregates, span });
    turn.spans.set(index, span);
    ensureProbeNames(Object.keys(scores));
  }

  function showTooltip(span) {
    const scores = span._scores || {};
    const rows = Object.keys(scores).map((name) => {
      const p = scores[name];
      const t = thresholdOf(name);
      const over = typeof t === "number" && p >= t;
      return h(
        "div",
        { class: `tip-row${name === state.selected ? " selected" : ""}${over ? " over" : ""}` },
        h("span", { class: "tip-name", text: name }),
        h(
          "span",
          { class: "tip-bar" },
          h("span", { class: "tip-fill", style: `width:${Math.round(p * 100)}%;background:${colourFor(Math.max(p, 0.2))}` }),
          typeof t === "number" ? h("span", { class: "tip-threshold", style: `left:${t * 100}%` }) : null,
        ),
        h("span", { class: "tip-value", text: fmt(p) }),
      );
    });
    const alerted = span.dataset.alerts ? ` · alert: ${span.dataset.alerts}` : "";
    el.tooltip.replaceChildren(
      h(
        "div",
        { class: "tip-head" },
        h("code", { text: visibleToken(span.textContent) }),
        h("span", { class: "muted", text: `token ${span.dataset.index}${alerted}` }),
      ),
      ...rows,
    );
    el.tooltip.hidden = false;
    const box = span.getBoundingClientRect();
    const tip = el.tooltip.getBoundingClientRect();
    let left = Math.min(box.left, window.innerWidth - tip.width - 8);
    let top = box.bottom + 6;
    if (top + tip.height > window.innerHeight - 8) top = box.top - tip.height - 6;
    left = Math.max(8, left);
    el.tooltip.style.left = `${left}px`;
    el.tooltip.style.top = `${Math.max(8, top)}px`;
    setCursor(span._turn === state.turn ? Number(span.dataset.index) : null);
  }

  function hideTooltip() {
    el.tooltip.hidden = true;
    setCursor(null);
  }

  // ------------------------------------------------------------ conversation

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

  function renderPromptScores(container, scores) {
    const names = Object.keys(scores || {});
    if (!names.length) return;
    container.replaceChildren(
      h("span", { class: "muted", text: "input" }),
      ...names.map((name) => {
        const t = thresholdOf(name);
        const over = typeof t === "number" && scores[name] >= t;
        return h("span", {
          class: `chip${over ? " chip-flagged" : ""}`,
          title: `${name}: ${fmt(scores[name])} at the last prompt token${typeof t === "number" ? ` (threshold ${fmt(t)})` : ""}`,
          text: `${name} ${fmt(scores[name])}`,
        });
      }),
    );
  }

  function newTurn(user) {
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
      tokens: [],
      spans: new Map(),
      text: "",
      progress: null,
      alerts: [],
      verdicts: null,
      finish: null,
      eventId: null,
    };
  }

  function resetPanels() {
    setProgress(null);
    el.verdicts.replaceChildren(h("span", { class: "muted small", text: "Scoring…" }));
    renderTraces(true);
  }

  function setProgress(p) {
    const known = typeof p === "number" && Number.isFinite(p);
    const pct = known ? Math.round(Math.min(Math.max(p, 0), 1) * 100) : 0;
    el.progress.setAttribute("aria-valuenow", String(pct));
    el.progress.classList.toggle("unknown", !known);
    el.progressFill.style.width = `${pct}%`;
    el.progressLabel.textContent = known ? `thinking progress ${pct}%` : "thinking progress";
  }

  function handleChunk(turn, chunk) {
    if (chunk && chunk.error) throw new Error(chunk.error.message || "server error");
    const pw = chunk.probewatch || {};
    const choice = (chunk.choices && chunk.choices[0]) || {};
    const delta = choice.delta || {};
    if (pw.probes) mergeProbes(pw.probes);
    if (pw.prompt_scores) renderPromptScores(turn.user.scores, pw.prompt_scores);
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
    if (typeof pw.progress === "number") {
      turn.progress = pw.progress;
      setProgress(pw.progress);
    }
    for (const alert of pw.alerts || []) addAlert(turn, alert);
    if (pw.verdicts) {
      turn.verdicts = pw.verdicts;
      renderVerdicts(el.verdicts, pw.verdicts);
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

  async function send() {
    const text = el.prompt.value.trim();
    if (!text || state.busy || !state.ready) return;
    hideError();
    el.prompt.value = "";
    state.messages.push({ role: "user", content: text });
    const user = addUserMessage(text);
    const turn = newTurn(user);
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
      el.verdicts.replaceChildren(
        h("span", { class: "muted small", text: outcome === "ok" ? "No verdicts returned." : `Response ${outcome}.` }),
      );
    }
    if (turn.progress === null) el.progressLabel.textContent = "no progress estimate";
    if (turn.eventId) state.lastEventId = turn.eventId;
    loadEvents();
    el.prompt.focus();
  }

  function stop() {
    if (state.controller) state.controller.abort();
  }

  function clearConversation() {
    if (state.busy) stop();
    state.messages = [];
    state.turn = null;
    state.alertKeys.clear();
    for (const node of el.response.querySelectorAll(".msg")) node.remove();
    el.empty.hidden = false;
    el.alerts.replaceChildren(h("li", { class: "muted small placeholder", text: "No alerts yet." }));
    el.alertCount.textContent = "0";
    el.alertCount.classList.remove("hot");
    el.verdicts.replaceChildren(h("span", { class: "muted small", text: "Verdicts appear when a response ends." }));
    setProgress(null);
    renderTraces(true);
    hideError();
    el.prompt.focus();
  }

  function updateButtons() {
    el.send.disabled = !state.ready || state.busy;
    el.send.title = state.ready ? "" : "waiting for the model to load";
    el.stop.hidden = !state.busy;
    el.send.hidden = state.busy;
  }

  function showError(message) {
    el.chatError.textContent = message;
    el.chatError.hidden = false;
  }

  function hideError() {
    el.chatError.hidden = true;
    el.chatError.textContent = "";
  }

  // ------------------------------------------------------------------ alerts

  function addAlert(turn, alert) {
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
    const placeholder = el.alerts.querySelector(".placeholder");
    if (placeholder) placeholder.remove();
    const tokenText = span ? ` “${span.textContent.trim() || visibleToken(span.textContent)}”` : "";
    const item = h(
      "li",
      {
        class: "alert",
        "data-probe": alert.probe,
        "data-token-index": alert.token_index,
        title: "Show the token",
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
        ` at token ${alert.token_index}${tokenText}: `,
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

  // ---------------------------------------------------------------- verdicts

  function renderVerdicts(container, verdicts) {
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

  // ------------------------------------------------------------------ traces

  const W = 300;
  const H = 54;
  let traceFrame = 0;
  let traceNodes = new Map(); // probe → {wrap, score, aggregate, threshold, marks, cursor, value}

  function scheduleTraces() {
    if (!traceFrame) traceFrame = requestAnimationFrame(() => renderTraces(false));
  }

  function buildTraces() {
    traceNodes = new Map();
    const charts = state.probes.map((probe) => {
      const name = probe.name;
      const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", class: "trace-svg" });
      const band = svg("rect", { x: 0, y: 0, width: W, height: 0, class: "trace-band" });
      const threshold = svg("line", { x1: 0, x2: W, y1: 0, y2: 0, class: "trace-threshold" });
      const aggregate = svg("polyline", { points: "", class: "trace-aggregate" });
      const score = svg("polyline", { points: "", class: "trace-score" });
      const marks = svg("g", { class: "trace-marks" });
      const cursor = svg("line", { x1: 0, x2: 0, y1: 0, y2: H, class: "trace-cursor", visibility: "hidden" });
      chart.append(band, threshold, aggregate, score, marks, cursor);
      const value = h("span", { class: "trace-value", text: "–" });
      const t = thresholdOf(name);
      const wrap = h(
        "button",
        {
          type: "button",
          class: `trace${name === state.selected ? " selected" : ""}`,
          "data-probe": name,
          title: `${probe.description || name} — click to colour tokens by this probe`,
          onclick: () => selectProbe(name),
        },
        h(
          "div",
          { class: "trace-head" },
          h("span", { class: "trace-name", text: name }),
          value,
          h("span", { class: "trace-thr muted", text: typeof t === "number" ? `thr ${fmt(t)}` : "" }),
        ),
        chart,
      );
      traceNodes.set(name, { wrap, score, aggregate, threshold, band, marks, cursor, value });
      return wrap;
    });
    el.traces.replaceChildren(
      ...(charts.length ? charts : [h("span", { class: "muted small", text: "No probes loaded." })]),
    );
  }

  const yOf = (p) => (H - 2 - Math.min(Math.max(p, 0), 1) * (H - 4)).toFixed(1);

  function renderTraces(rebuild) {
    traceFrame = 0;
    if (rebuild || traceNodes.size !== state.probes.length) buildTraces();
    const tokens = state.turn ? state.turn.tokens : [];
    const span = Math.max(tokens.length - 1, 24);
    const xOf = (i) => ((i / span) * W).toFixed(1);
    const alerts = state.turn ? state.turn.alerts : [];
    for (const [name, nodes] of traceNodes) {
      const scorePts = [];
      const aggPts = [];
      tokens.forEach((tok, i) => {
        if (typeof tok.scores[name] === "number") scorePts.push(`${xOf(i)},${yOf(tok.scores[name])}`);
        if (typeof tok.aggregates[name] === "number") aggPts.push(`${xOf(i)},${yOf(tok.aggregates[name])}`);
      });
      nodes.score.setAttribute("points", scorePts.join(" "));
      nodes.aggregate.setAttribute("points", aggPts.join(" "));
      const t = thresholdOf(name);
      const hasT = typeof t === "number";
      nodes.threshold.setAttribute("visibility", hasT ? "visible" : "hidden");
      if (hasT) {
        nodes.threshold.setAttribute("y1", yOf(t));
        nodes.threshold.setAttribute("y2", yOf(t));
        nodes.band.setAttribute("height", yOf(t));
      }
      nodes.marks.replaceChildren(
        ...alerts
          .filter((a) => a.probe === name)
          .map((a) => {
            const i = tokens.findIndex((tok) => tok.index === a.token_index);
            const x = xOf(i < 0 ? a.token_index : i);
            return svg("line", { x1: x, x2: x, y1: 0, y2: H, class: "trace-alert" });
          }),
      );
      const last = tokens.length ? tokens[tokens.length - 1].scores[name] : undefined;
      nodes.value.textContent = fmt(last);
      nodes.value.classList.toggle("over", hasT && typeof last === "number" && last >= t);
      nodes.wrap.classList.toggle("selected", name === state.selected);
      nodes.wrap.classList.toggle("fired", alerts.some((a) => a.probe === name));
    }
  }

  function setCursor(index) {
    const tokens = state.turn ? state.turn.tokens : [];
    const i = index === null ? -1 : tokens.findIndex((tok) => tok.index === index);
    const span = Math.max(tokens.length - 1, 24);
    for (const nodes of traceNodes.values()) {
      if (i < 0) {
        nodes.cursor.setAttribute("visibility", "hidden");
      } else {
        const x = ((i / span) * W).toFixed(1);
        nodes.cursor.setAttribute("x1", x);
        nodes.cursor.setAttribute("x2", x);
        nodes.cursor.setAttribute("visibility", "visible");
      }
    }
  }

  // ----------------------------------------------------------------- history

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

  async function loadEvents() {
    let events;
    try {
      events = (await api("v1/events?limit=20")).data || [];
    } catch (err) {
      el.history.replaceChildren(h("li", { class: "muted small placeholder", text: `History unavailable: ${err.message}` }));
      return;
    }
    if (!events.length) {
      el.history.replaceChildren(h("li", { class: "muted small placeholder", text: "No events yet." }));
      return;
    }
    el.history.replaceChildren(
      ...events.map((event) => {
        const flagged = Object.entries(event.verdicts || {})
          .filter(([, v]) => v && v.flagged)
          .map(([name]) => name);
        const item = h(
          "li",
          {
            class: `event${event.flagged ? " is-flagged" : ""}${event.id === state.lastEventId ? " latest" : ""}`,
            "data-event-id": event.id,
          },
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
      }),
    );
  }

  // ------------------------------------------------------------ settings, UI

  function openSettings(open) {
    el.settings.hidden = !open;
    el.settingsToggle.setAttribute("aria-expanded", String(open));
    if (open) el.apiKey.focus();
  }

  function applyTheme(theme) {
    document.documentElement.dataset.theme = theme;
  }

  function bind() {
    el.apiKey.value = store.get("apiKey", "");
    el.apiKey.addEventListener("input", () => store.set("apiKey", el.apiKey.value.trim()));
    el.apiKey.addEventListener("change", () => {
      hideError();
      if (state.ready) initialise();
    });
    el.settingsToggle.addEventListener("click", () => openSettings(el.settings.hidden));

    const prefersDark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
    applyTheme(store.get("theme", prefersDark ? "dark" : "light"));
    el.themeToggle.addEventListener("click", () => {
      const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
      applyTheme(next);
      store.set("theme", next);
    });

    for (const [input, key] of [
      [el.maxTokens, "maxTokens"],
      [el.temperature, "temperature"],
      [el.steerStrength, "steerStrength"],
    ]) {
      input.value = store.get(key, input.value);
      input.addEventListener("change", () => store.set(key, input.value));
    }

    el.probeSelect.addEventListener("change", () => selectProbe(el.probeSelect.value));
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
    el.historyRefresh.addEventListener("click", loadEvents);
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && state.busy) stop();
    });

    el.response.addEventListener("mouseover", (e) => {
      const span = e.target.closest && e.target.closest(".tok");
      if (span) showTooltip(span);
    });
    el.response.addEventListener("mouseout", (e) => {
      const span = e.target.closest && e.target.closest(".tok");
      if (span && !(e.relatedTarget && span.contains(e.relatedTarget))) hideTooltip();
    });
    el.response.addEventListener("scroll", hideTooltip, { passive: true });
  }

  // For tests and the console: the stream parser, nothing stateful.
  window.probewatch = Object.freeze({ sseEvents });

  bind();
  buildTraces();
  updateButtons();
  pollHealth();
  el.prompt.focus();
})();
