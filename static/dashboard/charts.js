// Live 15-minute charts on the vendored Chart.js (static/vendor/, `make vendor`): no CDN.
const PALETTE = ["#2563eb", "#d97706", "#059669", "#7c3aed", "#dc2626", "#0891b2", "#65a30d", "#db2777"];
const SPAN_S = 900;

function axisTime(value) {
  return new Date(value * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function baseOptions(stacked, yTitle) {
  return {
    animation: false, responsive: true, maintainAspectRatio: false, parsing: false, normalized: true,
    interaction: { mode: "nearest", intersect: false },
    plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
    scales: {
      x: { type: "linear", ticks: { callback: axisTime, maxTicksLimit: 8 } },
      y: { stacked, beginAtZero: true, title: { display: true, text: yTitle } },
    },
    elements: { point: { radius: 0 } },
  };
}

export class SeriesCharts {
  constructor({ tokens, cost, latency }) {
    this.points = new Map(); // t -> {alias: {tokens, cost, p50, p95}}
    this.aliases = [];
    this.charts = window.Chart ? {
      tokens: new window.Chart(tokens, { type: "line", data: { datasets: [] }, options: baseOptions(true, "tokens") }),
      cost: new window.Chart(cost, { type: "line", data: { datasets: [] }, options: baseOptions(true, "USD") }),
      latency: new window.Chart(latency, { type: "line", data: { datasets: [] }, options: baseOptions(false, "ms") }),
    } : null;
  }

  // series = {t: [epoch s], models: {alias: {tokens: [], cost: [], p50: [], p95: []}}}; later slices replace earlier.
  merge(series, replaceAll = false) {
    if (replaceAll) this.points.clear();
    series.t.forEach((t, i) => {
      const slice = {};
      for (const [alias, s] of Object.entries(series.models)) {
        slice[alias] = { tokens: s.tokens[i], cost: s.cost[i], p50: s.p50[i], p95: s.p95[i] };
      }
      this.points.set(t, { ...(this.points.get(t) || {}), ...slice });
    });
    const newest = Math.max(0, ...this.points.keys());
    for (const t of [...this.points.keys()]) if (t < newest - SPAN_S) this.points.delete(t);
    for (const alias of Object.keys(series.models)) if (!this.aliases.includes(alias)) this.aliases.push(alias);
    this.aliases.sort();
    this.render();
  }

  render() {
    if (!this.charts) return;
    const ts = [...this.points.keys()].sort((a, b) => a - b);
    const data = (alias, field) => ts.map((t) => ({ x: t, y: this.points.get(t)[alias]?.[field] ?? (field.startsWith("p") ? null : 0) }));
    const colour = (i) => PALETTE[i % PALETTE.length];
    this.charts.tokens.data.datasets = this.aliases.map((alias, i) => ({
      label: alias, data: data(alias, "tokens"), borderColor: colour(i), backgroundColor: colour(i) + "55", fill: i === 0 ? "origin" : "-1" }));
    this.charts.cost.data.datasets = this.aliases.map((alias, i) => ({
      label: alias, data: data(alias, "cost"), borderColor: colour(i), backgroundColor: colour(i) + "55", fill: i === 0 ? "origin" : "-1" }));
    this.charts.latency.data.datasets = this.aliases.flatMap((alias, i) => [
      { label: `${alias} p50`, data: data(alias, "p50"), borderColor: colour(i), spanGaps: true },
      { label: `${alias} p95`, data: data(alias, "p95"), borderColor: colour(i), borderDash: [5, 4], spanGaps: true },
    ]);
    for (const chart of Object.values(this.charts)) chart.update("none");
  }
}
