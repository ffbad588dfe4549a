// Custom emoji (docs/files.md): `<:name:id>` in messages drawn as the image, `name:id`
// reactions likewise; a picker (unicode and the server's own) for reactions and the composer;
// and the server settings' tab to upload, rename and delete them.

import { dialog, h, toast } from "../dom.js";
import { P, has } from "../perms.js";

export const CUSTOM = /<(a?):([A-Za-z0-9_]{2,32}):([1-9][0-9]{0,19})>/g;
const REACTION = /^([A-Za-z0-9_]{2,32}):([1-9][0-9]{0,19})$/;
const UNICODE = ["👍", "❤️", "😂", "🎉", "😮", "😢", "🔥", "👀", "✅", "❌", "🙏", "💯",
  "😀", "😅", "😊", "😍", "🤔", "😎", "😴", "🙃", "😡", "🥳", "👏", "🙌", "💪", "🤝", "👋", "✨",
  "⭐", "🚀", "🍕", "☕", "🐛", "💡", "📌", "⚠️"];

export const emojiUrl = (id) => `/v1/files/emojis/${id}.webp`;

function image(name, id) {
  return h("img.emoji", { src: emojiUrl(id), alt: `:${name}:`, title: `:${name}:`, "data-emoji-id": id });
}

// Text with its custom emoji as images: an array of strings and <img> nodes.
export function expand(text) {
  const parts = [];
  let last = 0;
  for (const m of text.matchAll(CUSTOM)) {
    parts.push(text.slice(last, m.index), image(m[2], m[3]));
    last = m.index + m[0].length;
  }
  parts.push(text.slice(last));
  return parts;
}

// A reaction's face: a unicode emoji as text, `name:id` as the image.
export function reactionFace(emoji) {
  const m = REACTION.exec(emoji);
  return m ? image(m[1], m[2]) : emoji;
}

// The server's emoji, loaded once and kept by SERVER_EMOJIS_UPDATE (Store.emojis).
export async function serverEmojis(store, serverId) {
  if (!serverId) return [];
  if (!store.emojis.has(serverId)) store.emojis.set(serverId, await store.api.call("GET", `/servers/${serverId}/emojis`));
  return store.emojis.get(serverId);
}

// The picker: calls `pick(text, reaction)`: the unicode emoji, or `<:name:id>` and `name:id`.
export async function pickEmoji(store, serverId, title, pick) {
  const custom = await serverEmojis(store, serverId).catch(() => []);
  const d = dialog(title,
    custom.length ? h("section", h("h3", "This server"), h("div.emoji-grid.custom-emoji", custom.map((e) =>
      h("button.emoji", { "aria-label": `:${e.name}:`, "data-emoji-id": e.id,
        onclick: () => { d.close(); pick(`<${e.animated ? "a" : ""}:${e.name}:${e.id}>`, `${e.name}:${e.id}`); } }, image(e.name, e.id))))) : null,
    h("div.emoji-grid", UNICODE.map((e) => h("button.emoji", { "aria-label": e, onclick: () => { d.close(); pick(e, e); } }, e))));
}

// Server settings: the emoji tab (CREATE_EMOJIS to add and manage one's own, MANAGE_EMOJIS all).
export async function emojiTab(shell, server, perms, redraw) {
  const { api, store } = shell;
  store.emojis.delete(server.id);
  const list = await serverEmojis(store, server.id);
  const mine = (e) => has(perms, P.MANAGE_EMOJIS) || e.creator_id === store.me?.id;
  const name = h("input#emoji-name", { required: true, pattern: "[A-Za-z0-9_]{2,32}", maxlength: 32, placeholder: "party_parrot", "aria-label": "Emoji name" });
  const file = h("input#emoji-file", { type: "file", required: true, accept: "image/png,image/jpeg,image/gif,image/webp", "aria-label": "Emoji image" });
  const error = h("p.error", { role: "alert" });
  return h("div",
    h("form.row#emoji-upload", { onsubmit: async (e) => {
      e.preventDefault();
      const f = file.files[0];
      if (f.size > 256 * 1024) { error.textContent = `${f.name} is over 256 KiB`; return; }
      try {
        const bytes = new Uint8Array(await f.arrayBuffer());
        let bin = "";
        for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
        await api.call("POST", `/servers/${server.id}/emojis`, { name: name.value, image: btoa(bin) });
        redraw();
      } catch (err) { error.textContent = err.message; }
    } }, name, file, h("button.primary#add-emoji", { type: "submit" }, "Upload")),
    error,
    h("ul.emoji-admin", list.map((e) => {
      const rename = h("input", { value: e.name, maxlength: 32, "aria-label": `Rename :${e.name}:` });
      return h("li", { "data-emoji-id": e.id }, image(e.name, e.id), mine(e) ? [rename,
        h("button", { onclick: async () => { try { await api.call("PATCH", `/servers/${server.id}/emojis/${e.id}`, { name: rename.value }); redraw(); } catch (err) { toast(err.message); } } }, "Rename"),
        h("button.danger", { onclick: async () => { try { await api.call("DELETE", `/servers/${server.id}/emojis/${e.id}`); redraw(); } catch (err) { toast(err.message); } } }, "Delete")] : h("span", `:${e.name}:`));
    })),
    list.length ? null : h("p.hint", "No custom emoji yet."));
}
