// Avatars and server icons (docs/files.md): shown in the member list, messages and the server
// list, set from the account dialog and the server settings. A user without one gets a circle
// with an initial; message authors carry no avatar, so it comes from the user seen elsewhere.

import { h, nameOf, replace, toast } from "../dom.js";
import { send } from "./files.js";

const IMAGE_TYPES = "image/png,image/jpeg,image/gif,image/webp";

export function avatar(user, size = "small") {
  const name = nameOf(user);
  // Only Relay's own files: a webhook's avatar_url is any URL, which the policy would block.
  return user?.avatar_url?.startsWith("/v1/files/")
    ? h("img.avatar", { class: size, src: user.avatar_url, alt: "", "data-user": user.id })
    : h("span.avatar.initial", { class: size, "aria-hidden": "true", "data-user": user?.id }, name.slice(0, 1).toUpperCase());
}

// An image picker that PUTs the chosen file raw to `path` and hands the answer to `done`.
function imageField(id, label, current, path, api, done, removable) {
  const preview = h("span.image-preview");
  const show = (url) => replace(preview, url ? h("img", { src: url, alt: label }) : h("span.hint", "none"));
  show(current);
  const input = h(`input#${id}`, { type: "file", accept: IMAGE_TYPES, "aria-label": label, onchange: async () => {
    const file = input.files[0];
    if (!file) return;
    try { const obj = await send(api, "PUT", path, file); done(obj); show(obj.avatar_url ?? obj.icon_url); toast("Saved"); } catch (e) { toast(e.message); }
    input.value = "";
  } });
  const remove = h("button.danger", { type: "button", onclick: async () => {
    try { await api.call("DELETE", path); done(null); show(null); toast("Removed"); } catch (e) { toast(e.message); }
  } }, "Remove");
  return h("div.image-field", h("label", { for: id }, label), preview, input, removable ? remove : null);
}

// The account dialog's avatar section.
export function avatarField(app) {
  const { api, store } = app;
  return imageField("avatar-input", "Avatar", store.me?.avatar_url, "/users/@me/avatar", api, (user) => {
    const me = user || { ...store.me, avatar_url: undefined };
    store.apply("USER_UPDATE", me);
  }, true);
}

// The server settings' icon tab (MANAGE_SERVER).
export function iconTab(shell, server) {
  return h("div", imageField("icon-input", "Server icon", server.icon_url, `/servers/${server.id}/icon`, shell.api, (s) => {
    shell.store.apply("SERVER_UPDATE", s || { id: server.id, icon_url: null });
  }, true));
}
