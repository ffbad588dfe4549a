// One channel: its history (older pages load on scroll up), live messages, and the composer
// (reply, edit, mentions with autocomplete, typing). Later features plug in here: an attachment
// button in the composer (files), a thread button in a message's actions, search in the header.

import { cmpId, dialog, h, nameOf, replace, timeOf, toast } from "../dom.js";
import { P, compute, has } from "../perms.js";
import { Attacher, attachments, pendingFiles, upload } from "./files.js";
import { avatar } from "./avatars.js";
import { expand, pickEmoji, reactionFace } from "./emoji.js";
import { groupName, isGroup, manageGroupDialog } from "./groupdm.js";

const SUPPRESS_EMBEDS = 4;
const QUICK = ["👍", "❤️", "😂", "🎉", "😮", "😢"];
const MENTION = /<@([1-9][0-9]{0,19})>/g;

// Only http(s) links become links: an embed's URL is the sender's or a page's choice.
function link(url, ...children) {
  return /^https?:\/\//i.test(url || "") ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer nofollow" }, ...children) : h("span", ...children);
}

// A rich embed or a link preview (docs/embeds.md): text only, as the server sends no images yet.
function embed(e) {
  const color = Number.isInteger(e.color) ? `#${e.color.toString(16).padStart(6, "0")}` : null;
  const box = h("article.embed", { "data-type": e.type || "rich" },
    e.provider?.name ? h("div.embed-provider", e.provider.name) : null,
    e.author?.name ? h("div.embed-author", link(e.author.url, e.author.name)) : null,
    e.title ? h("div.embed-title", link(e.url, e.title)) : null,
    e.description ? h("div.embed-description", e.description) : null,
    e.fields?.length ? h("div.embed-fields", e.fields.map((f) => h("div.embed-field", { class: f.inline ? "inline" : null }, h("strong", f.name), h("div", f.value)))) : null,
    e.footer?.text || e.timestamp ? h("div.embed-footer", [e.footer?.text, e.timestamp && new Date(e.timestamp).toLocaleString()].filter(Boolean).join(" · ")) : null);
  if (color) box.style.borderLeftColor = color;  // CSSOM, which the policy allows (no inline style attribute)
  return box;
}

export class ChatView {
  constructor(app) {
    this.app = app;
    this.store = app.store;
    this.api = app.api;
    this.channelId = null;
    this.replyTo = null;
    this.editing = null;
    this.lastTyping = 0;
    this.suggest = null;  // {start, items, index}
    this.list = h("ol.messages#messages", { "aria-label": "Messages", "aria-live": "polite", tabindex: 0 });
    this.scroller = h("div.scroller", { onscroll: () => this.scrolled() }, h("div.history-start"), this.list);
    this.typingLine = h("div.typing#typing", { "aria-live": "polite" });
    this.replyBar = h("div.reply-bar");
    this.suggestions = h("ul.suggestions#suggestions", { role: "listbox", hidden: true });
    this.input = h("textarea#composer", {
      rows: 1, maxlength: 4000, "aria-label": "Message", placeholder: "Message",
      onkeydown: (e) => this.key(e), oninput: () => this.typed(),
    });
    this.title = h("h2.channel-title");
    this.topic = h("span.topic");
    this.root = h("section.chat", { "aria-label": "Chat" },
      h("header.chat-header",
        h("button.icon.menu-toggle", { "aria-label": "Channels", onclick: () => app.toggle("nav") }, "☰"),
        this.title, this.topic,
        h("span.spacer"),
        this.groupButton = h("button.icon#group-settings", { "aria-label": "Group settings", title: "Group settings", hidden: true, onclick: () => manageGroupDialog(app, this.channel) }, "⚙"),
        this.headerExtras = h("span.header-extras"),  // filled by the shell: search, threads
        h("button.icon#pins-button", { "aria-label": "Pinned messages", title: "Pinned messages", onclick: () => this.showPins() }, "📌"),
        h("button.icon.members-toggle", { "aria-label": "Members", title: "Members", onclick: () => app.toggle("members") }, "👥")),
      this.scroller, this.typingLine, this.suggestions, this.replyBar);
    this.files = new Attacher(this);
    this.root.append(this.files.tray, h("form.composer", { onsubmit: (e) => { e.preventDefault(); this.send(); } },
      this.files.button, this.files.input, this.input,
      h("button.icon#emoji-button", { type: "button", title: "Emoji", "aria-label": "Emoji", onclick: () => this.insertEmoji() }, "☺"),
      h("button.primary#send", { type: "submit" }, "Send")));
    setInterval(() => this.drawTyping(), 1000);
  }

