// Threads (docs/threads.md): start one from a message or in a channel, a pane beside the chat
// with the thread's messages (a second ChatView, so sending, reacting and editing work as in a
// channel), the active and archived lists, join and leave, archived and locked shown.

import { dialog, h, replace, toast } from "../dom.js";
import { P, has } from "../perms.js";
import { Store } from "../state.js";
import { ChatView } from "./chat.js";

// The model's part: threads by id and the ones I am a member of (READY's `threads`).
Object.assign(Store.prototype, {
  noteThread(t) { this.threads.set(t.id, { ...this.threads.get(t.id), ...t }); },
  on_THREAD_CREATE(t) {
    this.noteThread(t);
    if (t.owner_id === this.me?.id) this.joinedThreads.add(t.id);
  },
  on_THREAD_UPDATE(t) { this.noteThread(t); },
  on_THREAD_DELETE(t) { this.threads.delete(t.id); this.joinedThreads.delete(t.id); this.messages.delete(t.id); },
  on_THREAD_MEMBERS_UPDATE(d) {
    const t = this.threads.get(d.id);
    if (t) t.member_count = d.member_count;
    for (const m of d.added_members) { this.noteUser(m.user); if (m.user.id === this.me?.id) this.joinedThreads.add(d.id); }
    if (d.removed_member_ids.includes(this.me?.id)) this.joinedThreads.delete(d.id);
  },
});

// A thread's permissions are its parent's; in it SEND_MESSAGES_IN_THREADS stands for
// SEND_MESSAGES, and a locked thread takes MANAGE_THREADS.
function threadPerms(perms, thread) {
  let p = perms & ~P.SEND_MESSAGES;
  const canPost = has(perms, P.SEND_MESSAGES_IN_THREADS) && (!thread?.thread_metadata?.locked || has(perms, P.MANAGE_THREADS));
  if (canPost) p |= P.SEND_MESSAGES; else p &= ~P.ADD_REACTIONS;
  return p;
}

class ThreadView extends ChatView {
  constructor(shell, pane) {
    super(shell);
    this.pane = pane;
    // The pane's copy of the chat's elements gets ids of its own ("thread-composer", ...).
    for (const el of this.root.querySelectorAll("[id]")) el.id = `thread-${el.id}`;
    this.root.classList.add("thread-chat");
    this.root.setAttribute("aria-label", "Thread");
    this.stateLine = h("div.thread-state#thread-state");
    this.controls = h("span.thread-controls");
    replace(this.root.querySelector(".chat-header"), this.title, h("span.spacer"), this.controls,
      h("button.icon#thread-close", { title: "Close the thread", "aria-label": "Close the thread", onclick: () => pane.close() }, "✕"));
    this.root.querySelector(".chat-header").after(this.stateLine);
  }

  get channel() { return this.store.threads.get(this.channelId) || null; }
  get server() { return this.store.servers.get(this.channel?.server_id) || null; }
  perms() { return threadPerms(super.perms(), this.channel); }

  draw() {
    super.draw();
    const t = this.channel;
    if (!t) return;
    replace(this.title, `🧵 ${t.name}`);
    const meta = t.thread_metadata || {};
    const perms = super.perms();
    const mine = t.owner_id === this.store.me?.id;
    const manage = has(perms, P.MANAGE_THREADS);
    const joined = this.store.joinedThreads.has(t.id);
    replace(this.stateLine,
      meta.archived ? h("span.tag.archived", "Archived") : null,
      meta.locked ? h("span.tag.locked", "🔒 Locked") : null,
      h("span.thread-members", `${t.member_count ?? 0} member${t.member_count === 1 ? "" : "s"}`));
    replace(this.controls,
      h("button#thread-join", { onclick: () => this.pane.membership(!joined) }, joined ? "Leave" : "Join"),
      manage || (mine && !meta.locked) ? h("button#thread-archive", { onclick: () => this.pane.patch({ archived: !meta.archived }) }, meta.archived ? "Unarchive" : "Archive") : null,
      manage ? h("button#thread-lock", { onclick: () => this.pane.patch({ locked: !meta.locked }) }, meta.locked ? "Unlock" : "Lock") : null);
    if (meta.archived && !this.input.disabled) this.input.placeholder = "Archived: a message unarchives it";
  }
}

export class Threads {
  constructor(shell) {
    this.shell = shell;
    this.store = shell.store;
    this.api = shell.api;
    this.view = new ThreadView(shell, this);
    // The view is in the page only while a thread is open: its classes are the chat's.
    this.root = h("aside.thread-pane#thread-pane", { "aria-label": "Thread", hidden: true });
  }

  get threadId() { return this.root.hidden ? null : this.view.channelId; }

  // The thread button of a channel message, and the link to a thread started from it.
  actions(view, m, perms) {
    if (view instanceof ThreadView || m.thread || !has(perms, P.CREATE_THREADS)) return null;
    return h("button.icon.start-thread", { title: "Start a thread", "aria-label": "Start a thread", onclick: () => this.create(m.channel_id, m) }, "🧵");
  }

