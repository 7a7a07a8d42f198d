// Small formatting helpers shared by the dashboard pages (all return plain strings).
export const num = (v, digits = 0) => (v == null || Number.isNaN(Number(v)) ? "–" : Number(v).toFixed(digits));
export const usd = (v, digits = 6) => (v == null ? "–" : `$${Number(v).toFixed(digits)}`);
export const pct = (v) => (v == null ? "–" : `${(Number(v) * 100).toFixed(1)}%`);
export const ms = (v) => (v == null ? "–" : `${Math.round(Number(v))} ms`);
export const time = (epochMs) => (epochMs ? new Date(epochMs).toLocaleTimeString() : "");
export function age(epochMs, now = Date.now()) {
  if (!epochMs) return "–";
  const s = Math.max(0, Math.round((now - epochMs) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
// Status words carry the meaning; the symbol and colour only repeat it.
const SYMBOLS = { succeeded: "✔", failed: "✖", running: "…", queued: "…", healthy: "●", degraded: "▲",
  circuit_open: "✖", disabled: "○", awaiting_review: "?", cancelled: "■", pending: "…", claimed: "✎" };
export function statusText(status) {
  const label = String(status || "").replaceAll("_", " ");
  return `${SYMBOLS[status] || "•"} ${label}`;
}
export function statusCell(td, status) {
  td.textContent = statusText(status);
  td.className = `status status-${status}`;
  td.dataset.status = status || "";
  return td;
}
