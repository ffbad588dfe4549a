// The logged-in screen: servers, channels (categories in order), the chat, members with
// presence, and the connection banner. New features add a view module and a place here: a
// voice panel under the channel list, a thread pane beside the chat, a search box in the header.

import { cmpId, dialog, h, nameOf, replace, toast } from "../dom.js";
import { P, compute, has } from "../perms.js";
import { ChatView } from "./chat.js";
import { accountDialog } from "./account.js";
import { serverSettings } from "./admin.js";
import { avatar } from "./avatars.js";
import { groupName, isGroup, newGroupDialog } from "./groupdm.js";
import { notificationsDialog } from "./push.js";
import { Threads } from "./threads.js";
import { Search } from "./search.js";
import { Voice } from "./voice.js";

const HOME = "@me";

export class Shell {
  constructor(app) {
    this.app = app;
    this.store = app.store;
    this.api = app.api;
    this.serverId = HOME;
    this.threads = new Threads(this);  // before the chat, whose messages offer threads
    this.chat = new ChatView(this);
    this.search = new Search(this);
    this.voice = new Voice(this);
    this.chat.headerExtras.append(this.search.root, this.threads.headerButton());
    this.serverList = h("nav.servers#servers", { "aria-label": "Servers" });
    this.channelList = h("nav.channels#channels", { "aria-label": "Channels" });
    this.memberList = h("aside.members#members", { "aria-label": "Members" });
    this.banner = h("div.banner#connection", { role: "status", hidden: true });
    this.meBar = h("footer.me");
    this.root = h("div.shell",
      this.banner,
      h("div.nav", this.serverList, h("div.sidebar", h("header.server-header#server-header"), this.channelList, this.voice.panel, this.meBar)),
      this.chat.root, this.threads.root, this.memberList);
    // Alt+Up / Alt+Down: the previous or next channel, as in other chat clients.
    this.root.addEventListener("keydown", (e) => {
      if (!e.altKey || (e.key !== "ArrowUp" && e.key !== "ArrowDown")) return;
      e.preventDefault();
      const ids = [...this.channelList.querySelectorAll("button.channel:not(.voice)")].map((b) => b.dataset.channel);
      const at = ids.indexOf(this.chat.channelId);
      const next = ids[(at + (e.key === "ArrowDown" ? 1 : ids.length - 1)) % ids.length];
      if (next) this.openChannel(next);
    });
    // At phone widths the drawers close on a tap in the chat.
    this.chat.root.addEventListener("click", (e) => {
      if (!e.target.closest(".menu-toggle, .members-toggle")) this.root.classList.remove("show-nav", "show-members");
    });
  }

  toggle(part) { this.root.classList.toggle(`show-${part}`); }

  status(status) {
    this.banner.hidden = status === "ready";
    this.banner.dataset.status = status;
    this.banner.textContent = status === "failed" ? "Disconnected. Reload the page." : status === "reconnecting" ? "Reconnecting…" : "Connecting…";
  }

