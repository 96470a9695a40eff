// The settings panel (API key) and the light/dark theme.
import { el, hideError, store } from "./dom.js";

export function openSettings(open) {
  el.settings.hidden = !open;
  el.settingsToggle.setAttribute("aria-expanded", String(open));
  if (open) el.apiKey.focus();
}

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
}

// `onKeyChange` runs when the user enters a new key (the page reloads what the key unlocks).
export function bindSettings(onKeyChange) {
  el.apiKey.value = store.get("apiKey", "");
  el.apiKey.addEventListener("input", () => store.set("apiKey", el.apiKey.value.trim()));
  el.apiKey.addEventListener("change", () => {
    hideError();
    onKeyChange();
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
}
