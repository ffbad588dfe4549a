// The account dialog: display name, this browser's login key, and the sessions (revoke any).

import { dialog, h, replace, toast } from "../dom.js";
import * as keys from "../keys.js";
import { avatarField } from "./avatars.js";

export async function accountDialog(app) {
  const { api, store } = app;
  const sessions = h("ul.sessions#sessions");
  const draw = async () => {
    const list = await api.call("GET", "/auth/sessions");
    replace(sessions, list.map((s) => h("li", { "data-session": s.id },
      h("span", `${s.user_agent || "unknown client"} · ${s.ip || ""} · last used ${new Date(s.last_used_at).toLocaleString()}`),
      s.current ? h("strong", " (this one)") : h("button.revoke", { onclick: async () => {
        try { await api.call("DELETE", `/auth/sessions/${s.id}`); await draw(); } catch (e) { toast(e.message); }
      } }, "Revoke"))));
  };
  const display = h("input#display-name", { maxlength: 64, value: store.me?.display_name || "" });
  dialog("Account",
    h("form", { onsubmit: async (e) => {
      e.preventDefault();
      try { store.me = await api.call("PATCH", "/users/@me", { display_name: display.value.trim() || null }); store.noteUser(store.me); toast("Saved"); } catch (err) { toast(err.message); }
    } }, h("label", { for: "display-name" }, "Display name"), display, h("button", { type: "submit" }, "Save")),
    avatarField(app),
    keys.supported() ? h("p", h("button#add-key", { onclick: async () => {
      try { await keys.addKeyToAccount(api, store.me.username); toast("This browser can now log in with its key"); } catch (e) { toast(e.message); }
    } }, "Add a login key for this browser")) : null,
    h("h3", "Sessions"), sessions);
  await draw().catch((e) => toast(e.message));
}
