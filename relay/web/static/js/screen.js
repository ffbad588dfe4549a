// Screen sharing over the voice connection (docs/voice.md, "Video and screen sharing"): the
// screen is a `screen` source (op 12), VP8 from WebCodecs' VideoEncoder, each frame cut into
// RTP packets of the source's SSRC; viewers choose it (op 15), put frames back together and
// decode them with VideoDecoder onto a canvas. A viewer that lacks a key frame asks for one
// with an RTCP picture loss indication, which the server passes to the sender only.
//
// The payload of each packet (our own framing; the server never looks inside): one byte of
// flags (1: first piece of a frame, 2: last piece, 4: key frame), then the piece.

import { seal } from "./voice.js";

const VIDEO = 96;          // the RTP payload type for video (relay/voice_client.py)
const PIECE = 1100;        // bytes of a frame per packet, well under voice_max_packet_bytes
const FPS = 10;
const BITRATE = 800_000;   // bits/s: well under voice_max_bytes_per_s with the audio
const KEY_EVERY = 100;     // frames between key frames, besides those asked for
const FIRST = 1, LAST = 2, KEY = 4;

// A picture loss indication: the 8-byte RTCP header (V=2, FMT 1, PT 206, length 2, my SSRC) in
// clear, the media SSRC sealed.
export function pli(key, counter, mySsrc, mediaSsrc) {
  const header = new Uint8Array(8);
  const v = new DataView(header.buffer);
  header[0] = 0x81; header[1] = 206; v.setUint16(2, 2); v.setUint32(4, mySsrc);
  const body = new Uint8Array(4);
  new DataView(body.buffer).setUint32(0, mediaSsrc);
  return seal(key, counter, header, body);
}

export class ScreenSender {
  constructor(conn) {
    this.conn = conn;
    this.ssrc = null;
    this.sequence = 0;
    this.frames = 0;
    this.wantKey = true;
    this.stats = { frames: 0, packets: 0, keyRequests: 0 };
  }

  async start() {
    this.stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: FPS, width: { max: 1280 }, height: { max: 720 } }, audio: false });
    const track = this.stream.getVideoTracks()[0];
    track.addEventListener("ended", () => this.onEnded?.());
    this.conn.send(12, { sources: [{ type: "screen" }] });
    this.encoder = new VideoEncoder({ output: (chunk) => this.packets(chunk), error: (e) => this.onError?.(e) });
    this.reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
    this.pump();
  }

  async pump() {
    let last = -Infinity;
    for (;;) {
      const { value: frame, done } = await this.reader.read().catch(() => ({ done: true }));
      if (done) return;
      const skip = this.encoder.state === "closed" || !this.ssrc || frame.timestamp - last < 1e6 / FPS || this.encoder.encodeQueueSize > 2;
      if (!skip) {
        if (this.encoder.state === "unconfigured") {
          // Even sizes: VP8 encoders want them.
          this.encoder.configure({ codec: "vp8", width: frame.displayWidth & ~1, height: frame.displayHeight & ~1, bitrate: BITRATE, framerate: FPS, latencyMode: "realtime" });
        }
        const keyFrame = this.wantKey || this.frames % KEY_EVERY === 0;
        this.wantKey = false;
        this.encoder.encode(frame, { keyFrame });
        this.frames += 1;
        last = frame.timestamp;
      }
      frame.close();
    }
  }

  packets(chunk) {
    const data = new Uint8Array(chunk.byteLength);
    chunk.copyTo(data);
    const timestamp = Math.floor((chunk.timestamp * 90) / 1000) >>> 0;  // 90 kHz
    for (let at = 0; at < data.length || at === 0; at += PIECE) {
      const end = Math.min(at + PIECE, data.length);
      const flags = (at === 0 ? FIRST : 0) | (end === data.length ? LAST : 0) | (chunk.type === "key" ? KEY : 0);
      const payload = new Uint8Array(1 + end - at);
      payload[0] = flags;
      payload.set(data.subarray(at, end), 1);
      this.sequence = (this.sequence + 1) & 0xffff;
      this.conn.sendRtp(VIDEO, this.sequence, timestamp, this.ssrc, payload, Boolean(flags & LAST));
      this.stats.packets += 1;
      if (end === data.length) break;
    }
    this.stats.frames += 1;
  }

  stop() {
    this.reader?.cancel().catch(() => {});
    this.stream?.getTracks().forEach((t) => t.stop());
    if (this.encoder && this.encoder.state !== "closed") this.encoder.close();
    this.conn.send(12, { sources: [] });
  }
}

// One watched source: frames put together by timestamp, decoded onto `canvas`.
export class ScreenViewer {
  constructor(conn, ssrc, canvas) {
    this.conn = conn;
    this.ssrc = ssrc;
    this.canvas = canvas;
    this.pieces = null;   // {timestamp, parts, next, key}
    this.haveKey = false;
    this.askedAt = 0;
    this.stats = { frames: 0 };
    this.decoder = new VideoDecoder({ output: (frame) => this.draw(frame), error: () => { this.haveKey = false; this.reset(); } });
    this.decoder.configure({ codec: "vp8" });
    conn.send(15, { ssrcs: [ssrc] });
    this.askKey();
  }

  reset() {
    if (this.decoder.state === "closed") return;
    this.decoder.reset();
    this.decoder.configure({ codec: "vp8" });
  }

  askKey() {
    const now = performance.now();
    if (now - this.askedAt < 1000) return;
    this.askedAt = now;
    this.conn.sendRaw((counter) => pli(this.conn.key, counter, this.conn.ssrc, this.ssrc));
  }

  packet(p) {
    const flags = p.payload[0];
    const piece = p.payload.subarray(1);
    if (flags & FIRST) this.pieces = { timestamp: p.timestamp, parts: [piece], next: (p.sequence + 1) & 0xffff, key: Boolean(flags & KEY) };
    else if (this.pieces && this.pieces.timestamp === p.timestamp && this.pieces.next === p.sequence) {
      this.pieces.parts.push(piece);
      this.pieces.next = (p.sequence + 1) & 0xffff;
    } else { this.pieces = null; this.askKey(); return; }  // a piece was lost: wait for a key frame
    if (!(flags & LAST)) return;
    const { parts, key, timestamp } = this.pieces;
    this.pieces = null;
    if (!key && !this.haveKey) return this.askKey();
    this.haveKey ||= key;
    const data = new Uint8Array(parts.reduce((n, x) => n + x.length, 0));
    let at = 0;
    for (const x of parts) { data.set(x, at); at += x.length; }
    if (this.decoder.state === "configured") this.decoder.decode(new EncodedVideoChunk({ type: key ? "key" : "delta", timestamp: Math.round((timestamp * 1000) / 90), data }));
  }

  draw(frame) {
    if (this.canvas.width !== frame.displayWidth) this.canvas.width = frame.displayWidth;
    if (this.canvas.height !== frame.displayHeight) this.canvas.height = frame.displayHeight;
    this.canvas.getContext("2d").drawImage(frame, 0, 0);
    frame.close();
    this.stats.frames += 1;
  }

  close() {
    if (this.decoder.state !== "closed") this.decoder.close();
    this.conn.send(15, { ssrcs: [] });
  }
}
