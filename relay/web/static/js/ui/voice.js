// Voice channels (docs/voice.md): join and leave through gateway op 4, who is in each channel
// (and who speaks, is muted or deafened, by themselves or by a moderator), and a panel under the
// channel list with mute, deafen and leave. The media itself is js/voice.js.

import { dialog, h, nameOf, replace, toast } from "../dom.js";
import { Store } from "../state.js";
import { P, compute, has } from "../perms.js";
import { ScreenSender, ScreenViewer } from "../screen.js";
import { VoiceConnection } from "../voice.js";

Object.assign(Store.prototype, {
  on_VOICE_STATE_UPDATE(v) {
    if (v.channel_id) this.voiceStates.set(v.user_id, v); else this.voiceStates.delete(v.user_id);
  },
});

const REFUSED = {
  missing_permission: "You may not join that voice channel.",
  voice_channel_full: "That voice channel is full.",
  too_many_voice_channels: "This server has too many voice channels in use.",
};

// Voice connection close codes a person can do something about (docs/voice.md).
const CLOSED = {
  4017: "That voice channel is full.",
  4019: "This voice channel requires end-to-end encryption, which the web client does not do yet.",
  4006: "The voice session ended: join again.",
  4009: "The voice connection timed out: join again.",
};

export class Voice {
  constructor(shell) {
    this.shell = shell;
    this.store = shell.store;
    this.app = shell.app;
    this.channelId = null;  // the voice channel I am in (or joining)
    this.selfMute = false;
    this.selfDeaf = false;
    this.conn = null;
    this.status = "";
    this.panel = h("section.voice-panel#voice-panel", { "aria-label": "Voice", hidden: true });
  }

  get stats() { return this.conn?.stats || { sent: 0, received: 0, decoded: 0, played: 0 }; }

  entry(c, label) {
    const here = [...this.store.voiceStates.values()].filter((v) => v.channel_id === c.id);
    const speaking = this.conn?.speaking || new Set();
    return h("li.voice-entry", { "data-voice-channel": c.id },
      h("button.channel.voice", { "data-channel": c.id, "aria-current": c.id === this.channelId ? "true" : null,
        title: c.id === this.channelId ? "You are here" : "Join voice", onclick: () => this.join(c) }, label),
      here.length ? h("ul.voice-members", here.map((v) => {
        const user = this.store.users.get(v.user_id) || this.store.members.get(c.server_id)?.get(v.user_id)?.user;
        const on = speaking.has(v.user_id) && c.id === this.channelId;
        const screen = c.id === this.channelId && v.user_id !== this.store.me?.id ? this.conn?.sources.get(v.user_id)?.find((x) => x.type === "screen") : null;
        return h("li.voice-member", { "data-user": v.user_id, class: on ? "speaking" : null, "aria-label": on ? `${nameOf(user)}, speaking` : nameOf(user) },
          this.canModerate(c) && v.user_id !== this.store.me?.id
            ? h("button.link.voice-name", { title: "Voice moderation", onclick: () => this.moderate(c, v, user) }, nameOf(user))
            : h("span.voice-name", nameOf(user)),
          v.self_stream ? h("span.voice-flag.live", { title: "Sharing their screen" }, "LIVE") : null,
          screen ? h("button.link.watch", { title: `Watch ${nameOf(user)}'s screen`, onclick: () => this.watch(user, screen.ssrc) }, "📺 Watch") : null,
          v.mute ? h("span.voice-flag.server-mute", { title: "Muted by a moderator" }, "🔇") : v.self_mute ? h("span.voice-flag.self-mute", { title: "Muted" }, "🎙̸") : null,
          v.deaf ? h("span.voice-flag.server-deaf", { title: "Deafened by a moderator" }, "🚫🎧") : v.self_deaf ? h("span.voice-flag.self-deaf", { title: "Deafened" }, "🎧̸") : null);
      })) : null);
  }