  // Redraw what an event touched.
  changed({ what, d, channelId, serverId }) {
    const inChannel = (id) => id === this.chat.channelId;
    this.threads.changed({ what, d, channelId });
    this.voice.changed({ what, d });
    switch (what) {
      case "ready": {
        const again = Boolean(this.chat.channelId);  // a new session after a drop, not a start
        if (!again) this.restore();
        if (this.serverId !== HOME && !this.store.servers.has(this.serverId)) this.serverId = HOME;
        this.drawAll();
        const open = this.chat.channelId && this.store.channel(this.chat.channelId);
        if (open && again) this.store.catchUp(this.chat.channelId).catch(() => {});
        else if (open) this.chat.open(this.chat.channelId);
        else this.pickChannel();
        if (this.serverId !== HOME) this.store.loadMembers(this.serverId).catch(() => {});
        return;
      }
      case "MESSAGE_CREATE": case "MESSAGE_UPDATE": case "MESSAGE_DELETE": case "MESSAGE_DELETE_BULK":
      case "MESSAGE_REACTION_ADD": case "MESSAGE_REACTION_REMOVE": case "CHANNEL_PINS_UPDATE":
        if (inChannel(d.channel_id)) this.chat.drawMessages();
        this.drawChannels(); this.drawServers();
        return;
      case "history": case "pending": if (inChannel(channelId)) this.chat.drawMessages(); return;
      case "TYPING_START": if (inChannel(d.channel_id)) this.chat.drawTyping(); return;
      case "MESSAGE_ACK": this.drawChannels(); this.drawServers(); return;
      case "SERVER_DELETE":
        if (d.id === this.serverId) { this.serverId = HOME; this.pickChannel(); }
        this.drawAll(); return;
      case "CHANNEL_DELETE":
        if (inChannel(d.id)) this.pickChannel();
        this.drawAll(); return;
      case "members": case "MEMBER_ADD": case "MEMBER_REMOVE": case "MEMBER_UPDATE": case "PRESENCE_UPDATE":
        if (what === "MEMBER_REMOVE" && d.user.id === this.store.me?.id) return;
        this.drawMembers(); this.drawChannels(); this.chat.draw(); return;
      default: this.drawAll();
    }
  }

  drawAll() { this.drawServers(); this.drawChannels(); this.drawMembers(); this.drawMe(); this.chat.draw(); }

  server() { return this.serverId === HOME ? null : this.store.servers.get(this.serverId); }

  myPerms(channel = null) {
    const me = this.store.me?.id;
    const server = this.server();
    return compute(server, this.store.members.get(server?.id)?.get(me), me, channel);
  }

  channelsOf(server) {
    const list = [...server.channels.values()].sort((a, b) => a.position - b.position || cmpId(a.id, b.id));
    const top = list.filter((c) => c.type !== "category" && !c.parent_id);
    const groups = list.filter((c) => c.type === "category").map((cat) => ({ cat, children: list.filter((c) => c.parent_id === cat.id) }));
    return { top, groups };
  }

  badge(channelIds) {
    let mentions = 0, unread = false;
    for (const id of channelIds) { mentions += this.store.reads.get(id)?.mention_count || 0; unread ||= this.store.unread(id); }
    return { mentions, unread };
  }

  drawServers() {
    const entry = (id, label, title, channelIds) => {
      const { mentions, unread } = this.badge(channelIds);
      return h("button.server-icon", { "data-server": id, title, "aria-label": title, "aria-current": id === this.serverId ? "true" : null,
        class: [unread && "unread"].filter(Boolean).join(" ") || null, onclick: () => this.openServer(id) },
        label, mentions ? h("span.badge", { "aria-label": `${mentions} mentions` }, String(mentions)) : null);
    };
    const all = [...this.store.dms.keys(), ...[...this.store.servers.values()].flatMap((s) => [...s.channels.keys()])];
    const { mentions } = this.badge(all);
    document.title = mentions ? `(${mentions}) Relay` : "Relay";  // seen from another tab
    replace(this.serverList,
      entry(HOME, "✉", "Direct messages", [...this.store.dms.keys()]),
      h("hr"),
      [...this.store.servers.values()].map((s) => entry(s.id, s.icon_url ? h("img.server-img", { src: s.icon_url, alt: "" }) : s.name.slice(0, 2), s.name, [...s.channels.keys()])),
      h("button.server-icon.add#create-server", { title: "Create a server", "aria-label": "Create a server", onclick: () => this.createServer() }, "+"),
      h("button.server-icon.add#join-server", { title: "Join with an invite", "aria-label": "Join with an invite", onclick: () => this.joinDialog() }, "→"));
  }

