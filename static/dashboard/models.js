// The models page: live status and circuit changes from the overview topic's metrics ticks.
import { subscribe } from "./live.js";
import { statusCell, time } from "./format.js";

const history = document.querySelector("#circuit-history tbody");
const lastCircuit = new Map();

for (const td of document.querySelectorAll("#circuit-history .when")) td.textContent = time(Number(td.dataset.ts));

function update(models) {
  for (const [alias, m] of Object.entries(models)) {
    for (const td of document.querySelectorAll(`tr[data-model="${CSS.escape(alias)}"] .live-status`)) statusCell(td, m.status);
    const previous = lastCircuit.get(alias);
    if (previous !== undefined && previous !== m.circuit) {
      const row = document.createElement("tr");
      for (const text of [time(Date.now()), alias, m.circuit]) row.appendChild(document.createElement("td")).textContent = text;
      history.querySelector("tr.empty")?.remove();
      history.prepend(row);
    }
    lastCircuit.set(alias, m.circuit);
  }
}

// --- reliability diagrams: inline SVG from the calibrators' bins (json_script), drawn with numbers only ---
const SVG = "http://www.w3.org/2000/svg";
const SIZE = 240, PAD = { left: 34, right: 8, top: 8, bottom: 30 };
const PLOT = SIZE - PAD.left - PAD.right; // square plot: PLOT wide and PLOT high

function svg(parent, name, attributes = {}) {
  const node = parent.appendChild(document.createElementNS(SVG, name));
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  return node;
}

const px = (p) => PAD.left + p * PLOT;
const py = (p) => PAD.top + (1 - p) * PLOT;

// bins: [{lo, hi, predicted, observed, count}]; an empty bin has predicted/observed null and is not drawn.
function drawReliability(container, bins) {
  const filled = bins.filter((b) => b.count > 0 && b.predicted != null && b.observed != null);
  const chart = svg(container, "svg", { viewBox: `0 0 ${SIZE} ${SIZE}`, class: "reliability-svg", role: "img" });
  svg(chart, "title").textContent = "Reliability diagram: " + (filled.length
    ? filled.map((b) => `predicted ${b.predicted.toFixed(2)}, observed ${b.observed.toFixed(2)} (${b.count})`).join("; ")
    : "no reviewed answers in any bin");
  svg(chart, "rect", { x: px(0), y: py(1), width: PLOT, height: PLOT, class: "plot" });
  for (const tick of [0, 0.5, 1]) {
    svg(chart, "line", { x1: px(tick), y1: py(0), x2: px(tick), y2: py(1), class: "grid" });
    svg(chart, "line", { x1: px(0), y1: py(tick), x2: px(1), y2: py(tick), class: "grid" });
    svg(chart, "text", { x: px(tick), y: py(0) + 12, "text-anchor": "middle", class: "tick" }).textContent = tick;
    svg(chart, "text", { x: px(0) - 4, y: py(tick) + 3, "text-anchor": "end", class: "tick" }).textContent = tick;
  }
  svg(chart, "text", { x: px(0.5), y: SIZE - 4, "text-anchor": "middle", class: "axis" }).textContent = "predicted";
  svg(chart, "text", { x: 10, y: py(0.5), "text-anchor": "middle", class: "axis",
                       transform: `rotate(-90 10 ${py(0.5)})` }).textContent = "observed";
  svg(chart, "line", { x1: px(0), y1: py(0), x2: px(1), y2: py(1), class: "diagonal" });
  if (filled.length > 1) {
    svg(chart, "polyline", { points: filled.map((b) => `${px(b.predicted)},${py(b.observed)}`).join(" "), class: "observed" });
  }
  const most = Math.max(1, ...filled.map((b) => b.count));
  for (const b of filled) {
    const dot = svg(chart, "circle", { cx: px(b.predicted), cy: py(b.observed), r: 2.5 + 4.5 * Math.sqrt(b.count / most),
                                       class: "bin", "data-count": b.count });
    svg(dot, "title").textContent =
      `${b.lo.toFixed(1)}–${b.hi.toFixed(1)}: predicted ${b.predicted.toFixed(2)}, observed ${b.observed.toFixed(2)}, ${b.count} answers`;
  }
}

const diagrams = JSON.parse(document.getElementById("reliability-data")?.textContent || "{}");
for (const container of document.querySelectorAll(".reliability-diagram")) {
  drawReliability(container, diagrams[container.dataset.model] || []);
}

subscribe("overview", {
  snapshot(data) { update(data.metrics.models); },
  frame(frame) { if (frame.metrics) update(frame.metrics.models); },
});
