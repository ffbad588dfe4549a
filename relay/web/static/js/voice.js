// The voice connection (docs/voice.md): `/v1/voice` with the `websocket` protocol, Opus from the
// microphone through WebCodecs, RTP packets sealed with aead_xchacha20_poly1305_rtpsize (the
// only mode the server offers; WebCrypto has no XChaCha20, so the audited @noble/ciphers does
// it), and what others say decoded and played through Web Audio.

import { xchacha20poly1305 } from "../vendor/noble-ciphers/chacha.js";

const OP = { IDENTIFY: 0, HEARTBEAT: 3, SELECT: 1, READY: 2, SESSION: 4, SPEAKING: 5, HEARTBEAT_ACK: 6, RESUME: 7, HELLO: 8, RESUMED: 9, CONNECT: 11, SOURCES: 12, DISCONNECT: 13 };
const MODE = "aead_xchacha20_poly1305_rtpsize";
const OPUS = 120;           // the RTP payload types (relay/voice_client.py)
const VIDEO = 96;
const RATE = 48_000;
const FRAME = 960;          // samples in 20 ms
const SILENT_AFTER_MS = 300; // speaking ends this long after the last loud frame
const LOUD = 0.01;          // RMS above this is voice

// The packet of one Opus frame: the 12-byte header in clear (the associated data), the sealed
// frame with its tag, then the 4-byte counter; the nonce is the counter and 20 zero bytes.
export function seal(key, counter, header, payload) {
  const tail = new Uint8Array(4);
  new DataView(tail.buffer).setUint32(0, counter >>> 0);
  const nonce = new Uint8Array(24);
  nonce.set(tail);
  const box = xchacha20poly1305(key, nonce, header).encrypt(payload);
  const out = new Uint8Array(header.length + box.length + 4);
  out.set(header); out.set(box, header.length); out.set(tail, header.length + box.length);
  return out;
}

// {ssrc, payloadType, sequence, timestamp, payload} of a received packet, or null if it does not
// open with `key`.
export function open(key, packet) {
  if (packet.length < 12 + 16 + 4 || packet[0] >> 6 !== 2) return null;
  let end = 12 + 4 * (packet[0] & 0x0f);
  const extension = packet[0] & 0x10;
  if (extension) end += 4;
  if (packet.length < end + 20) return null;
  const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  const nonce = new Uint8Array(24);
  nonce.set(packet.subarray(packet.length - 4));
  let body;
  try { body = xchacha20poly1305(key, nonce, packet.subarray(0, end)).decrypt(packet.subarray(end, packet.length - 4)); } catch { return null; }
  if (extension) body = body.subarray(4 * view.getUint16(end - 2));  // the extension's body was sealed too
  return { ssrc: view.getUint32(8), payloadType: packet[1] & 0x7f, sequence: view.getUint16(2), timestamp: view.getUint32(4), payload: body };
}

export class VoiceConnection extends EventTarget {
  // `grant`: VOICE_SERVER_UPDATE; `who`: {user_id, session_id}; `url`: the voice WebSocket.
  constructor(url, grant, who) {
    super();
    this.url = url;
    this.grant = grant;
    this.who = who;
    this.ssrcs = new Map();    // ssrc -> user id
    this.speaking = new Set(); // user ids speaking now (me included)
    this.heard = new Set();    // user ids seen speaking since joining (the tests wait on it)
    this.stats = { sent: 0, received: 0, decoded: 0, played: 0, resumed: 0 };
    this.muted = false;
    this.deafened = false;
    this.counter = 0;
    this.sequence = 0;
    this.timestamp = Math.floor(Math.random() * 2 ** 32);
    this.decoders = new Map(); // ssrc -> {decoder, next}
    this.sources = new Map();  // user id -> [{ssrc, type}]: their video sources
    this.screen = null;        // my ScreenSender (js/screen.js), while I share
    this.viewers = new Map();  // ssrc -> ScreenViewer, the sources I watch
    this.closed = false;
    this.loudUntil = 0;
  }

  emit(type, detail = {}) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  connect(resume = false) {
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.authed = false;  // until READY or RESUMED: anything else sent first closes with 4003
    this.ws = ws;
    ws.onmessage = (e) => (typeof e.data === "string" ? this.control(JSON.parse(e.data), resume) : this.media(new Uint8Array(e.data)));
    ws.onclose = (e) => this.onClose(ws, e.code);
  }

  send(op, d) {
    const early = op === OP.IDENTIFY || op === OP.RESUME || op === OP.HEARTBEAT;
    if (this.ws?.readyState === WebSocket.OPEN && (this.authed || early)) this.ws.send(JSON.stringify({ op, d }));
  }

