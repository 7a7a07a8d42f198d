// One websocket to /ws/dashboard/ with reconnect and a visible connection state.
// Model output is untrusted: callers must render it with textContent, never innerHTML.
export function connectLive({ onSnapshot, onEvent }) {
  const badge = document.getElementById("connection");
  let delay = 500;
  const setState = (state, text) => { if (badge) { badge.dataset.state = state; badge.textContent = text; } };
  function open() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/dashboard/`);
    socket.onopen = () => { delay = 500; setState("open", "live"); };
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.type === "snapshot") onSnapshot(event.data); else onEvent(event);
    };
    socket.onclose = () => {
      setState("closed", "disconnected — reconnecting");
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }
  open();
}

export function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}
