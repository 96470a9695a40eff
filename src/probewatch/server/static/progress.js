// The thinking-progress bar, driven by the server's regression probe.
import { el } from "./dom.js";

export function setProgress(p) {
  const known = typeof p === "number" && Number.isFinite(p);
  const pct = known ? Math.round(Math.min(Math.max(p, 0), 1) * 100) : 0;
  el.progress.setAttribute("aria-valuenow", String(pct));
  el.progress.classList.toggle("unknown", !known);
  el.progressFill.style.width = `${pct}%`;
  el.progressLabel.textContent = known ? `thinking progress ${pct}%` : "thinking progress";
}