  join(c) {
    if (c.id === this.channelId) return;
    // WebCodecs and the microphone exist only in a secure context (HTTPS, or localhost).
    if (!window.isSecureContext) return toast("Voice needs HTTPS (or localhost): this page came over plain HTTP.");
    if (!("AudioEncoder" in window) || !("AudioDecoder" in window)) return toast("This browser cannot do voice: it lacks WebCodecs.");
    this.teardown();
    this.channelId = c.id;
    this.serverId = c.server_id;
    this.setStatus("Connecting…");
    // Asked now, within the click: the browser may want a user gesture for the prompt and audio.
    this.micAsked = navigator.mediaDevices?.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true }, video: false })
      .then((stream) => stream, (e) => {
        const message = e.name === "NotAllowedError" ? "Microphone access was refused: you can listen but not talk. Allow the microphone for this site and join again."
          : e.name === "NotFoundError" ? "No microphone was found: you can listen but not talk." : `Microphone: ${e.message}`;
        this.micError = message;
        this.selfMute = true;
        this.sendState();
        this.setStatus(message);
        return null;
      }) ?? Promise.resolve(null);
    this.sendState();
  }

  leave() {
    if (!this.channelId) return;
    this.app.gateway.send(4, { server_id: this.serverId, channel_id: null, self_mute: false, self_deaf: false });
    this.teardown();
    this.shell.drawChannels();
  }

  teardown() {
    this.unwatch();
    this.conn?.close();
    this.conn = null;
    this.channelId = null;
    this.micError = null;
    this.selfMute = false;
    this.selfDeaf = false;
    this.draw();
  }

  sendState() {
    if (!this.channelId) return;
    this.app.gateway.send(4, { server_id: this.serverId, channel_id: this.channelId, self_mute: this.selfMute, self_deaf: this.selfDeaf });
  }

  toggleMute() {
    if (this.micError && this.selfMute) return toast(this.micError);
    this.selfMute = !this.selfMute;
    if (!this.selfMute && this.selfDeaf) this.selfDeaf = false;
    this.conn?.setMuted(this.selfMute);
    this.conn?.setDeafened(this.selfDeaf);
    this.sendState();
    this.draw();
  }

  toggleDeaf() {
    this.selfDeaf = !this.selfDeaf;
    if (this.selfDeaf) this.selfMute = true;  // deafened people cannot be heard either
    else if (!this.micError) this.selfMute = false;
    this.conn?.setMuted(this.selfMute);
    this.conn?.setDeafened(this.selfDeaf);
    this.sendState();
    this.draw();
  }

  async connect(grant) {
    this.conn?.close();
    // A full URL in cluster mode (the process serving the channel), else a path on this one.
    const url = /^wss?:\/\//.test(grant.endpoint) ? grant.endpoint : this.app.gateway.url.replace(/\/v1\/gateway$/, grant.endpoint);
    const conn = new VoiceConnection(url, grant, { user_id: this.store.me.id, session_id: this.app.gateway.sessionId });
    this.conn = conn;
    conn.setMuted(this.selfMute);
    conn.setDeafened(this.selfDeaf);
    conn.serverMuted = Boolean(this.store.voiceStates.get(this.store.me.id)?.mute);
    conn.addEventListener("connected", () => { if (!this.micError) this.setStatus("Voice connected"); else this.draw(); });
    conn.addEventListener("resuming", () => this.setStatus("Reconnecting voice…"));
    conn.addEventListener("speaking", () => this.shell.drawChannels());
    conn.addEventListener("sources", () => {
      // A watched screen that ended closes its view.
      if (this.viewer && ![...conn.sources.values()].flat().some((x) => x.ssrc === this.viewer.ssrc)) this.unwatch();
      this.shell.drawChannels();
    });
    conn.addEventListener("failed", (e) => this.setStatus(e.detail.message));
    conn.addEventListener("closed", (e) => {
      if (conn !== this.conn) return;
      // Cluster mode: another process serves the channel now; op 4 again brings its address.
      if (e.detail.code === 4020) { this.conn = null; this.sendState(); return; }
      if (e.detail.code !== 4014) toast(CLOSED[e.detail.code] || `Voice disconnected (${e.detail.code}).`);
      this.teardown();
      this.shell.drawChannels();
    });
    conn.connect();
    const stream = await this.micAsked;
    if (conn !== this.conn) { stream?.getTracks().forEach((t) => t.stop()); return; }
    if (stream) await conn.startMicrophone(stream).catch((e) => this.setStatus(`Microphone: ${e.message}`));
  }

  perms(c) {
    const server = this.store.servers.get(c?.server_id);
    const me = this.store.me?.id;
    return compute(server, this.store.members.get(server?.id)?.get(me), me, c);
  }

  canModerate(c) {
    const p = this.perms(c);
    return has(p, P.MUTE_MEMBERS) || has(p, P.DEAFEN_MEMBERS) || has(p, P.MOVE_MEMBERS);
  }

  // Server mute, deafen and disconnect (PATCH of the member, docs/voice.md).
  moderate(c, v, user) {
    const p = this.perms(c);
    const patch = async (body) => {
      try { await this.app.api.call("PATCH", `/servers/${c.server_id}/members/${v.user_id}`, body); d.close(); } catch (e) { toast(e.message); }
    };
    const d = dialog(`${nameOf(user)} in voice`,
      has(p, P.MUTE_MEMBERS) ? h("button#voice-mod-mute", { onclick: () => patch({ mute: !v.mute }) }, v.mute ? "Server unmute" : "Server mute") : null,
      has(p, P.DEAFEN_MEMBERS) ? h("button#voice-mod-deafen", { onclick: () => patch({ deaf: !v.deaf }) }, v.deaf ? "Server undeafen" : "Server deafen") : null,
      has(p, P.MOVE_MEMBERS) ? h("button.danger#voice-mod-disconnect", { onclick: () => patch({ voice_channel_id: null }) }, "Disconnect") : null);
  }

  canShare() {
    return has(this.perms(this.store.channel(this.channelId)), P.STREAM) && Boolean(navigator.mediaDevices?.getDisplayMedia) && "VideoEncoder" in window && "MediaStreamTrackProcessor" in window;
  }

  async toggleScreen() {
    const conn = this.conn;
    if (!conn?.key) return;
    if (conn.screen) { conn.screen.stop(); conn.screen = null; return this.draw(); }
    const sender = new ScreenSender(conn);
    sender.onEnded = () => { if (conn.screen === sender) { sender.stop(); conn.screen = null; this.draw(); } };
    sender.onError = (e) => { toast(`Screen: ${e.message}`); sender.onEnded(); };
    conn.screen = sender;
    this.draw();
    try { await sender.start(); } catch (e) {
      conn.screen = null;
      sender.stop();
      this.draw();
      toast(e.name === "NotAllowedError" ? "Screen sharing was refused or cancelled." : `Screen: ${e.message}`);
    }
  }

  watch(user, ssrc) {
    this.unwatch();
    const canvas = h("canvas.screen-canvas#screen-canvas", { "aria-label": `${nameOf(user)}'s screen` });
    this.viewer = new ScreenViewer(this.conn, ssrc, canvas);
    this.conn.viewers.set(ssrc, this.viewer);
    this.viewerBox = h("section.screen-view#screen-view", { "aria-label": "Screen" },
      h("header", h("strong", `${nameOf(user)}'s screen`), h("button.icon#screen-close", { "aria-label": "Stop watching", onclick: () => this.unwatch() }, "✕")),
      canvas);
    document.body.append(this.viewerBox);
  }

  unwatch() {
    if (!this.viewer) return;
    this.viewer.close();
    this.conn?.viewers.delete(this.viewer.ssrc);
    this.viewer = null;
    this.viewerBox.remove();
  }

  setStatus(text) { this.status = text; this.draw(); }

  draw() {
    this.panel.hidden = !this.channelId;
    if (!this.channelId) return;
    const c = this.store.channel(this.channelId);
    const mine = this.store.voiceStates.get(this.store.me?.id);
    replace(this.panel,
      h("div.voice-where", h("strong", "🔊 ", c?.name || "Voice"), h("div.voice-status#voice-status", { role: "status" }, this.status)),
      mine?.mute ? h("div.voice-warning#voice-server-mute", "A moderator muted you.") : null,
      mine?.deaf ? h("div.voice-warning#voice-server-deaf", "A moderator deafened you.") : null,
      h("div.voice-buttons",
        h("button.icon#voice-mute", { "aria-pressed": String(this.selfMute), title: this.selfMute ? "Unmute" : "Mute", "aria-label": this.selfMute ? "Unmute" : "Mute", onclick: () => this.toggleMute() }, this.selfMute ? "🔇" : "🎙"),
        h("button.icon#voice-deafen", { "aria-pressed": String(this.selfDeaf), title: this.selfDeaf ? "Undeafen" : "Deafen", "aria-label": this.selfDeaf ? "Undeafen" : "Deafen", onclick: () => this.toggleDeaf() }, this.selfDeaf ? "🔕" : "🎧"),
        this.canShare() ? h("button.icon#voice-screen", { "aria-pressed": String(Boolean(this.conn?.screen)), title: this.conn?.screen ? "Stop sharing" : "Share your screen",
          "aria-label": this.conn?.screen ? "Stop sharing" : "Share your screen", onclick: () => this.toggleScreen() }, "🖥") : null,
        h("button.icon#voice-leave", { title: "Leave voice", "aria-label": "Leave voice", onclick: () => this.leave() }, "✆")));
  }

  // Gateway events and changes, from Shell.changed.
  changed({ what, d }) {
    const me = this.store.me?.id;
    switch (what) {
      case "VOICE_SERVER_UPDATE":
        // A join, or a move by a moderator to another channel: a new voice connection.
        this.channelId = d.channel_id;
        this.serverId = d.server_id;
        this.connect(d);
        return;
      case "VOICE_STATE_REFUSED":
        toast(REFUSED[d.code] || d.message || d.code);
        this.teardown();
        return;
      case "VOICE_STATE_UPDATE":
        if (d.user_id === me && !d.channel_id && this.channelId && this.conn) { this.teardown(); }
        if (d.user_id === me) { this.conn && (this.conn.serverMuted = d.mute); if (d.mute) this.conn?.setSpeaking(false); this.draw(); }
        return;
      case "ready":
        // A new gateway session voids the voice state: join again if we were in a channel.
        if (this.channelId && this.conn) { const c = this.store.channel(this.channelId); this.teardown(); if (c) this.join(c); }
        return;
    }
  }
}
