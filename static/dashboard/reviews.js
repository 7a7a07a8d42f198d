// The review queue and the review item page. Live state comes from the `reviews` topic (live.js);
// decisions go to /api/reviews/. Model output and requests are untrusted: textContent only, never innerHTML.
import { subscribe, Mirror, cell } from "./live.js";
import { age, num, statusCell, usd } from "./format.js";

const root = document.getElementById("review-page");
const csrf = root.dataset.csrf;
const mayDecide = root.dataset.mayDecide === "true";
// On the queue, decisions are offered only on items of the teams one reviews for (null: every team).
const decideTeamsData = document.getElementById("decide-teams");
const decideTeams = decideTeamsData ? JSON.parse(decideTeamsData.textContent) : null;
const mayDecideOn = (row) => mayDecide && (decideTeams === null || decideTeams.includes(row.team));

async function post(path, body = {}) {
  const response = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "application/json" },
    body: JSON.stringify(body),
  });
  let data = {};
  try { data = await response.json(); } catch { /* an empty or non-JSON error body */ }
  return { ok: response.ok, status: response.status, data };
}

function say(element, text, kind = "info") {
  element.textContent = text;
  element.dataset.kind = kind;
}

// Shortcuts stay off while the reviewer types; a focused checkbox or radio button does not count.
function typing(event) {
  const t = event.target;
  if (!(t instanceof HTMLElement)) return false;
  if (t.tagName === "INPUT") return !["checkbox", "radio", "button", "submit"].includes(t.type);
  return t.isContentEditable || ["TEXTAREA", "SELECT"].includes(t.tagName);
}

// "in 3 min 5 s" for a time still ahead; "overdue" once it passed.
function dueIn(epochMs, now = Date.now()) {
  if (!epochMs) return "–";
  return epochMs > now ? age(now - (epochMs - now), now) : "overdue";
}

function failure(result) {
  const detail = result.data && result.data.detail;
  return detail ? `${detail}` : `The request failed (HTTP ${result.status}).`;
}

