// The dashboard's one websocket: topics, snapshots, sequence-checked frames, reconnect with backoff.
// Protocol: dashboard/protocol.py. Model output is untrusted: render it with textContent, never innerHTML.
const topics = new Map(); // topic -> {seq, synced, handlers}
const stats = { frames: 0, gaps: 0, snapshots: 0, reconnects: 0, errors: [] };
let socket = null;
let delay = 500;
let lastMessageAt = 0;
window.podiumLive = { stats, topics };

function badge(state, text) {
  const el = document.getElementById("connection");
  if (el) { el.dataset.state = state; el.textContent = text; }
  document.body.dataset.connection = state;
}

function send(message) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

function resync(topic, entry) {
  entry.synced = false;
  send({ type: "resync", topic });
}

function onMessage(message) {
  lastMessageAt = Date.now();
  const frame = JSON.parse(message.data);
  if (frame.type === "error") { stats.errors.push(frame); console.warn("podium live:", frame.code, frame.message); return; }
  if (frame.type === "pong") return;
  const entry = topics.get(frame.topic);
  if (!entry) return;
  if (frame.type === "snapshot") {
    entry.seq = frame.seq; entry.synced = true; stats.snapshots += 1;
    entry.handlers.snapshot(frame.data, frame);
    return;
  }
  if (!entry.synced || frame.seq <= entry.seq) return; // older than our snapshot, or waiting for one
  if (frame.seq !== entry.seq + 1) { stats.gaps += 1; resync(frame.topic, entry); return; }
  entry.seq = frame.seq; stats.frames += 1;
  entry.handlers.frame(frame);
}

function open() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // The page's team filter (?team=<slug>) narrows the socket to that team too (dashboard/viewers.py).
  const team = new URLSearchParams(location.search).get("team");
  const query = team ? `?team=${encodeURIComponent(team)}` : "";
  socket = new WebSocket(`${scheme}://${location.host}/ws/dashboard/${query}`);
  socket.onopen = () => {
    delay = 500; lastMessageAt = Date.now(); badge("open", "live");
    for (const [topic, entry] of topics) { entry.synced = false; send({ type: "subscribe", topic }); }
  };
  socket.onmessage = onMessage;
  socket.onclose = (event) => {
    socket = null;
    // The server closed us because our key or our access was taken away (dashboard/protocol.py): retrying
    // cannot help, signing in again can. 4409 (our teams changed) reconnects like any other close.
    if (event.code === 4401 || event.code === 4403) { badge("closed", "access revoked — sign in again"); return; }
    badge("closed", "disconnected — reconnecting");
    stats.reconnects += 1;
    setTimeout(open, delay + Math.random() * delay * 0.3);
    delay = Math.min(delay * 2, 8000);
  };
}

// A silent half-open connection is closed (and so retried) after 30 s without any message.
setInterval(() => {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  if (Date.now() - lastMessageAt > 30000) socket.close(); else send({ type: "ping" });
}, 15000);

// subscribe(topic, {snapshot(data, frame), frame(frame)})
export function subscribe(topic, handlers) {
  topics.set(topic, { seq: 0, synced: false, handlers });
  if (!socket) { badge("connecting", "connecting…"); open(); } else send({ type: "subscribe", topic });
}

// A topic's state as the client keeps it: absolute values by key plus newest-first streams.
export class Mirror {
  constructor(limits = {}) { this.values = new Map(); this.streams = new Map(); this.limits = limits; }
  load(data) {
    this.values = new Map(Object.entries(data.values || {}));
    this.streams = new Map(Object.entries(data.streams || {}));
  }
  apply(frame) {
    for (const [key, value] of Object.entries(frame.changes || {})) {
      if (value === null) this.values.delete(key); else this.values.set(key, value);
    }
    for (const [name, items] of Object.entries(frame.appends || {})) {
      const merged = items.concat(this.streams.get(name) || []);
      this.streams.set(name, merged.slice(0, this.limits[name] || 25));
    }
  }
  prefixed(prefix) {
    const out = [];
    for (const [key, value] of this.values) if (key.startsWith(prefix)) out.push([key.slice(prefix.length), value]);
    return out;
  }
}

export function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}