  link(m) {
    if (!m.thread) return null;
    const t = this.store.threads.get(m.thread);
    return h("button.link.thread-link", { "data-thread": m.thread, onclick: () => this.open(m.thread) },
      `🧵 ${t?.name || "Thread"}`, t ? ` · ${t.member_count} member${t.member_count === 1 ? "" : "s"}` : "");
  }

  headerButton() {
    return h("button.icon#threads-button", { title: "Threads", "aria-label": "Threads", onclick: () => this.list() }, "🧵");
  }

  async open(id) {
    if (!this.store.threads.has(id)) {
      try { this.store.noteThread(await this.api.call("GET", `/channels/${id}`)); } catch (e) { toast(e.message); return; }
    }
    this.root.hidden = false;
    this.root.append(this.view.root);
    this.shell.root.classList.add("with-thread");
    await this.view.open(id);
  }

  close() {
    this.root.hidden = true;
    this.view.root.remove();
    this.shell.root.classList.remove("with-thread");
    this.view.channelId = null;
  }

  create(channelId, message = null) {
    const name = h("input#thread-name", { maxlength: 100, required: true, value: message ? message.content.slice(0, 40).trim() || "Thread" : "" });
    const d = dialog("Start a thread", h("form", { onsubmit: async (e) => {
      e.preventDefault();
      const path = message ? `/channels/${channelId}/messages/${message.id}/threads` : `/channels/${channelId}/threads`;
      try {
        const t = await this.api.call("POST", path, { name: name.value.trim() });
        this.store.apply("THREAD_CREATE", t);
        d.close();
        this.open(t.id);
      } catch (err) { toast(err.message); }
    } }, h("label", { for: "thread-name" }, "Name"), name, h("button.primary#create-thread", { type: "submit" }, "Start")));
  }

  async list() {
    const channelId = this.shell.chat.channelId;
    const channel = this.shell.chat.channel;
    if (!channel || channel.type !== "text") return toast("Threads live in text channels.");
    try {
      const [active, archived] = await Promise.all([
        this.api.call("GET", `/channels/${channelId}/threads/active`),
        this.api.call("GET", `/channels/${channelId}/threads/archived?limit=50`)]);
      [...active, ...archived].forEach((t) => this.store.noteThread(t));
      const entry = (t) => h("li", h("button.link.thread-entry", { "data-thread": t.id, onclick: () => { d.close(); this.open(t.id); } },
        t.name, t.thread_metadata?.locked ? " 🔒" : "", ` · ${t.member_count} member${t.member_count === 1 ? "" : "s"}`));
      const canCreate = has(this.shell.chat.perms(), P.CREATE_THREADS);
      const d = dialog(`Threads in #${channel.name}`,
        canCreate ? h("button.primary#new-thread", { onclick: () => { d.close(); this.create(channelId); } }, "New thread") : null,
        h("h3", "Active"), active.length ? h("ul.thread-list#active-threads", active.map(entry)) : h("p.hint", "No active threads."),
        h("h3", "Archived"), archived.length ? h("ul.thread-list#archived-threads", archived.map(entry)) : h("p.hint", "No archived threads."));
    } catch (e) { toast(e.message); }
  }

  async membership(join) {
    try { await this.api.call(join ? "PUT" : "DELETE", `/channels/${this.view.channelId}/thread-members/@me`); } catch (e) { toast(e.message); }
  }

  async patch(body) {
    try { this.store.apply("THREAD_UPDATE", await this.api.call("PATCH", `/channels/${this.view.channelId}`, body)); } catch (e) { toast(e.message); }
  }

  // Shell.changed hands every change here first: the pane redraws what concerns its thread.
  changed({ what, d, channelId }) {
    const id = this.threadId;
    if (what.startsWith("THREAD_")) {
      if (what === "THREAD_DELETE" && d.id === id) { this.close(); return; }
      if (d.id === id) this.view.draw();
      if (this.shell.chat.channelId) this.shell.chat.drawMessages();  // thread links under messages
      return;
    }
    if (!id) return;
    if ((what === "history" || what === "pending") && channelId === id) this.view.drawMessages();
    else if (what === "TYPING_START" && d.channel_id === id) this.view.drawTyping();
    else if (what.startsWith("MESSAGE_") || what === "CHANNEL_PINS_UPDATE") { if (d.channel_id === id) this.view.drawMessages(); }
    else if (what === "ready") {
      // A new session: fetch what the pane missed, and the thread itself if READY did not list
      // it (it lists only the threads I am in); close the pane if it is gone.
      const again = () => { this.view.draw(); this.store.catchUp(id).catch(() => {}); };
      if (this.store.threads.has(id)) again();
      else this.api.call("GET", `/channels/${id}`).then((t) => { this.store.noteThread(t); again(); }, () => this.close());
    } else if (what === "members") this.view.draw();
  }
}
