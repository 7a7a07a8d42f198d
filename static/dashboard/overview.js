import { connectLive, cell } from "./live.js";

const MAX_ROWS = 25;
const counters = new Map();
const callsBody = document.querySelector("#recent-calls tbody");
const modelsBody = document.querySelector("#model-counters tbody");

function renderCounters() {
  modelsBody.replaceChildren();
  for (const [model, c] of [...counters.entries()].sort()) {
    const row = document.createElement("tr");
    row.dataset.model = model;
    cell(row, model);
    cell(row, String(c.calls), "calls");
    cell(row, String(c.tokens), "tokens");
    cell(row, c.cost_usd.toFixed(6), "cost");
    cell(row, c.calls ? (c.latency_sum_ms / c.calls).toFixed(0) : "–", "latency");
    modelsBody.appendChild(row);
  }
}

function callRow(step) {
  const row = document.createElement("tr");
  row.dataset.stepId = step.step_id;
  cell(row, step.ts ? new Date(step.ts).toLocaleTimeString() : "");
  cell(row, step.model || "");
  cell(row, step.status, `status-${step.status}`);
  cell(row, `${step.tokens_in} / ${step.tokens_out}`);
  cell(row, Number(step.cost_usd || 0).toFixed(6));
  cell(row, step.latency_ms == null ? "" : Number(step.latency_ms).toFixed(0));
  cell(row, step.status === "failed" ? step.error : step.output, "output");
  return row;
}

connectLive({
  onSnapshot(data) {
    counters.clear();
    for (const [model, c] of Object.entries(data.models)) counters.set(model, { ...c });
    renderCounters();
    callsBody.replaceChildren(...data.recent.map(callRow));
  },
  onEvent(event) {
    if (event.type !== "step.finished" || event.node_type !== "call") return;
    const c = counters.get(event.model) || { calls: 0, tokens: 0, cost_usd: 0, latency_sum_ms: 0 };
    c.calls += 1;
    c.tokens += (event.tokens_in || 0) + (event.tokens_out || 0);
    c.cost_usd += event.cost_usd || 0;
    c.latency_sum_ms += event.latency_ms || 0;
    counters.set(event.model, c);
    renderCounters();
    callsBody.prepend(callRow(event));
    while (callsBody.rows.length > MAX_ROWS) callsBody.deleteRow(-1);
  },
});