  get channel() { return this.store.channel(this.channelId); }
  get server() { return this.channel?.server_id ? this.store.servers.get(this.channel.server_id) : null; }
  perms() {
    const me = this.store.me?.id;
    return compute(this.server, this.store.members.get(this.server?.id)?.get(me), me, this.channel);
  }

  async open(channelId) {
    this.channelId = channelId;
    this.replyTo = null;
    this.editing = null;
    this.stick = true;
    this.draw();
    if (!channelId) return;
    this.input.focus();
    try { await this.store.loadHistory(channelId); } catch (e) { toast(e.message); }
  }

  draw() {
    const c = this.channel;
    this.root.hidden = false;
    if (!c) {
      replace(this.title, "No channel");
      replace(this.topic);
      replace(this.list);
      this.input.disabled = true;
      return;
    }
    const dmName = isGroup(c) ? groupName(c, this.store.me?.id) : c.type === "dm" ? c.recipients?.filter((u) => u.id !== this.store.me?.id).map(nameOf).join(", ") : null;
    replace(this.title, dmName ? `@${dmName}` : `# ${c.name}`);
    replace(this.topic, c.topic || "");
    const canSend = has(this.perms(), P.SEND_MESSAGES);
    this.input.disabled = !canSend;
    this.files.enable(canSend && has(this.perms(), P.ATTACH_FILES));
    this.groupButton.hidden = !isGroup(c);
    this.input.placeholder = canSend ? `Message ${dmName ? "@" + dmName : "#" + c.name}` : "You cannot send messages here";
    this.drawMessages();
    this.drawTyping();
    this.drawReply();
  }

  drawMessages() {
    const box = this.store.messages.get(this.channelId);
    const atBottom = this.stick;
    const fromBottom = this.scroller.scrollHeight - this.scroller.scrollTop;
    const items = (box?.list || []).map((m) => this.message(m));
    for (const p of this.store.pending.get(this.channelId) || []) {
      items.push(h("li.message.pending", { "data-nonce": p.nonce },
        h("div.meta", h("strong.author", nameOf(this.store.me)), h("span.time", p.failed ? "not sent" : "sending…")),
        h("div.content", p.content), pendingFiles(p),
        p.failed ? h("button.link", { onclick: () => this.retry(p) }, "Retry") : null));
    }
    if (box?.complete) items.unshift(h("li.history-begin", "This is the beginning of the channel."));
    replace(this.list, items);
    // Keep the view where it was: at the bottom, or on the same message after older ones came.
    this.scroller.scrollTop = atBottom ? this.scroller.scrollHeight : this.scroller.scrollHeight - fromBottom;
    this.maybeAck();
  }

