// The gateway connection (docs/gateway.md): HELLO, IDENTIFY or RESUME, heartbeats, dispatches.
// On a drop it reconnects with backoff and RESUMEs; when the session is gone (INVALID_SESSION)
// it IDENTIFYs afresh and the app reloads what it shows from READY. `status` is "connecting",
// "ready" or "reconnecting"; listeners of "status" and "dispatch" events hear of changes.

const OP = { DISPATCH: 0, HEARTBEAT: 1, IDENTIFY: 2, PRESENCE: 3, RESUME: 6, INVALID: 9, HELLO: 10, ACK: 11 };
const FATAL = new Set([4001, 4002, 4005, 4012, 4013]); // client bugs: retrying cannot help

export class Gateway extends EventTarget {
  constructor(api) {
    super();
    this.api = api;
    this.url = null;
    this.ws = null;
    this.sessionId = null;
    this.seq = null;
    this.status = "connecting";
    this.attempts = 0;
    this.stopped = false;
    this.beat = null;
    this.acked = true;
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: status }));
  }

  async start() {
    this.stopped = false;
    if (!this.url) this.url = (await this.api.call("GET", "/gateway", undefined, { auth: false })).url;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearInterval(this.beat);
    clearTimeout(this.retry);
    this.ws?.close(1000);
    this.ws = null;
  }

  connect() {
    if (this.stopped) return;
    const ws = new WebSocket(`${this.url}?encoding=json`);
    this.ws = ws;
    ws.onmessage = (e) => this.receive(ws, JSON.parse(e.data));
    ws.onclose = (e) => this.closed(ws, e.code);
  }

  send(op, d) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ op, d }));
  }

  async receive(ws, frame) {
    if (ws !== this.ws) return;
    switch (frame.op) {
      case OP.HELLO: {
        clearInterval(this.beat);
        this.acked = true;
        this.beat = setInterval(() => this.heartbeat(ws), frame.d.heartbeat_interval);
        const token = await this.api.token().catch(() => null);
        if (!token) return ws.close(4000);
        if (this.sessionId && this.seq != null) {
          this.send(OP.RESUME, { token, session_id: this.sessionId, seq: this.seq });
        } else {
          this.send(OP.IDENTIFY, { token, properties: { client: "relay-web" } });
        }
        break;
      }
      case OP.ACK: this.acked = true; break;
      case OP.INVALID: {
        this.sessionId = null;
        this.seq = null;
        const token = await this.api.token().catch(() => null);
        if (token) this.send(OP.IDENTIFY, { token, properties: { client: "relay-web" } });
        break;
      }
      case OP.DISPATCH: {
        this.seq = frame.s;
        if (frame.t === "READY") this.sessionId = frame.d.session_id;
        if (frame.t === "READY" || frame.t === "RESUMED") { this.attempts = 0; this.setStatus("ready"); }
        this.dispatchEvent(new CustomEvent("dispatch", { detail: { t: frame.t, d: frame.d } }));
        break;
      }
    }
  }

  // A heartbeat not acknowledged by the next one means a dead connection (a zombie that
  // never closed): drop it and reconnect.
  heartbeat(ws) {
    if (!this.acked) return ws.close(4000);
    this.acked = false;
    this.send(OP.HEARTBEAT, this.seq);
  }

  async closed(ws, code) {
    if (ws !== this.ws) return;
    console.info(`gateway closed: ${code}`);
    clearInterval(this.beat);
    this.ws = null;
    if (this.stopped) return;
    if (FATAL.has(code)) { this.setStatus("failed"); return; }
    if (code === 4004) {  // the token was refused: get a new one (or find we are logged out)
      this.sessionId = null;
      try { await this.api.refresh(); } catch { return; }
    }
    if (code === 4007) { this.sessionId = null; this.seq = null; }
    this.setStatus("reconnecting");
    const delay = Math.min(10_000, 250 * 2 ** this.attempts) * (0.5 + Math.random() / 2);
    this.attempts += 1;
    this.retry = setTimeout(() => this.connect(), this.attempts === 1 ? 0 : delay);
  }

  setPresence(status) { this.presence = status; this.send(OP.PRESENCE, { status }); }
}
