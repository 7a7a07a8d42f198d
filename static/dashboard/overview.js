import { subscribe, Mirror, cell } from "./live.js";
import { age, ms, num, pct, statusCell, time, usd } from "./format.js";
import { SeriesCharts } from "./charts.js";

const state = new Mirror({ calls: 25 });
let models = {}; // alias -> row of the latest metrics tick
const charts = new SeriesCharts({
  tokens: document.getElementById("tokens-chart"),
  cost: document.getElementById("cost-chart"),
  latency: document.getElementById("latency-chart"),
});
const statusBody = document.querySelector("#model-status tbody");
const callsBody = document.querySelector("#recent-calls tbody");
const keysBody = document.querySelector("#key-budgets tbody");
const backlog = document.getElementById("review-backlog");

function renderModels() {
  const totals = Object.fromEntries(state.prefixed("totals."));
  const aliases = [...new Set([...Object.keys(models), ...Object.keys(totals)])].sort();
  statusBody.replaceChildren(...aliases.map((alias) => {
    const m = models[alias] || {};
    const row = document.createElement("tr");
    row.dataset.model = alias;
    const th = document.createElement("th");
    th.scope = "row";
    if (m.admin_id) {
      const link = document.createElement("a");
      link.href = "/models/"; link.textContent = alias; th.appendChild(link);
    } else th.textContent = alias;
    row.appendChild(th);
    statusCell(cell(row, ""), m.status || "healthy");
    cell(row, num(m.in_flight), "in-flight");
    cell(row, num(m.req_per_s, 2), "req-s");
    cell(row, num(m.tokens_per_s, 1), "tokens-s");
    cell(row, usd(m.cost_per_min), "cost-min");
    cell(row, pct(m.error_rate), "error-rate");
    cell(row, ms(m.latency_p50_ms), "p50");
    cell(row, ms(m.latency_p95_ms), "p95");
    cell(row, num(totals[alias]?.calls ?? 0), "calls");
    return row;
  }));
}

function callRow(call) {
  const row = document.createElement("tr");
  row.dataset.stepId = call.step_id;
  cell(row, time(call.ts));
  cell(row, call.model);
  statusCell(cell(row, ""), call.status);
  cell(row, `${call.tokens_in} / ${call.tokens_out}`);
  cell(row, usd(call.cost_usd));
  cell(row, ms(call.latency_ms));
  cell(row, call.status === "failed" ? call.error : call.output, "output");
  const link = document.createElement("a");
  link.href = `/runs/${call.run_id}/`;
  link.textContent = "open";
  link.setAttribute("aria-label", `open run ${call.run_id}`);
  row.appendChild(document.createElement("td")).appendChild(link);
  return row;
}

function renderCalls() { callsBody.replaceChildren(...(state.streams.get("calls") || []).map(callRow)); }

function renderKeys() {
  keysBody.replaceChildren(...state.prefixed("key.").sort().map(([prefix, key]) => {
    const row = document.createElement("tr");
    row.dataset.key = prefix;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = `${key.name} (${key.prefix}…)`;
    row.appendChild(th);
    cell(row, usd(key.spent_usd, 4));
    cell(row, key.budget_usd == null ? "no budget" : usd(key.budget_usd, 2));
    const used = row.appendChild(document.createElement("td"));
    if (key.budget_usd) {
      const share = key.spent_usd / key.budget_usd;
      const meter = used.appendChild(document.createElement("meter"));
      meter.min = 0; meter.max = 1; meter.low = 0.7; meter.high = 0.9; meter.optimum = 0; meter.value = Math.min(share, 1);
      meter.setAttribute("aria-label", `${key.name} budget used`);
      used.append(` ${pct(share)}`);
    } else used.textContent = "–";
    return row;
  }));
}

function renderBacklog() {
  const b = state.values.get("backlog") || {};
  backlog.querySelector('[data-field="pending"]').textContent = num(b.pending);
  backlog.querySelector('[data-field="claimed"]').textContent = num(b.claimed);
  backlog.querySelector('[data-field="oldest"]').textContent = b.oldest_pending_ts ? age(b.oldest_pending_ts) : "none pending";
}
setInterval(renderBacklog, 1000);

subscribe("overview", {
  snapshot(data) {
    state.load(data);
    models = data.metrics.models;
    charts.merge(data.metrics.series, true);
    renderModels(); renderCalls(); renderKeys(); renderBacklog();
  },
  frame(frame) {
    state.apply(frame);
    if (frame.metrics) { models = frame.metrics.models; charts.merge(frame.metrics.series); }
    const changed = Object.keys(frame.changes || {});
    if (frame.metrics || changed.some((k) => k.startsWith("totals."))) renderModels();
    if (frame.appends && frame.appends.calls) renderCalls();
    if (changed.some((k) => k.startsWith("key."))) renderKeys();
    if (changed.includes("backlog")) renderBacklog();
  },
});
