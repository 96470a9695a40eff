// A tiny publish/subscribe bus so modules can react to each other without importing each other
// in a cycle. Events: "probes" (the probe list changed), "select" (the colouring probe changed),
// "token-click" ({turn, token}: a generated token was clicked; see inspector.js).
const listeners = new Map();

export function on(name, fn) {
  if (!listeners.has(name)) listeners.set(name, []);
  listeners.get(name).push(fn);
}

export function emit(name, detail) {
  for (const fn of listeners.get(name) || []) fn(detail);
}