  message(m) {
    const me = this.store.me?.id;
    const perms = this.perms();
    const own = m.author.id === me;
    const mentioned = m.mentions?.includes(me);
    const box = this.store.messages.get(m.channel_id);
    const parent = m.reply_to ? box?.byId.get(m.reply_to) : null;
    const editing = this.editing?.id === m.id;
    const actions = h("div.actions", { role: "toolbar", "aria-label": "Message actions" },
      has(perms, P.SEND_MESSAGES) ? h("button.icon.reply", { title: "Reply", "aria-label": "Reply", onclick: () => this.startReply(m) }, "↩") : null,
      has(perms, P.ADD_REACTIONS) ? QUICK.slice(0, 3).map((e) => h("button.icon.quick-react", { title: `React ${e}`, "aria-label": `React ${e}`, onclick: () => this.toggleReaction(m, e) }, e)) : null,
      has(perms, P.ADD_REACTIONS) ? h("button.icon.react", { title: "Add reaction", "aria-label": "Add reaction", onclick: () => this.pickReaction(m) }, "☺") : null,
      this.app.threads?.actions(this, m, perms),
      own ? h("button.icon.edit", { title: "Edit", "aria-label": "Edit", onclick: () => this.startEdit(m) }, "✎") : null,
      has(perms, P.MANAGE_MESSAGES) ? h("button.icon.pin", { title: m.pinned ? "Unpin" : "Pin", "aria-label": m.pinned ? "Unpin" : "Pin", onclick: () => this.pin(m) }, m.pinned ? "⊗" : "📌") : null,
      own || has(perms, P.MANAGE_MESSAGES) ? h("button.icon.delete", { title: "Delete", "aria-label": "Delete", onclick: () => this.remove(m) }, "🗑") : null);
    return h("li.message", { "data-id": m.id, class: [own && "own", mentioned && "mentioned", m.pinned && "pinned"].filter(Boolean).join(" ") || null },
      m.reply_to ? h("div.reply-ref", "↪ ", parent ? [h("strong", nameOf(parent.author)), " ", this.render(parent.content)] : "a message") : null,
      avatar(this.store.users.get(m.author.id) || m.author),
      h("div.meta", h("strong.author", nameOf(this.store.users.get(m.author.id) || m.author)),
        h("time.time", { datetime: m.created_at, title: new Date(m.created_at).toLocaleString() }, timeOf(m.created_at)),
        m.edited_at ? h("span.edited", "(edited)") : null, m.pinned ? h("span.pinned-mark", { title: "Pinned" }, "📌") : null),
      editing ? this.editBox(m) : m.content ? h("div.content", this.render(m.content)) : null,
      attachments(m),
      m.embeds?.length && !(m.flags & SUPPRESS_EMBEDS) ? h("div.embeds", m.embeds.map((e) => embed(e))) : null,
      this.app.threads?.link(m),
      m.reactions?.length ? h("div.reactions", m.reactions.map((r) =>
        h("button.reaction", { "data-emoji": r.emoji, "aria-pressed": String(r.me), class: r.me ? "me" : null, onclick: () => this.toggleReaction(m, r.emoji) }, reactionFace(r.emoji), ` ${r.count}`))) : null,
      actions);
  }

  // Content as text nodes, with <@id> shown as the user's name.
  render(content) {
    const parts = [];
    let last = 0;
    for (const match of content.matchAll(MENTION)) {
      parts.push(expand(content.slice(last, match.index)));
      const user = this.store.users.get(match[1]);
      parts.push(h("span.mention", { class: match[1] === this.store.me?.id ? "me" : null }, `@${user ? nameOf(user) : "unknown"}`));
      last = match.index + match[0].length;
    }
    parts.push(expand(content.slice(last)));
    return parts;
  }