// --- the queue ----------------------------------------------------------------------------------------------
function queuePage() {
  const body = document.querySelector("#review-queue tbody");
  const counts = document.getElementById("review-counts");
  const message = document.getElementById("queue-message");
  const bulk = document.getElementById("bulk-approve");
  const selectAll = document.getElementById("select-all");
  const mirror = new Mirror();
  const checked = new Set();
  let current = null; // review id of the highlighted row
  let synced = false;

  const items = () => mirror.prefixed("item.").map(([, row]) => row)
    .sort((a, b) => (a.created_ts || 0) - (b.created_ts || 0));

  function candidatesText(row) {
    return (row.candidates || []).map((c) => `${c.model} · ${num(c.confidence, 2)} · ${usd(c.cost_usd)}`).join("\n");
  }

  function fill(tr, row) {
    tr.dataset.reviewId = row.review_id;
    tr.dataset.status = row.status;
    tr.replaceChildren();
    const box = document.createElement("input");
    box.type = "checkbox";
    box.className = "select";
    box.checked = checked.has(row.review_id);
    box.disabled = !mayDecideOn(row);
    box.setAttribute("aria-label", "Select for bulk approve");
    box.addEventListener("change", () => { toggle(row.review_id, box.checked); });
    tr.appendChild(document.createElement("td")).appendChild(box);
    cell(tr, age(row.created_ts), "age").dataset.ts = row.created_ts || "";
    const reason = cell(tr, (row.reason || "").replaceAll("_", " "), "reason");
    if (row.preview) reason.appendChild(document.createElement("div")).textContent = row.preview; // the request, as text
    cell(tr, candidatesText(row), "candidates");
    const status = statusCell(cell(tr, ""), row.status);
    if (row.assignee) status.textContent += ` (${row.assignee})`;
    cell(tr, dueIn(row.due_ts), "due").dataset.ts = row.due_ts || "";
    const run = document.createElement("a");
    run.href = `/runs/${row.run_id}/`;
    run.textContent = String(row.run_id).slice(0, 8);
    tr.appendChild(document.createElement("td")).appendChild(run);
    const open = document.createElement("a");
    open.href = `/reviews/${row.review_id}/`;
    open.textContent = "open";
    open.className = "open";
    tr.appendChild(document.createElement("td")).appendChild(open);
    tr.classList.toggle("current", row.review_id === current);
    tr.setAttribute("aria-selected", String(row.review_id === current));
    return tr;
  }

  function render() {
    const rows = items();
    const ids = new Set(rows.map((r) => r.review_id));
    for (const id of [...checked]) if (!ids.has(id)) checked.delete(id);
    if (current && !ids.has(current)) current = rows.length ? rows[0].review_id : null;
    if (!rows.length) {
      body.replaceChildren();
      const tr = body.appendChild(document.createElement("tr"));
      tr.className = "empty";
      const td = cell(tr, synced ? "Nothing to review." : "Loading…");
      td.colSpan = 8;
    } else {
      const existing = new Map([...body.querySelectorAll("tr[data-review-id]")].map((tr) => [tr.dataset.reviewId, tr]));
      const ordered = rows.map((row) => fill(existing.get(row.review_id) || document.createElement("tr"), row));
      body.replaceChildren(...ordered);
    }
    renderCounts();
    renderSelection();
  }

  function renderCounts() {
    const c = mirror.values.get("counts") || {};
    counts.querySelector('[data-field="pending"]').textContent = num(c.pending);
    counts.querySelector('[data-field="claimed"]').textContent = num(c.claimed);
    counts.querySelector('[data-field="oldest"]').textContent = c.oldest_pending_ts ? age(c.oldest_pending_ts) : "none pending";
  }

  function renderSelection() {
    bulk.querySelector('[data-field="selected"]').textContent = String(checked.size);
    bulk.disabled = !mayDecide || checked.size === 0;
    const total = body.querySelectorAll("tr[data-review-id]").length;
    selectAll.checked = total > 0 && checked.size === total;
  }

  function toggle(id, on) {
    if (on) checked.add(id); else checked.delete(id);
    const box = body.querySelector(`tr[data-review-id="${CSS.escape(id)}"] input.select`);
    if (box) box.checked = on;
    renderSelection();
  }

  function move(step) {
    const rows = items();
    if (!rows.length) return;
    const index = rows.findIndex((r) => r.review_id === current);
    const next = index < 0 ? 0 : Math.min(rows.length - 1, Math.max(0, index + step));
    current = rows[next].review_id;
    for (const tr of body.querySelectorAll("tr[data-review-id]")) {
      const on = tr.dataset.reviewId === current;
      tr.classList.toggle("current", on);
      tr.setAttribute("aria-selected", String(on));
      if (on) tr.scrollIntoView({ block: "nearest" });
    }
  }

  async function approve(id) {
    const result = await post(`/api/reviews/${id}/approve/`);
    say(message, result.ok ? "Approved." : failure(result), result.ok ? "info" : "error");
  }

  selectAll.addEventListener("change", () => {
    for (const row of items()) if (mayDecideOn(row)) toggle(row.review_id, selectAll.checked);
  });

  bulk.addEventListener("click", async () => {
    const ids = [...checked];
    if (!ids.length) return;
    bulk.disabled = true;
    const result = await post("/api/reviews/bulk-approve/", { ids });
    if (!result.ok) { say(message, failure(result), "error"); renderSelection(); return; }
    for (const id of result.data.approved) checked.delete(id);
    const refused = result.data.refused || [];
    say(message, `Approved ${result.data.approved.length}.` +
      (refused.length ? ` Not approved: ${refused.map((r) => r.detail).join("; ")}` : ""), refused.length ? "error" : "info");
    renderSelection();
  });

  document.addEventListener("keydown", (event) => {
    if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "j") move(1);
    else if (event.key === "k") move(-1);
    else if (event.key === "x" && current && mayDecideOn(mirror.values.get(`item.${current}`) || {})) {
      toggle(current, !checked.has(current));
    }
    else if (event.key === "Enter" && current) location.href = `/reviews/${current}/`;
    else if (event.key === "a" && current && mayDecideOn(mirror.values.get(`item.${current}`) || {})) approve(current);
    else if (event.key === "e" && current) location.href = `/reviews/${current}/#edit`;
    else if (event.key === "r" && current) location.href = `/reviews/${current}/#reject`;
    else return;
    event.preventDefault();
  });

  // Ages and due times move on their own.
  setInterval(() => {
    for (const td of body.querySelectorAll("td.age")) td.textContent = age(Number(td.dataset.ts));
    for (const td of body.querySelectorAll("td.due")) td.textContent = dueIn(Number(td.dataset.ts));
    renderCounts();
  }, 1000);

  for (const td of document.querySelectorAll("#recently-decided td[data-ts]")) {
    const ts = Number(td.dataset.ts);
    td.textContent = ts ? new Date(ts).toLocaleString() : "–";
  }

  subscribe("reviews", {
    snapshot(data) { mirror.load(data); synced = true; render(); },
    frame(frame) { mirror.apply(frame); render(); },
  });
}

