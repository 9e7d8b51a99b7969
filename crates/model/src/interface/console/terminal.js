// The console's terminal: asks for a single-use ticket with the admin's token, then opens the
// terminal WebSocket with it (browsers cannot set headers on a WebSocket). Binary frames carry
// keystrokes and output; text frames carry JSON events (resize, exit, idle_timeout, error).
(function () {
  "use strict";
  const serverId = document.body.dataset.serverId;
  const status = document.getElementById("status");
  const tokenInput = document.getElementById("token");
  const button = document.getElementById("connect");
  const say = (text) => { status.textContent = text; };
  if (typeof Terminal === "undefined") {
    say("xterm.js is missing: run scripts/fetch-console-assets.sh");
    button.disabled = true;
    return;
  }
  tokenInput.value = sessionStorage.getItem("maas.token") || "";
  const term = new Terminal({ cursorBlink: true, convertEol: false, fontSize: 14 });
  term.open(document.getElementById("terminal"));
  const fit = () => {
    const el = document.getElementById("terminal");
    const cell = term._core && term._core._renderService && term._core._renderService.dimensions
      ? term._core._renderService.dimensions.css.cell : null;
    if (!cell || !cell.width || !cell.height) return;
    const cols = Math.max(2, Math.floor(el.clientWidth / cell.width));
    const rows = Math.max(2, Math.floor(el.clientHeight / cell.height));
    if (cols !== term.cols || rows !== term.rows) term.resize(cols, rows);
  };
  let socket = null;
  const encoder = new TextEncoder();
  term.onData((data) => {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
  });
  term.onResize(({ cols, rows }) => {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "resize", cols, rows }));
    }
  });
  window.addEventListener("resize", fit);

  async function connect() {
    const token = tokenInput.value.trim();
    if (!token) { say("enter an access token"); return; }
    sessionStorage.setItem("maas.token", token);
    fit();
    say("requesting a ticket…");
    let ticket;
    try {
      const response = await fetch(`/api/v1/servers/${serverId}/terminal-ticket`, {
        method: "POST",
        headers: { "authorization": `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ cols: term.cols, rows: term.rows }),
      });
      const body = await response.json();
      if (!response.ok) { say(`refused: ${body.code || response.status}`); return; }
      ticket = body;
    } catch (e) {
      say(`cannot reach the API: ${e}`);
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}${ticket.websocket_url}`);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => { say(`connected (${ticket.via})`); term.focus(); };
    socket.onmessage = (message) => {
      if (typeof message.data === "string") {
        const event = JSON.parse(message.data);
        if (event.type === "exit") say(`shell exited (${event.status})`);
        else if (event.type === "idle_timeout") say("closed after idling");
        else if (event.type === "error") term.write(`\r\n[${event.code}: ${event.message}]\r\n`);
        return;
      }
      term.write(new Uint8Array(message.data));
    };
    socket.onclose = (e) => { if (!status.textContent.startsWith("shell")) say(`disconnected (${e.code})`); };
  }
  button.addEventListener("click", connect);
  tokenInput.addEventListener("keydown", (e) => { if (e.key === "Enter") connect(); });
})();
