// The dashboard's one state object; modules read and change it, nothing else is global.
import { store } from "./dom.js";

export const state = {
  ready: false,
  initialised: false,
  model: null,
  probes: [], // [{name, threshold, description, scope, task, metrics}] as /v1/probes lists them
  thresholds: {},
  selected: store.get("probe", null),
  messages: [], // the conversation sent to the model
  turn: null, // the assistant response being streamed or last streamed
  busy: false,
  controller: null,
  alertKeys: new Set(),
  lastEventId: null,
};

export const thresholdOf = (name) => state.thresholds[name];
