// Search (docs/search.md): a box in the chat header. Filters are words of the query, as in other
// chat clients: from:name, mentions:name, in:channel, has:link|file|image|embed, pinned:true,
// before:/after: a date (YYYY-MM-DD), sort:newest|oldest|relevance; the rest is the text.
// Results show the matched words (the API's highlight ranges); a click jumps to the message.

import { dialog, h, nameOf, timeOf, toast } from "../dom.js";

const EPOCH_MS = 1_767_225_600_000;  // relay/ids.py: a snowflake is (ms - EPOCH) << 22
const HAS = new Set(["link", "file", "image", "embed"]);
const SORTS = new Set(["newest", "oldest", "relevance"]);

// A date as the smallest snowflake id of that moment, for before/after.
function idAt(ms) { return String(BigInt(Math.max(0, Math.floor(ms) - EPOCH_MS)) << 22n); }

// `parse("from:ada deploy* has:link")` -> URLSearchParams for the API, or throws a message.
export function parse(query, { people, channels }) {
  const params = new URLSearchParams();
  const words = [];
  for (const token of query.match(/-?"[^"]*"|\S+/g) || []) {
    const filter = /^(from|mentions|in|has|before|after|sort|pinned):(.+)$/i.exec(token);
    if (!filter) { words.push(token); continue; }
    const [, key, raw] = filter;
    const value = raw.replace(/^[@#]/, "");
    switch (key.toLowerCase()) {
      case "from": case "mentions": {
        const user = people.find((u) => u.username.toLowerCase() === value.toLowerCase() || (u.display_name || "").toLowerCase() === value.toLowerCase());
        if (!user) throw new Error(`No one called ${value} here`);
        params.append(key.toLowerCase() === "from" ? "author_id" : "mentions", user.id);
        break;
      }
      case "in": {
        const channel = channels.find((c) => c.name?.toLowerCase() === value.toLowerCase());
        if (!channel) throw new Error(`No channel #${value}`);
        params.append("channel_id", channel.id);
        break;
      }
      case "has":
        if (!HAS.has(value.toLowerCase())) throw new Error("has: takes link, file, image or embed");
        params.append("has", value.toLowerCase());
        break;
      case "before": case "after": {
        const ms = Date.parse(value);
        if (Number.isNaN(ms)) throw new Error(`${key}: takes a date such as 2026-12-24`);
        // after:DAY means from the next day on; before:DAY before that day starts.
        params.set(key.toLowerCase(), idAt(key.toLowerCase() === "after" ? ms + 86_400_000 - 1 : ms));
        break;
      }
      case "sort":
        if (!SORTS.has(value.toLowerCase())) throw new Error("sort: takes newest, oldest or relevance");
        params.set("sort", value.toLowerCase());
        break;
      case "pinned": params.set("pinned", value.toLowerCase() === "false" ? "false" : "true"); break;
    }
  }
  if (words.length) params.set("content", words.join(" "));
  return params;
}

// Content with the highlight ranges (code point offsets, end excluded) as <mark>s.
export function highlighted(content, ranges) {
  const points = Array.from(content);
  const parts = [];
  let at = 0;
  for (const [start, end] of [...(ranges || [])].sort((a, b) => a[0] - b[0])) {
    if (start < at) continue;
    parts.push(points.slice(at, start).join(""), h("mark", points.slice(start, end).join("")));
    at = end;
  }
  parts.push(points.slice(at).join(""));
  return parts;
}

export class Search {
  constructor(shell) {
    this.shell = shell;
    this.store = shell.store;
    this.api = shell.api;
    this.input = h("input#search-input", { type: "search", maxlength: 600, placeholder: "Search", "aria-label": "Search messages",
      title: "from:name mentions:name in:channel has:link|file|image|embed before:/after:YYYY-MM-DD sort:newest|oldest|relevance pinned:true" });
    this.root = h("form.search#search", { role: "search", onsubmit: (e) => { e.preventDefault(); this.run(this.input.value); } }, this.input);
  }

  async run(query, offset = 0) {
    const chat = this.shell.chat;
    const channel = chat.channel;
    if (!channel || !query.trim()) return;
    const server = channel.server_id ? this.store.servers.get(channel.server_id) : null;
    const people = server ? [...(this.store.members.get(server.id)?.values() || [])].map((m) => m.user) : channel.recipients || [];
    const channels = server ? [...server.channels.values()].filter((c) => c.type === "text") : [];
    let params;
    try { params = parse(query, { people, channels }); } catch (e) { return toast(e.message); }
    params.set("limit", "25");
    if (offset) params.set("offset", String(offset));
    const path = server ? `/servers/${server.id}/messages/search` : `/channels/${channel.id}/messages/search`;
    try {
      const found = await this.api.call("GET", `${path}?${params}`);
      this.show(query, found, offset, server);
    } catch (e) { toast(e.message); }
  }

  show(query, found, offset, server) {
    this.dialog?.close();
    const byId = new Map(found.highlights.map((x) => [x.message_id, x.ranges]));
    const where = (m) => server?.channels.get(m.channel_id)?.name || this.store.threads.get(m.channel_id)?.name;
    const items = found.messages.map((m) => h("li.search-result", { "data-id": m.id },
      h("button.link.jump", { onclick: () => this.jump(m) },
        h("div.meta", where(m) ? h("span.where", `#${where(m)} `) : null, h("strong.author", nameOf(m.author)), " ",
          h("time.time", { datetime: m.created_at }, `${new Date(m.created_at).toLocaleDateString()} ${timeOf(m.created_at)}`)),
        h("div.content", highlighted(m.content, byId.get(m.id))))));
    const more = offset + found.messages.length < found.total_results;
    this.dialog = dialog("Search",
      h("p.search-total#search-total", `${found.total_results} result${found.total_results === 1 ? "" : "s"} for “${query}”`),
      h("ol.search-results#search-results", items),
      more ? h("button#search-more", { onclick: () => this.run(query, offset + found.messages.length) }, "More") : null);
  }

  // Open the message's channel and load pages back to it, then bring it into view.
  async jump(m) {
    this.dialog?.close();
    const chat = this.shell.chat;
    if (!this.store.channel(m.channel_id)) {  // a thread not seen yet
      try { const c = await this.api.call("GET", `/channels/${m.channel_id}`); if (c.type === "thread") this.store.noteThread(c); } catch (e) { return toast(e.message); }
    }
    const thread = this.store.threads.get(m.channel_id);
    const view = thread ? this.shell.threads.view : chat;
    if (thread) await this.shell.threads.open(m.channel_id);
    else if (chat.channelId !== m.channel_id) this.shell.openChannel(m.channel_id);
    const box = this.store.box(m.channel_id);
    try {
      for (let i = 0; i < 100 && !box.loaded; i++) {
        if (!box.early) await this.store.loadHistory(m.channel_id);
        else await new Promise((r) => setTimeout(r, 50));
      }
      // Pages of 50 back to it: the view's history stays one piece from the newest message
      // (no gap to track), at the price of many pages for a very old message.
      for (let page = 0; page < 100 && !box.byId.has(m.id); page++) if (!(await this.store.loadOlder(m.channel_id))) break;
    } catch (e) { return toast(e.message); }
    view.stick = false;
    view.drawMessages();
    const el = view.list.querySelector(`li.message[data-id="${m.id}"]`);
    if (!el) return toast(box.byId.has(m.id) || box.complete ? "That message is gone." : "That message is more than 5,000 messages back: scroll up to reach it.");
    el.classList.add("jumped");
    el.scrollIntoView({ block: "center" });
    view.stick = false;
  }
}
