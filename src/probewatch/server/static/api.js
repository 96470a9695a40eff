// Requests to the probewatch server (docs/API.md). Paths are relative so the dashboard also
// works behind a reverse-proxy prefix.
import { el } from "./dom.js";
import { openSettings } from "./settings.js";

export function authHeaders() {
  const key = el.apiKey.value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export async function errorMessage(response) {
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

export async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...authHeaders(), ...(options.headers || {}) },
  });
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}