  channelEntry(c) {
    const read = this.store.reads.get(c.id);
    const unread = this.store.unread(c.id);
    const label = isGroup(c) ? `👥 ${groupName(c, this.store.me?.id)}` : c.type === "dm" ? `@${c.recipients?.filter((u) => u.id !== this.store.me?.id).map(nameOf).join(", ")}` : c.type === "voice" ? `🔊 ${c.name}` : `# ${c.name}`;
    if (c.type === "voice") return this.voice.entry(c, label);
    return h("li", h("button.channel", {
      "data-channel": c.id, "aria-current": c.id === this.chat.channelId ? "true" : null,
      class: unread ? "unread" : null, onclick: () => this.openChannel(c.id) },
      label, read?.mention_count ? h("span.badge", { "aria-label": `${read.mention_count} mentions` }, String(read.mention_count)) : null));
  }

  drawChannels() {
    const header = this.root.querySelector("#server-header");
    const server = this.server();
    if (!server) {
      replace(header, h("h2", "Direct messages"),
        h("button.icon#new-group-dm", { title: "New group DM", "aria-label": "New group DM", onclick: () => newGroupDialog(this) }, "👥"));
      const dms = [...this.store.dms.values()].sort((a, b) => cmpId(b.last_message_id, a.last_message_id));
      replace(this.channelList, h("ul", dms.map((c) => this.channelEntry(c))), dms.length ? null : h("p.hint", "Open a DM from a server's member list."));
      return;
    }
    const perms = this.myPerms();
    replace(header, h("h2", server.name),
      has(perms, P.CREATE_INVITE) ? h("button.icon#invite-button", { title: "Invite people", "aria-label": "Invite people", onclick: () => this.invite() }, "➕") : null,
      h("button.icon#server-settings", { title: "Server settings", "aria-label": "Server settings", onclick: () => serverSettings(this, server) }, "⚙"));
    const { top, groups } = this.channelsOf(server);
    replace(this.channelList,
      h("ul", top.map((c) => this.channelEntry(c))),
      groups.map(({ cat, children }) => h("section.category", { "data-category": cat.id }, h("h3", cat.name), h("ul", children.map((c) => this.channelEntry(c))))));
  }

  drawMembers() {
    const server = this.server();
    let people;
    if (!server) {
      const c = this.chat.channel;
      people = (c?.recipients || []).map((user) => ({ user }));
    } else {
      people = [...(this.store.members.get(server.id)?.values() || [])];
    }
    const status = (id) => this.store.presences.get(id) || "offline";
    const order = { online: 0, idle: 1, dnd: 2, offline: 3 };
    people.sort((a, b) => order[status(a.user.id)] - order[status(b.user.id)] || a.user.username.localeCompare(b.user.username));
    replace(this.memberList, h("h3", `Members — ${people.length}`), h("ul", people.map((m) =>
      h("li.member", { "data-user": m.user.id, "data-status": status(m.user.id) },
        h("button.member-button", { onclick: () => this.memberCard(m) },
          avatar(this.store.users.get(m.user.id) || m.user),
          h("span.dot", { "aria-label": status(m.user.id), title: status(m.user.id) }),
          m.nickname || nameOf(m.user),
          server?.owner_id === m.user.id ? h("span.crown", { title: "Owner" }, " 👑") : null)))));
  }

  drawMe() {
    const me = this.store.me;
    const status = this.store.presences.get(me?.id) || "online";
    const select = h("select#status", { "aria-label": "Status", onchange: (e) => this.app.gateway.setPresence(e.target.value) },
      ["online", "idle", "dnd", "invisible"].map((s) => h("option", { value: s, selected: s === status ? "selected" : null }, s)));
    replace(this.meBar, avatar(me), h("span.me-name", nameOf(me)), select,
      h("button.icon#notifications", { title: "Notifications", "aria-label": "Notifications", onclick: () => notificationsDialog(this.app) }, "🔔"),
      h("button.icon#theme", { title: "Light or dark", "aria-label": "Switch theme", onclick: () => this.app.toggleTheme() }, "◐"),
      h("button.icon#account", { title: "Account and sessions", "aria-label": "Account", onclick: () => accountDialog(this.app) }, "⚙"),
      h("button.icon#logout", { title: "Log out", "aria-label": "Log out", onclick: () => this.app.logout() }, "⎋"));
  }

