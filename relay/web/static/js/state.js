// The client's model of what it can see, kept up to date by gateway events. Views subscribe
// to "change" and redraw what the event touched. Messages are kept per channel in id order and
// by id, so an event seen twice (a replay, a REST answer and its dispatch) changes nothing.

import { cmpId } from "./dom.js";

export class Store extends EventTarget {
  constructor(api) {
    super();
    this.api = api;
    this.reset();
  }

  reset() {
    this.me = null;
    this.servers = new Map();    // id -> server {…, channels: Map, roles: Map}
    this.dms = new Map();        // id -> DM channel
    this.members = new Map();    // server id -> Map(user id -> member), loaded on demand
    this.presences = new Map();  // user id -> status
    this.reads = new Map();      // channel id -> {last_read_id, last_message_id, mention_count}
    this.messages = new Map();   // channel id -> {list, byId, complete}
    this.pending = new Map();    // channel id -> [{nonce, content, failed}]
    this.typing = new Map();     // channel id -> Map(user id -> until ms)
    this.users = new Map();      // user id -> {id, username, display_name}
    this.emojis = new Map();     // server id -> [custom emoji], loaded on demand (ui/emoji.js)
    this.threads = new Map();    // thread id -> thread (ui/threads.js handles their events)
    this.joinedThreads = new Set();
    this.voiceStates = new Map(); // user id -> voice state (ui/voice.js handles their events)
  }

  changed(what, detail = {}) {
    this.dispatchEvent(new CustomEvent("change", { detail: { what, ...detail } }));
  }

  channel(id) {
    if (this.dms.has(id)) return this.dms.get(id);
    if (this.threads.has(id)) return this.threads.get(id);
    for (const server of this.servers.values()) if (server.channels.has(id)) return server.channels.get(id);
    return null;
  }

  addServer(s) {
    const old = this.servers.get(s.id);
    const server = { ...old, ...s };
    server.channels = new Map((s.channels || [...(old?.channels?.values() || [])]).map((c) => [c.id, c]));
    server.roles = new Map((s.roles || [...(old?.roles?.values() || [])]).map((r) => [r.id, r]));
    this.servers.set(s.id, server);
  }

  noteUser(user) { if (user?.id) this.users.set(user.id, { ...this.users.get(user.id), ...user }); }

  // READY: everything but loaded messages is replaced. Messages already shown stay, and the
  // app fetches what came after them (the session was new, so nothing was replayed).
  ready(d) {
    const messages = this.messages;
    this.reset();
    this.messages = messages;
    // A new session replayed nothing: each loaded channel may miss messages after its newest
    // one, fetched (from there, not from whatever arrives live meanwhile) when it is shown.
    for (const box of messages.values()) if (box.loaded && box.gapAfter === undefined) box.gapAfter = box.list.at(-1)?.id ?? null;
    this.me = d.user;
    this.noteUser(d.user);
    for (const s of d.servers) this.addServer(s);
    for (const c of d.private_channels) { this.dms.set(c.id, c); c.recipients?.forEach((u) => this.noteUser(u)); }
    for (const r of d.read_states) this.reads.set(r.channel_id, r);
    for (const p of d.presences) this.presences.set(p.user_id, p.status);
    for (const t of d.threads || []) { this.threads.set(t.id, t); this.joinedThreads.add(t.id); }
    for (const v of d.voice_states || []) if (v.channel_id) this.voiceStates.set(v.user_id, v);
    this.changed("ready");
  }

  apply(t, d) {
    const handler = this[`on_${t}`];
    if (t === "READY") return this.ready(d);
    if (handler) handler.call(this, d);
    this.changed(t, { d });
  }