// --- word diff of an edit against the candidate it started from ------------------------------------------
function tokens(text) { return text.split(/(\s+)/).filter((t) => t !== ""); }

export function diff(before, after) {
  let a = tokens(before), b = tokens(after);
  if (a.length * b.length > 4_000_000) { a = before.split(/(?<=\n)/); b = after.split(/(?<=\n)/); } // long texts: by line
  // Common prefix and suffix first: most edits touch a small part.
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start += 1;
  let endA = a.length, endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA -= 1; endB -= 1; }
  const midA = a.slice(start, endA), midB = b.slice(start, endB);
  const n = midA.length, m = midB.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i -= 1) {
    for (let j = m - 1; j >= 0; j -= 1) {
      lcs[i][j] = midA[i] === midB[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  // A run of changes reads as one deletion then one insertion, not word-by-word alternation.
  const parts = [];
  let removed = "", added = "";
  const flush = () => {
    if (removed) parts.push({ kind: "del", text: removed });
    if (added) parts.push({ kind: "ins", text: added });
    removed = ""; added = "";
  };
  const push = (kind, text) => {
    if (kind === "del") { removed += text; return; }
    if (kind === "ins") { added += text; return; }
    // Whitespace common to both sides inside a change belongs to the change, so it stays one piece.
    if ((removed || added) && /^\s+$/.test(text)) { removed += text; added += text; return; }
    flush();
    const last = parts[parts.length - 1];
    if (last && last.kind === "same") last.text += text; else parts.push({ kind, text });
  };
  if (start) push("same", a.slice(0, start).join(""));
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (midA[i] === midB[j]) { push("same", midA[i]); i += 1; j += 1; }
    else if (lcs[i + 1][j] >= lcs[i][j + 1]) { push("del", midA[i]); i += 1; }
    else { push("ins", midB[j]); j += 1; }
  }
  while (i < n) { push("del", midA[i]); i += 1; }
  while (j < m) { push("ins", midB[j]); j += 1; }
  if (endA < a.length) push("same", a.slice(endA).join(""));
  flush();
  return parts;
}

function renderDiff(container, parts) {
  container.replaceChildren();
  for (const part of parts) {
    const tag = part.kind === "ins" ? "ins" : part.kind === "del" ? "del" : "span";
    const el = document.createElement(tag);
    el.textContent = part.text;
    container.appendChild(el);
  }
  if (!parts.some((p) => p.kind !== "same")) {
    const note = document.createElement("em");
    note.textContent = " (no changes yet)";
    container.appendChild(note);
  }
}

// --- one item -------------------------------------------------------------------------------------------------
function detailPage() {
  const data = JSON.parse(document.getElementById("review-data").textContent);
  const message = document.getElementById("review-message");
  const actions = document.getElementById("actions");
  const editor = document.getElementById("editor");
  const editText = document.getElementById("edit-text");
  const diffBox = document.getElementById("edit-diff");
  const comment = document.getElementById("comment");
  const buttons = Object.fromEntries(["claim", "release", "approve", "edit", "submit-edit", "reject"]
    .map((id) => [id, document.getElementById(id)]));
  const field = (name) => document.querySelector(`[data-field="${name}"]`);
  let state = { status: data.status, assignee: data.assignee };
  let busy = false;

  const decided = () => !["pending", "claimed"].includes(state.status);
  const chosen = () => {
    const radio = document.querySelector('input[name="candidate"]:checked');
    return radio ? Number(radio.value) : data.best_index;
  };

  function showState() {
    statusCell(field("status"), state.status);
    field("assignee").textContent = state.assignee || "nobody";
    const mine = state.status === "claimed" && state.assignee === data.me;
    buttons.claim.hidden = mine;
    buttons.release.hidden = !mine;
    buttons.claim.disabled = !mayDecide || busy || mine;
    for (const name of ["approve", "edit", "reject", "submit-edit"]) {
      buttons[name].disabled = !mayDecide || busy || (state.status === "claimed" && !mine);
    }
    if (data.outputs.length === 0) buttons.approve.disabled = true;
    if (decided()) {
      actions.hidden = true;
      for (const radio of document.querySelectorAll('input[name="candidate"]')) radio.disabled = true;
    }
  }

  function showDecision(item) {
    state = { status: item.status, assignee: item.assignee };
    const box = document.getElementById("decision");
    box.hidden = false;
    statusCell(field("decision-status"), item.status);
    field("decided-by").textContent = item.decided_by || "–";
    field("decided-at").textContent = item.decided_at ? `at ${new Date(item.decided_at).toLocaleString()}` : "";
    let released = "";
    if (item.status === "edited") released = item.edited_output;
    else if (["approved", "expired"].includes(item.status) && item.chosen_index != null) {
      released = (item.candidates[item.chosen_index] || {}).output || "";
    }
    field("released").textContent = released || "(nothing released)";
    showState();
  }

  async function act(name, body = {}) {
    if (busy) return;
    busy = true;
    showState();
    const result = await post(`/api/reviews/${data.review_id}/${name}/`, body);
    busy = false;
    if (!result.ok) {
      say(message, failure(result), "error");
      if (result.status === 409 && result.data.review_status) {
        state = { status: result.data.review_status, assignee: result.data.review_status === "claimed" ? result.data.holder : state.assignee };
        if (decided()) await refresh();
      }
      showState();
      return;
    }
    const item = result.data;
    if (["claim", "release"].includes(name)) {
      state = { status: item.status, assignee: item.assignee };
      say(message, name === "claim" ? "Claimed: nobody else can decide this item now." : "Released to the queue.");
      showState();
    } else {
      say(message, `${item.status[0].toUpperCase()}${item.status.slice(1)}. The run resumes.` + (data.next ? " Press j for the next item." : ""));
      showDecision(item);
    }
  }

  async function refresh() {
    const response = await fetch(`/api/reviews/${data.review_id}/`, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) return;
    const item = await response.json();
    if (["pending", "claimed"].includes(item.status)) { state = { status: item.status, assignee: item.assignee }; showState(); }
    else showDecision(item);
  }

  function openEditor() {
    if (decided() || !mayDecide) return;
    editor.hidden = false;
    buttons["submit-edit"].hidden = false;
    const base = chosen();
    if (!editText.value) editText.value = base != null ? data.outputs[base] || "" : "";
    editText.dataset.base = base == null ? "" : String(base);
    field("diff-base").textContent = base == null ? "an empty answer" : `candidate ${base + 1}`;
    renderDiff(diffBox, diff(base == null ? "" : data.outputs[base] || "", editText.value));
    editText.focus();
  }

  function submitEdit() {
    const base = editText.dataset.base === "" ? null : Number(editText.dataset.base);
    act("edit", { output: editText.value, candidate: base, comment: comment.value });
  }

  editText.addEventListener("input", () => {
    const base = editText.dataset.base === "" ? "" : data.outputs[Number(editText.dataset.base)] || "";
    renderDiff(diffBox, diff(base, editText.value));
  });
  editText.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); submitEdit(); }
  });
  buttons.claim.addEventListener("click", () => act("claim"));
  buttons.release.addEventListener("click", () => act("release"));
  buttons.approve.addEventListener("click", () => act("approve", { candidate: chosen(), comment: comment.value }));
  buttons.edit.addEventListener("click", openEditor);
  buttons["submit-edit"].addEventListener("click", submitEdit);
  buttons.reject.addEventListener("click", () => act("reject", { comment: comment.value }));

  document.addEventListener("keydown", (event) => {
    if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    const decidable = mayDecide && !decided() && !busy;
    if (event.key === "a" && decidable && data.outputs.length) act("approve", { candidate: chosen(), comment: comment.value });
    else if (event.key === "e" && decidable) openEditor();
    else if (event.key === "r" && decidable) act("reject", { comment: comment.value });
    else if (event.key === "j" && data.next) location.href = `/reviews/${data.next}/`;
    else if (event.key === "k" && data.previous) location.href = `/reviews/${data.previous}/`;
    else return;
    event.preventDefault();
  });

  if (location.hash === "#edit") openEditor();
  if (location.hash === "#reject") comment.focus();
  showState();

  // Someone else claiming, deciding, or the item expiring shows up here at once.
  const key = `item.${data.review_id}`;
  const follow = (values) => {
    const row = values.get(key);
    if (row) { state = { status: row.status, assignee: row.assignee }; showState(); }
    else if (!decided()) refresh();
  };
  const mirror = new Mirror();
  subscribe("reviews", {
    snapshot(snapshot) { mirror.load(snapshot); follow(mirror.values); },
    frame(frame) { if (key in (frame.changes || {})) { mirror.apply(frame); follow(mirror.values); } },
  });
  // And the run it paused: its status changes once the decision lets it finish.
  subscribe(`run:${data.run_id}`, {
    snapshot(snapshot) { const run = (snapshot.values || {}).run; if (run) field("run-status").textContent = run.status; },
    frame(frame) { const run = (frame.changes || {}).run; if (run) field("run-status").textContent = run.status; },
  });
}

if (root.dataset.page === "queue") queuePage(); else if (root.dataset.page === "detail") detailPage();