  control({ op, d }, resume) {
    switch (op) {
      case OP.HELLO:
        clearInterval(this.beat);
        this.beat = setInterval(() => this.send(OP.HEARTBEAT, Date.now()), d.heartbeat_interval);
        if (resume) this.send(OP.RESUME, { server_id: this.grant.server_id, session_id: this.who.session_id, token: this.grant.token });
        else this.send(OP.IDENTIFY, { server_id: this.grant.server_id, user_id: this.who.user_id, session_id: this.who.session_id, token: this.grant.token });
        break;
      case OP.READY:
        this.authed = true;
        this.ssrc = d.ssrc;
        if (!d.modes.includes(MODE)) { this.emit("failed", { message: "The server offers no encryption mode this client knows." }); return this.close(); }
        this.send(OP.SELECT, { protocol: "websocket", data: { mode: MODE } });
        break;
      case OP.SESSION:
        this.key = Uint8Array.from(d.secret_key);
        this.emit("connected");
        break;
      case OP.RESUMED: this.authed = true; this.resumes = 0; this.stats.resumed += 1; this.emit("connected"); break;
      case OP.SPEAKING:
        if (d.ssrc) this.ssrcs.set(d.ssrc, d.user_id);
        if (d.speaking & 1) { this.speaking.add(d.user_id); this.heard.add(d.user_id); } else this.speaking.delete(d.user_id);
        this.emit("speaking");
        break;
      case OP.CONNECT:
        for (const c of d.clients) { this.ssrcs.set(c.ssrc, c.user_id); this.sources.set(c.user_id, c.sources || []); }
        this.emit("sources");
        break;
      case OP.SOURCES:
        this.sources.set(d.user_id, d.sources);
        if (d.user_id === this.who.user_id && this.screen) this.screen.ssrc = d.sources.find((x) => x.type === "screen")?.ssrc ?? null;
        this.emit("sources");
        break;
      case OP.DISCONNECT:
        this.speaking.delete(d.user_id);
        for (const [ssrc, user] of this.ssrcs) if (user === d.user_id) { this.ssrcs.delete(ssrc); this.dropDecoder(ssrc); }
        this.sources.delete(d.user_id);
        this.emit("speaking");
        this.emit("sources");
        break;
    }
  }

  onClose(ws, code) {
    if (ws !== this.ws || this.closed) return;
    console.info(`voice closed: ${code}`);  // as the gateway logs its closes
    clearInterval(this.beat);
    // The channel's actor restarted (4015), or the connection broke: RESUME, within the
    // server's voice_resume_grace_s, a few times. A close the server meant is final.
    const broken = code === 4015 || code === 1006 || code === 1001 || code === 1011;
    if (broken && this.key && (this.resumes = (this.resumes || 0) + 1) <= 3) {
      this.emit("resuming");
      this.retry = setTimeout(() => this.connect(true), code === 4015 ? 0 : 500 * this.resumes);
      return;
    }
    this.emit("closed", { code });
  }

  // The microphone: Web Audio at 48 kHz feeds 20 ms mono frames to the Opus encoder.
  async startMicrophone(stream) {
    this.stream = stream;
    this.ctx ??= new AudioContext({ sampleRate: RATE });
    await this.ctx.resume().catch(() => {});
    const source = this.ctx.createMediaStreamSource(stream);
    // A ScriptProcessor rather than an AudioWorklet: no extra module, and 21 ms of latency is
    // fine for talk. Its output is silence; it is connected only so the graph pulls it.
    const tap = this.ctx.createScriptProcessor(1024, 1, 1);
    this.encoder = new AudioEncoder({ output: (chunk) => this.sendFrame(chunk), error: (e) => this.emit("failed", { message: `Opus encoder: ${e.message}` }) });
    this.encoder.configure({ codec: "opus", sampleRate: RATE, numberOfChannels: 1, bitrate: 32_000 });
    let at = 0;
    tap.onaudioprocess = (e) => {
      const samples = new Float32Array(e.inputBuffer.getChannelData(0));
      let sum = 0;
      for (const s of samples) sum += s * s;
      if (Math.sqrt(sum / samples.length) > LOUD) this.loudUntil = performance.now() + SILENT_AFTER_MS;
      this.setSpeaking(!this.muted && !this.serverMuted && performance.now() < this.loudUntil);
      if (!this.speakingNow || this.encoder.state !== "configured") return;
      this.encoder.encode(new AudioData({ format: "f32-planar", sampleRate: RATE, numberOfFrames: samples.length, numberOfChannels: 1, timestamp: at, data: samples }));
      at += Math.round((samples.length / RATE) * 1e6);
    };
    source.connect(tap);
    tap.connect(this.ctx.destination);
    this.tap = tap;
  }