  on_SERVER_CREATE(d) { this.addServer(d); }
  on_SERVER_UPDATE(d) { this.addServer(d); }
  on_SERVER_DELETE(d) {
    const server = this.servers.get(d.id);
    server?.channels.forEach((c) => this.messages.delete(c.id));
    this.servers.delete(d.id);
    this.members.delete(d.id);
  }
  on_CHANNEL_CREATE(c) {
    if (c.type === "dm" || c.type === "group_dm") { this.dms.set(c.id, c); c.recipients?.forEach((u) => this.noteUser(u)); return; }
    this.servers.get(c.server_id)?.channels.set(c.id, c);
    if (!this.reads.has(c.id)) this.reads.set(c.id, { channel_id: c.id, last_read_id: null, last_message_id: c.last_message_id, mention_count: 0 });
  }
  on_CHANNEL_UPDATE(c) { this.on_CHANNEL_CREATE(c); }
  on_CHANNEL_DELETE(c) {
    this.servers.get(c.server_id)?.channels.delete(c.id);
    this.dms.delete(c.id);
    this.messages.delete(c.id);
  }
  on_ROLE_CREATE(d) { this.servers.get(d.server_id)?.roles.set(d.role.id, d.role); }
  on_ROLE_UPDATE(d) { this.on_ROLE_CREATE(d); }
  on_ROLE_DELETE(d) { this.servers.get(d.server_id)?.roles.delete(d.role_id); }
  on_MEMBER_ADD(d) {
    this.noteUser(d.user);
    this.members.get(d.server_id)?.set(d.user.id, { user: d.user, nickname: null, roles: [], joined_at: d.joined_at, communication_disabled_until: null });
  }
  on_MEMBER_UPDATE(d) {
    const members = this.members.get(d.server_id);
    if (members) members.set(d.user.id, { ...members.get(d.user.id), ...d });
  }
  on_MEMBER_REMOVE(d) { this.members.get(d.server_id)?.delete(d.user.id); }
  on_PRESENCE_UPDATE(d) { this.presences.set(d.user_id, d.status); }
  // Files and media (docs/files.md), group DMs (docs/servers.md).
  on_USER_UPDATE(d) { this.users.set(d.id, d); if (d.id === this.me?.id) this.me = { ...this.me, ...d, avatar_url: d.avatar_url }; }
  on_SERVER_EMOJIS_UPDATE(d) { this.emojis.set(d.server_id, d.emojis); }
  on_CHANNEL_RECIPIENT_ADD(d) {
    this.noteUser(d.user);
    const c = this.dms.get(d.channel_id);
    if (c && !c.recipients.some((u) => u.id === d.user.id)) c.recipients = [...c.recipients, d.user];
  }
  on_CHANNEL_RECIPIENT_REMOVE(d) {
    const c = this.dms.get(d.channel_id);
    if (c) c.recipients = c.recipients.filter((u) => u.id !== d.user.id);
  }

  on_MESSAGE_CREATE(m) {
    this.noteUser(m.author);
    this.insert(m);
    const pending = this.pending.get(m.channel_id);
    if (pending && m.nonce) this.pending.set(m.channel_id, pending.filter((p) => p.nonce !== m.nonce));
    this.typing.get(m.channel_id)?.delete(m.author.id);
    const read = this.reads.get(m.channel_id) || { channel_id: m.channel_id, last_read_id: null, mention_count: 0 };
    if (cmpId(m.id, read.last_message_id) > 0) {
      read.last_message_id = m.id;
      if (m.author.id === this.me?.id) { read.last_read_id = m.id; read.mention_count = 0; }
      else if (m.mentions?.includes(this.me?.id) && cmpId(m.id, read.last_read_id) > 0) read.mention_count += 1;
    }
    this.reads.set(m.channel_id, read);
  }
  on_MESSAGE_UPDATE(m) {
    const box = this.messages.get(m.channel_id);
    const old = box?.byId.get(m.id);
    if (old) box.byId.set(m.id, { ...m, reactions: old.reactions });  // `me` is false in events
    if (old) box.list = box.list.map((x) => (x.id === m.id ? box.byId.get(m.id) : x));
  }
  on_MESSAGE_DELETE(d) { this.remove(d.channel_id, [d.id]); }
  on_MESSAGE_DELETE_BULK(d) { this.remove(d.channel_id, d.ids); }
  on_MESSAGE_REACTION_ADD(d) { this.react(d, +1); }
  on_MESSAGE_REACTION_REMOVE(d) { this.react(d, -1); }
  on_CHANNEL_PINS_UPDATE(d) {
    const m = this.messages.get(d.channel_id)?.byId.get(d.message_id);
    if (m) m.pinned = d.pinned;
  }
  on_MESSAGE_ACK(d) {
    const read = this.reads.get(d.channel_id);
    if (read && cmpId(d.message_id, read.last_read_id) > 0) { read.last_read_id = d.message_id; read.mention_count = 0; }
  }
  on_TYPING_START(d) {
    if (d.user_id === this.me?.id) return;
    if (!this.typing.has(d.channel_id)) this.typing.set(d.channel_id, new Map());
    this.typing.get(d.channel_id).set(d.user_id, Date.now() + 8000);
  }