  openServer(id) {
    this.serverId = id;
    this.root.classList.remove("show-nav");
    this.pickChannel();
    if (id !== HOME && !this.store.members.has(id)) this.store.loadMembers(id).catch((e) => toast(e.message));
    this.drawAll();
  }

  pickChannel() {
    const server = this.server();
    let first = null;
    if (server) {
      const { top, groups } = this.channelsOf(server);
      first = [...top, ...groups.flatMap((g) => g.children)].find((c) => c.type === "text");
    } else {
      first = [...this.store.dms.values()][0];
    }
    this.openChannel(first?.id || null);
  }

  // The last server and channel shown, opened again after a reload.
  restore() {
    const last = JSON.parse(localStorage.getItem("relay.last") || "null");
    if (last && (last.serverId === HOME || this.store.servers.has(last.serverId))) {
      this.serverId = last.serverId;
      if (this.store.channel(last.channelId)) this.chat.channelId = last.channelId;
    }
  }

  openChannel(id) {
    localStorage.setItem("relay.last", JSON.stringify({ serverId: this.serverId, channelId: id }));
    this.root.classList.remove("show-nav");
    this.chat.open(id);
    this.drawChannels();
    if (!this.server()) this.drawMembers();
  }

  async createServer() {
    const name = h("input#server-name", { maxlength: 100, required: true, placeholder: "My server" });
    const d = dialog("Create a server", h("form", { onsubmit: async (e) => {
      e.preventDefault();
      try {
        const server = await this.api.call("POST", "/servers", { name: name.value.trim() });
        this.store.apply("SERVER_CREATE", server);
        d.close();
        this.openServer(server.id);
      } catch (err) { toast(err.message); }
    } }, h("label", { for: "server-name" }, "Name"), name, h("button.primary", { type: "submit" }, "Create")));
  }

  joinDialog() {
    const code = h("input#invite-code", { required: true, placeholder: "https://…/invite/CODE or CODE" });
    const d = dialog("Join a server", h("form", { onsubmit: (e) => {
      e.preventDefault();
      d.close();
      this.app.showInvite(code.value.trim().split("/").pop());
    } }, h("label", { for: "invite-code" }, "Invite link"), code, h("button.primary", { type: "submit" }, "Look")));
  }

  async invite() {
    try {
      const invite = await this.api.call("POST", `/servers/${this.serverId}/invites`, { max_age: 86400, max_uses: 0 });
      const link = `${location.origin}/invite/${invite.code}`;
      const field = h("input#invite-link", { readonly: true, value: link });
      dialog("Invite people", h("p", "Anyone with this link can join for a day:"), field,
        h("button#copy-invite", { onclick: () => navigator.clipboard?.writeText(link).then(() => toast("Copied")) }, "Copy"));
      field.select();
    } catch (e) { toast(e.message); }
  }

  memberCard(m) {
    const me = this.store.me?.id;
    const buttons = [];
    if (m.user.id !== me) {
      buttons.push(h("button#open-dm", { onclick: async () => {
        try {
          const dm = await this.api.call("POST", "/users/@me/channels", { recipient_id: m.user.id });
          this.store.apply("CHANNEL_CREATE", dm);
          d.close();
          this.serverId = HOME;
          this.drawAll();
          this.openChannel(dm.id);
        } catch (e) { toast(e.message); }
      } }, "Message"));
    }
    const d = dialog(nameOf(m.user), h("p", `@${m.user.username}`, " · ", this.store.presences.get(m.user.id) || "offline"), ...buttons);
  }
}
