// The live runs list: new runs on top (first page only), statuses and totals change in place.
// Older pages never move: they count the new runs instead, so paging and live updates do not fight.
import { subscribe, cell } from "./live.js";
import { ms, num, statusCell, time, usd } from "./format.js";

const MAX_LIVE_ROWS = 200; // past this the first page stops growing and counts instead
const PAGE_SIZE = 50;
const body = document.querySelector("#runs tbody");
const notice = document.getElementById("live-notice");
const filter = JSON.parse(document.getElementById("live-filter").textContent);
const firstPage = document.getElementById("runs-page").dataset.firstPage === "true";
const counted = new Set();

function matches(run) {
  if (filter.status && run.status !== filter.status) return false;
  if (filter.model && run.target !== filter.model) return false;
  if (filter.workflow && run.target !== `workflow/${filter.workflow}`) return false;
  if (filter.api_key && run.api_key !== filter.api_key) return false;
  return true;
}

function fill(row, run) {
  row.dataset.runId = run.run_id;
  row.dataset.created = run.created_ts || "";
  row.replaceChildren();
  cell(row, time(run.created_ts), "created");
  cell(row, run.target);
  cell(row, run.kind);
  statusCell(cell(row, ""), run.status).dataset.field = "status";
  cell(row, run.api_key);
  cell(row, `${num(run.tokens_in)} / ${num(run.tokens_out)}`);
  cell(row, usd(run.cost_usd));
  cell(row, ms(run.latency_ms));
  const link = document.createElement("a");
  link.href = `/runs/${run.run_id}/`;
  link.textContent = "details";
  row.appendChild(document.createElement("td")).appendChild(link);
  return row;
}

function rowFor(runId) { return body.querySelector(`tr[data-run-id="${CSS.escape(runId)}"]`); }

function upsert(run) {
  const row = rowFor(run.run_id);
  if (row) { fill(row, run); return; }
  if (!matches(run)) return;
  const created = run.created_ts || 0;
  const rows = [...body.querySelectorAll("tr[data-run-id]")];
  const newest = Number(rows[0]?.dataset.created || 0);
  const oldest = Number(rows[rows.length - 1]?.dataset.created || 0);
  if (firstPage && rows.length < MAX_LIVE_ROWS && (created >= oldest || rows.length < PAGE_SIZE)) {
    body.querySelector("tr.empty")?.remove();
    const before = rows.find((r) => Number(r.dataset.created || 0) < created);
    body.insertBefore(fill(document.createElement("tr"), run), before || null);
  } else if (created > newest && !counted.has(run.run_id)) {
    counted.add(run.run_id);
    notice.hidden = false;
    notice.replaceChildren(`${counted.size} newer run${counted.size === 1 ? "" : "s"} since this page loaded — `);
    const link = notice.appendChild(document.createElement("a"));
    link.href = location.pathname + location.search.replace(/([?&])before=[^&]*&?/, "$1");
    link.textContent = "show newest";
  }
}

// Server-rendered rows get the same formatting as live ones.
for (const row of body.querySelectorAll("tr[data-run-id]")) {
  const created = Number(row.dataset.created);
  row.querySelector('[data-field="created"]').textContent = time(created);
  statusCell(row.querySelector('[data-field="status"]'), row.querySelector('[data-field="status"]').dataset.status);
}

subscribe("runs", {
  snapshot(data) {
    // After a (re)connect: correct the rows shown, and add what arrived while away (oldest first).
    const runs = Object.values(data.values).sort((a, b) => (a.created_ts || 0) - (b.created_ts || 0));
    for (const run of runs) upsert(run);
  },
  frame(frame) {
    const runs = Object.entries(frame.changes).filter(([k, v]) => k.startsWith("run.") && v).map(([, v]) => v);
    runs.sort((a, b) => (a.created_ts || 0) - (b.created_ts || 0));
    for (const run of runs) upsert(run);
  },
});
