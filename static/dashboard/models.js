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

subscribe("overview", {
  snapshot(data) { update(data.metrics.models); },
  frame(frame) { if (frame.metrics) update(frame.metrics.models); },
});
