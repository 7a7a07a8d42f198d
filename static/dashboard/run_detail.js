// A run's step tree as a waterfall, live while the run goes on. Prompts and outputs are text, never HTML.
import { subscribe, Mirror, cell } from "./live.js";
import { ms, num, statusCell, statusText, usd } from "./format.js";

const summary = document.getElementById("run-summary");
const runId = summary.dataset.runId;
const body = document.querySelector("#steps tbody");
const state = new Mirror();
const open = new Set(); // steps whose details the reader opened survive re-renders

function field(name, text) { summary.querySelector(`[data-field="${name}"]`).textContent = text; }

// How sure, and measured how: "prior" is the model's registry prior, not a measurement, and says so.
function confidenceMarker(step) {
  if (step.confidence == null || !step.confidence_method) return [];
  const how = step.confidence_method === "prior" ? "prior, not measured" : step.confidence_method.replace("_", "-");
  return [`confidence ${num(step.confidence, 2)} (${how})`];
}

function markerList(markers = {}) {
  const out = [];
  if (markers.cached) out.push("cached");
  if (markers.redacted) out.push("redacted");
  if (markers.retries) out.push(`retries: ${markers.retries}`);
  if (markers.fallback_from) out.push(`fallback from ${markers.fallback_from}`);
  if (markers.tokens_estimated) out.push("tokens estimated");
  if (markers.reason) out.push(`reason: ${markers.reason}`);
  return out;
}

function promptText(prompt) {
  if (!Array.isArray(prompt)) return typeof prompt === "string" ? prompt : JSON.stringify(prompt, null, 2);
  return prompt.map((m) => `${m.role ?? "?"}: ${typeof m.content === "string" ? m.content : JSON.stringify(m.content)}`).join("\n");
}

function ordered(steps) {
  const byParent = new Map();
  for (const step of steps) {
    const parent = step.parent_id && steps.some((s) => s.step_id === step.parent_id) ? step.parent_id : null;
    if (!byParent.has(parent)) byParent.set(parent, []);
    byParent.get(parent).push(step);
  }
  const out = [];
  const walk = (parent, depth) => {
    for (const step of (byParent.get(parent) || []).sort((a, b) => (a.started_ts || 0) - (b.started_ts || 0))) {
      out.push([step, depth]);
      walk(step.step_id, depth + 1);
    }
  };
  walk(null, 0);
  return out;
}

function render() {
  const steps = state.prefixed("step.").map(([, s]) => s);
  const run = state.values.get("run");
  if (run) {
    field("target", run.target);
    statusCell(summary.querySelector('[data-field="status"]'), run.status);
    field("api_key", run.api_key ? `${run.api_key}…` : "–");
    field("tokens", `${num(run.tokens_in)} / ${num(run.tokens_out)}`);
    field("cost", usd(run.cost_usd));
    field("latency", ms(run.latency_ms));
  }
  const finished = steps.filter((s) => s.status !== "running").length;
  field("progress", `${finished} of ${steps.length} step${steps.length === 1 ? "" : "s"} finished` +
    (steps.some((s) => s.status === "running") ? ", running…" : ""));
  if (!steps.length) return;
  const now = Date.now();
  const start = Math.min(...steps.map((s) => s.started_ts || now));
  const end = Math.max(...steps.map((s) => s.finished_ts || now), start + 1);
  const rows = [];
  for (const [step, depth] of ordered(steps)) {
    const row = document.createElement("tr");
    row.dataset.stepId = step.step_id;
    row.dataset.status = step.status;
    const name = row.appendChild(document.createElement("th"));
    name.scope = "row";
    name.style.paddingLeft = `${0.5 + depth * 1.2}rem`;
    name.textContent = `${step.key || step.node_id} (${step.node_type})`;
    cell(row, step.model || "–");
    statusCell(cell(row, ""), step.status);
    const offset = (step.started_ts || now) - start;
    const duration = (step.finished_ts || now) - (step.started_ts || now);
    cell(row, `+${Math.round(offset)} ms`, "offset");
    cell(row, step.finished_ts ? ms(step.latency_ms ?? duration) : `${Math.round(duration)} ms…`, "duration");
    const lane = cell(row, "", "timeline");
    const bar = lane.appendChild(document.createElement("span"));
    bar.className = `bar bar-${step.status}`;
    bar.style.left = `${(offset / (end - start)) * 100}%`;
    bar.style.width = `${Math.max(0.5, (duration / (end - start)) * 100)}%`;
    bar.title = `${statusText(step.status)}: starts +${Math.round(offset)} ms, lasts ${Math.round(duration)} ms`;
    cell(row, `${num(step.tokens_in)} / ${num(step.tokens_out)}`);
    cell(row, usd(step.cost_usd));
    const markers = cell(row, "", "markers");
    for (const text of [...confidenceMarker(step), ...markerList(step.markers)]) {
      const badge = markers.appendChild(document.createElement("span"));
      badge.className = "marker";
      badge.textContent = text;
    }
    const detailRow = document.createElement("tr");
    detailRow.className = "step-detail";
    const td = detailRow.appendChild(document.createElement("td"));
    td.colSpan = 9;
    const details = td.appendChild(document.createElement("details"));
    details.open = open.has(step.step_id);
    details.addEventListener("toggle", () => (details.open ? open.add(step.step_id) : open.delete(step.step_id)));
    details.appendChild(document.createElement("summary")).textContent = `Prompt and output of ${step.key || step.node_id}`;
    const sections = [["Prompt", promptText(step.prompt)], ["Output", step.output], ["Error", step.error]];
    for (const [label, text] of sections) {
      if (!text) continue;
      details.appendChild(document.createElement("h3")).textContent = label;
      const pre = details.appendChild(document.createElement("pre"));
      pre.className = `step-${label.toLowerCase()}`;
      pre.textContent = text;
    }
    rows.push(row, detailRow);
  }
  body.replaceChildren(...rows);
}

// Running steps grow on screen between frames.
setInterval(() => { if (state.prefixed("step.").some(([, s]) => s.status === "running")) render(); }, 250);

subscribe(`run:${runId}`, {
  snapshot(data) { state.load(data); render(); },
  frame(frame) { state.apply(frame); render(); },
});