  box(channelId) {
    if (!this.messages.has(channelId)) this.messages.set(channelId, { list: [], byId: new Map(), complete: false, loaded: false });
    return this.messages.get(channelId);
  }

  // Only into a channel whose history was loaded (its list is then the newest messages), or
  // kept aside while its first page is on the way, for an event newer than that page.
  insert(m) {
    const box = this.messages.get(m.channel_id);
    if (!box || box.byId.has(m.id)) return;
    if (!box.loaded) { if (box.early) box.early.push(m); return; }
    box.byId.set(m.id, m);
    box.list.push(m);
    box.list.sort((a, b) => cmpId(a.id, b.id));
  }

  remove(channelId, ids) {
    const box = this.messages.get(channelId);
    if (!box) return;
    const gone = new Set(ids);
    ids.forEach((id) => box.byId.delete(id));
    box.list = box.list.filter((m) => !gone.has(m.id));
  }

  react(d, delta) {
    const m = this.messages.get(d.channel_id)?.byId.get(d.message_id);
    if (!m) return;
    const mine = d.user_id === this.me?.id;
    const list = m.reactions || (m.reactions = []);
    let r = list.find((x) => x.emoji === d.emoji);
    if (!r) { r = { emoji: d.emoji, count: 0, me: false }; list.push(r); }
    r.count += delta;
    if (mine) r.me = delta > 0;
    m.reactions = list.filter((x) => x.count > 0);
  }

  // History: the newest page first, then older pages on scroll; `after` fills a gap after a
  // reconnect that could not RESUME.
  async loadHistory(channelId) {
    const box = this.box(channelId);
    if (box.loaded) return this.catchUp(channelId);
    if (box.early) return;  // already on the way
    box.early = [];
    try {
      const page = await this.api.call("GET", `/channels/${channelId}/messages?limit=50`);
      box.loaded = true;
      box.complete = page.length < 50;
      page.forEach((m) => { this.noteUser(m.author); this.insert(m); });
      box.early.forEach((m) => this.insert(m));
    } finally {
      box.early = null;
    }
    this.changed("history", { channelId });
  }

  async loadOlder(channelId) {
    const box = this.box(channelId);
    if (box.complete || !box.list.length || box.loadingOlder) return false;
    box.loadingOlder = true;
    try {
      const page = await this.api.call("GET", `/channels/${channelId}/messages?limit=50&before=${box.list[0].id}`);
      box.complete = page.length < 50;
      for (const m of page) if (!box.byId.has(m.id)) { this.noteUser(m.author); box.byId.set(m.id, m); box.list.push(m); }
      box.list.sort((a, b) => cmpId(a.id, b.id));
    } finally { box.loadingOlder = false; }
    this.changed("history", { channelId, older: true });
    return true;
  }

  async catchUp(channelId) {
    const box = this.box(channelId);
    if (!box.loaded) return this.loadHistory(channelId);
    if (box.gapAfter === undefined) return;  // nothing was missed: events kept it whole
    let after = box.gapAfter;
    delete box.gapAfter;
    try {
      for (;;) {
        const page = await this.api.call("GET", `/channels/${channelId}/messages?limit=100${after ? `&after=${after}` : ""}`);
        page.forEach((m) => { this.noteUser(m.author); this.insert(m); });
        if (page.length < 100 || !after) break;
        after = page.at(-1).id;
      }
    } catch (e) {
      box.gapAfter ??= after;  // try again next time
      throw e;
    }
    this.changed("history", { channelId });
  }

  async loadMembers(serverId) {
    const members = new Map();
    let after = "0";
    for (;;) {
      const page = await this.api.call("GET", `/servers/${serverId}/members?limit=100&after=${after}`);
      page.forEach((m) => { members.set(m.user.id, m); this.noteUser(m.user); });
      if (page.length < 100) break;
      after = page.at(-1).user.id;
    }
    this.members.set(serverId, members);
    this.changed("members", { serverId });
  }

  unread(channelId) {
    const r = this.reads.get(channelId);
    return r ? cmpId(r.last_message_id, r.last_read_id) > 0 : false;
  }
}