  setSpeaking(on) {
    if (on === Boolean(this.speakingNow) || !this.key) return;
    this.speakingNow = on;
    this.send(OP.SPEAKING, { speaking: on ? 1 : 0, delay: 0, ssrc: this.ssrc });
    if (on) this.speaking.add(this.who.user_id); else this.speaking.delete(this.who.user_id);
    this.emit("speaking");
  }

  sendFrame(chunk) {
    const payload = new Uint8Array(chunk.byteLength);
    chunk.copyTo(payload);
    this.sequence = (this.sequence + 1) & 0xffff;
    this.timestamp = (this.timestamp + FRAME) >>> 0;
    if (this.sendRtp(OPUS, this.sequence, this.timestamp, this.ssrc, payload)) this.stats.sent += 1;
  }

  sendRtp(type, sequence, timestamp, ssrc, payload, marker = false) {
    const header = new Uint8Array(12);
    const v = new DataView(header.buffer);
    header[0] = 0x80; header[1] = type | (marker ? 0x80 : 0);
    v.setUint16(2, sequence); v.setUint32(4, timestamp); v.setUint32(8, ssrc);
    return this.sendRaw((counter) => seal(this.key, counter, header, payload));
  }

  // Every packet, RTP or RTCP, takes the next value of the one counter of this connection.
  sendRaw(build) {
    if (!this.key || !this.authed || this.ws?.readyState !== WebSocket.OPEN) return false;
    this.counter += 1;
    this.ws.send(build(this.counter));
    return true;
  }

  // RTCP reaching a sender is a key frame request (PLI or FIR) for one of its sources.
  rtcp(packet) {
    const nonce = new Uint8Array(24);
    nonce.set(packet.subarray(packet.length - 4));
    try {
      const body = xchacha20poly1305(this.key, nonce, packet.subarray(0, 8)).decrypt(packet.subarray(8, packet.length - 4));
      const media = new DataView(body.buffer, body.byteOffset).getUint32(0);
      if (this.screen && media === this.screen.ssrc) { this.screen.wantKey = true; this.screen.stats.keyRequests += 1; }
    } catch { /* not for us, or forged: dropped */ }
  }

  media(packet) {
    if (!this.key) return;
    if ((packet[1] === 206 || packet[1] === 192) && packet.length >= 8 + 4 + 16 + 4) return this.rtcp(packet);
    const p = open(this.key, packet);
    if (p?.payloadType === VIDEO) return this.viewers.get(p.ssrc)?.packet(p);
    if (!p || p.payloadType !== OPUS) return;
    this.stats.received += 1;
    if (this.deafened) return;
    this.ctx ??= new AudioContext({ sampleRate: RATE });
    let d = this.decoders.get(p.ssrc);
    if (!d) {
      d = { next: 0 };
      d.decoder = new AudioDecoder({ output: (data) => this.play(d, data), error: () => this.dropDecoder(p.ssrc) });
      d.decoder.configure({ codec: "opus", sampleRate: RATE, numberOfChannels: 1 });
      this.decoders.set(p.ssrc, d);
    }
    d.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: p.timestamp * (1e6 / RATE), data: p.payload }));
  }

  // Each speaker's frames are queued back to back, a little behind now (a small jitter buffer).
  play(d, data) {
    this.stats.decoded += 1;
    const buffer = this.ctx.createBuffer(1, data.numberOfFrames, data.sampleRate);
    const samples = new Float32Array(data.numberOfFrames);
    data.copyTo(samples, { planeIndex: 0, format: "f32-planar" });
    data.close();
    buffer.copyToChannel(samples, 0);
    const node = this.ctx.createBufferSource();
    node.buffer = buffer;
    node.connect(this.ctx.destination);
    const now = this.ctx.currentTime;
    if (d.next < now || d.next > now + 0.5) d.next = now + 0.06;
    node.start(d.next);
    d.next += buffer.duration;
    this.stats.played += 1;
  }

  dropDecoder(ssrc) {
    const d = this.decoders.get(ssrc);
    if (d && d.decoder.state !== "closed") d.decoder.close();
    this.decoders.delete(ssrc);
  }

  setMuted(muted) { this.muted = muted; if (muted) this.setSpeaking(false); }
  setDeafened(deafened) { this.deafened = deafened; }

  close() {
    this.closed = true;
    clearInterval(this.beat);
    clearTimeout(this.retry);
    this.ws?.close(1000);
    this.tap?.disconnect();
    this.screen?.stop();
    for (const viewer of this.viewers.values()) viewer.close();
    if (this.encoder && this.encoder.state !== "closed") this.encoder.close();
    for (const ssrc of [...this.decoders.keys()]) this.dropDecoder(ssrc);
    this.stream?.getTracks().forEach((t) => t.stop());
    this.ctx?.close().catch(() => {});
  }
}