  editBox(m) {
    const box = h("textarea.edit-box", { maxlength: 4000, "aria-label": "Edit message", value: this.editing.text,
      oninput: (e) => { this.editing.text = e.target.value; },
      onkeydown: (e) => {
        if (e.key === "Escape") { this.editing = null; this.drawMessages(); this.input.focus(); }
        if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); this.saveEdit(m); }
      } });
    queueMicrotask(() => { box.focus(); box.setSelectionRange(box.value.length, box.value.length); });
    return h("div.editing", box, h("small", "Enter to save, Escape to cancel"));
  }

  startEdit(m) { this.editing = { id: m.id, text: m.content }; this.drawMessages(); }

  async saveEdit(m) {
    const text = this.editing.text;
    this.editing = null;
    if (text.trim() && text !== m.content) {
      try { await this.api.call("PATCH", `/channels/${m.channel_id}/messages/${m.id}`, { content: text }); } catch (e) { toast(e.message); }
    }
    this.drawMessages();
    this.input.focus();
  }

  async remove(m) {
    if (!confirm("Delete this message?")) return;
    try { await this.api.call("DELETE", `/channels/${m.channel_id}/messages/${m.id}`); } catch (e) { toast(e.message); }
  }

  async pin(m) {
    try { await this.api.call(m.pinned ? "DELETE" : "PUT", `/channels/${m.channel_id}/pins/${m.id}`); } catch (e) { toast(e.message); }
  }

  async toggleReaction(m, emoji) {
    const mine = m.reactions?.find((r) => r.emoji === emoji)?.me;
    const path = `/channels/${m.channel_id}/messages/${m.id}/reactions/${encodeURIComponent(emoji)}/@me`;
    try { await this.api.call(mine ? "DELETE" : "PUT", path); } catch (e) { toast(e.message); }
  }

  pickReaction(m) { pickEmoji(this.store, m.server_id, "Add a reaction", (_, reaction) => this.toggleReaction(m, reaction)); }

  insertEmoji() {
    pickEmoji(this.store, this.channel?.server_id, "Emoji", (text) => {
      const at = this.input.selectionStart ?? this.input.value.length;
      this.input.value = this.input.value.slice(0, at) + text + this.input.value.slice(this.input.selectionEnd ?? at);
      this.input.selectionStart = this.input.selectionEnd = at + text.length;
      this.input.focus();
    });
  }

  startReply(m) { this.replyTo = m; this.drawReply(); this.input.focus(); }

  drawReply() {
    replace(this.replyBar, this.replyTo ? [
      h("span", "Replying to ", h("strong", nameOf(this.replyTo.author))),
      h("button.icon", { "aria-label": "Cancel reply", onclick: () => { this.replyTo = null; this.drawReply(); } }, "✕")] : []);
    this.replyBar.hidden = !this.replyTo;
  }

  async showPins() {
    if (!this.channelId) return;
    try {
      const pins = await this.api.call("GET", `/channels/${this.channelId}/pins`);
      dialog("Pinned messages", pins.length ? h("ol.pins", pins.map((m) =>
        h("li", h("strong", nameOf(m.author)), " ", this.render(m.content)))) : h("p", "Nothing is pinned here."));
    } catch (e) { toast(e.message); }
  }

  // Send over REST with a nonce: a retry after a lost answer never posts twice.
  async send() {
    const content = this.input.value;
    if ((!content.trim() && !this.files.files.length) || !this.channelId) return;
    const item = { nonce: crypto.randomUUID().replaceAll("-", "").slice(0, 24), content, channelId: this.channelId, reply_to: this.replyTo?.id, files: this.files.take() };
    this.input.value = "";
    this.replyTo = null;
    this.drawReply();
    this.hideSuggestions();
    const list = this.store.pending.get(item.channelId) || [];
    this.store.pending.set(item.channelId, [...list, item]);
    this.stick = true;
    this.drawMessages();
    await this.post(item);
  }

  async post(item) {
    try {
      const m = item.files.length ? await upload(this.api, item) : await this.api.call("POST", `/channels/${item.channelId}/messages`,
        { content: item.content, nonce: item.nonce, reply_to: item.reply_to ?? null });
      this.store.apply("MESSAGE_CREATE", m);
    } catch (e) {
      item.failed = true;
      item.error = e.message;
      toast(e.message);
      this.store.changed("pending", { channelId: item.channelId });
    }
  }

  retry(item) { item.failed = false; this.drawMessages(); this.post(item); }

  scrolled() {
    const s = this.scroller;
    this.stick = s.scrollHeight - s.scrollTop - s.clientHeight < 40;
    if (s.scrollTop < 200 && this.channelId) this.store.loadOlder(this.channelId).catch((e) => toast(e.message));
    this.maybeAck();
  }

  // The channel counts as read when its newest message is in view and the page has focus.
  maybeAck() {
    const read = this.store.reads.get(this.channelId);
    const last = this.store.messages.get(this.channelId)?.list.at(-1);
    if (!read || !last || !this.stick || document.visibilityState !== "visible") return;
    if (cmpId(last.id, read.last_read_id) <= 0 || this.acking === last.id) return;
    this.acking = last.id;
    this.api.call("POST", `/channels/${this.channelId}/messages/${last.id}/ack`).catch(() => {}).finally(() => { this.acking = null; });
  }

  typed() {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 200)}px`;
    this.autocomplete();
    const now = Date.now();
    if (this.input.value && now - this.lastTyping > 5000 && this.channelId) {
      this.lastTyping = now;
      this.api.call("POST", `/channels/${this.channelId}/typing`).catch(() => {});
    }
  }

  drawTyping() {
    const typing = this.store.typing.get(this.channelId);
    const now = Date.now();
    const names = [];
    for (const [id, until] of typing || []) {
      if (until < now) typing.delete(id);
      else names.push(nameOf(this.store.users.get(id)));
    }
    this.typingLine.textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
  }

  // Mentions: "@ad" before the caret offers the channel's people; Tab/Enter picks.
  candidates() {
    const c = this.channel;
    if (c?.type === "dm" || isGroup(c)) return c.recipients || [];
    return [...(this.store.members.get(c?.server_id)?.values() || [])].map((m) => m.user);
  }

  autocomplete() {
    const before = this.input.value.slice(0, this.input.selectionStart);
    const match = /(^|\s)@([a-z0-9_.]{0,32})$/i.exec(before);
    if (!match) return this.hideSuggestions();
    const q = match[2].toLowerCase();
    const items = this.candidates().filter((u) => u.username.startsWith(q) || (u.display_name || "").toLowerCase().startsWith(q)).slice(0, 8);
    if (!items.length) return this.hideSuggestions();
    this.suggest = { start: before.length - q.length - 1, items, index: 0 };
    this.drawSuggestions();
  }

  drawSuggestions() {
    const { items, index } = this.suggest;
    replace(this.suggestions, items.map((u, i) => h("li", { role: "option", "aria-selected": String(i === index), class: i === index ? "active" : null,
      onmousedown: (e) => { e.preventDefault(); this.suggest.index = i; this.pick(); } }, `@${u.username}`, u.display_name ? h("small", ` ${u.display_name}`) : null)));
    this.suggestions.hidden = false;
  }

  hideSuggestions() { this.suggest = null; this.suggestions.hidden = true; }

  pick() {
    const { start, items, index } = this.suggest;
    const caret = this.input.selectionStart;
    const text = `<@${items[index].id}> `;
    this.input.value = this.input.value.slice(0, start) + text + this.input.value.slice(caret);
    this.input.selectionStart = this.input.selectionEnd = start + text.length;
    this.hideSuggestions();
  }

  key(e) {
    if (this.suggest) {
      const n = this.suggest.items.length;
      if (e.key === "ArrowDown" || e.key === "ArrowUp") { e.preventDefault(); this.suggest.index = (this.suggest.index + (e.key === "ArrowDown" ? 1 : n - 1)) % n; return this.drawSuggestions(); }
      if (e.key === "Enter" || e.key === "Tab") { e.preventDefault(); return this.pick(); }
      if (e.key === "Escape") return this.hideSuggestions();
    }
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); this.send(); }
    if (e.key === "Escape" && this.replyTo) { this.replyTo = null; this.drawReply(); }
    if (e.key === "ArrowUp" && !this.input.value) {
      const mine = this.store.messages.get(this.channelId)?.list.findLast((m) => m.author.id === this.store.me?.id);
      if (mine) { e.preventDefault(); this.startEdit(mine); }
    }
  }
}
