// Server settings for owners and moderators: invites, roles and their permissions, channels
// and categories with their overwrites, members (roles, kick, ban, timeout), bans, the audit
// log; and for everyone: leave. Each tab shows only if the member's permissions allow it.

import { cmpId, dialog, h, nameOf, replace, toast } from "../dom.js";
import { P, has } from "../perms.js";
import { iconTab } from "./avatars.js";
import { emojiTab } from "./emoji.js";

const EDITABLE = Object.keys(P);

export function serverSettings(shell, server) {
  const { api, store } = shell;
  const perms = shell.myPerms();
  const isOwner = server.owner_id === store.me?.id;
  const body = h("div.tab-body#settings-body");
  const tabs = [
    ["Invites", P.CREATE_INVITE, invites],
    ["Roles", P.MANAGE_ROLES, roles],
    ["Channels", P.MANAGE_CHANNELS, channels],
    ["Members", P.KICK_MEMBERS | P.BAN_MEMBERS | P.MODERATE_MEMBERS | P.MANAGE_ROLES, members],
    ["Bans", P.BAN_MEMBERS, bans],
    ["Audit log", P.VIEW_AUDIT_LOG, audit],
    ["Icon", P.MANAGE_SERVER, () => iconTab(shell, server)],
    ["Emoji", P.CREATE_EMOJIS | P.MANAGE_EMOJIS, function emoji() { return emojiTab(shell, server, perms, () => show(emoji)); }],
  ].filter(([, need]) => (perms & need) !== 0n);
  const show = async (fn) => {
    server = store.servers.get(server.id) || server;  // events may have replaced it
    replace(body, h("p", "Loading…")); try { replace(body, await fn()); } catch (e) { replace(body, h("p.error", e.message)); } };
  const leave = isOwner
    ? h("button.danger#delete-server", { onclick: async () => { if (confirm(`Delete ${server.name} and everything in it?`)) { await api.call("DELETE", `/servers/${server.id}`).catch((e) => toast(e.message)); d.close(); } } }, "Delete server")
    : h("button.danger#leave-server", { onclick: async () => { if (confirm(`Leave ${server.name}?`)) { await api.call("DELETE", `/servers/${server.id}/members/@me`).catch((e) => toast(e.message)); d.close(); } } }, "Leave server");
  const d = dialog(`${server.name}: settings`,
    h("div.tabs", { role: "tablist" }, tabs.map(([name, , fn]) => h("button.tab", { role: "tab", "data-tab": name, onclick: () => show(fn) }, name))),
    body, h("p", leave));
  d.root.classList.add("wide");
  if (tabs.length) show(tabs[0][2]);

  async function invites() {
    const list = has(perms, P.MANAGE_SERVER) ? await api.call("GET", `/servers/${server.id}/invites`) : [];
    return h("div",
      h("button#new-invite", { onclick: () => shell.invite() }, "New invite link"),
      h("ul", list.map((i) => h("li", `${i.code} · ${i.uses} uses`, i.expires_at ? ` · until ${new Date(i.expires_at).toLocaleString()}` : "",
        h("button", { onclick: async () => { await api.call("DELETE", `/invites/${i.code}`).catch((e) => toast(e.message)); show(invites); } }, "Delete")))));
  }

  function permissionBoxes(mask, name) {
    return h("div.perm-grid", EDITABLE.map((p) => h("label", h("input", { type: "checkbox", name, value: p, checked: (BigInt(mask) & P[p]) !== 0n }), ` ${p}`)));
  }
  const maskOf = (form, name) => [...form.querySelectorAll(`input[name=${name}]:checked`)].reduce((m, el) => m | P[el.value], 0n).toString();

  async function roles() {
    const list = [...server.roles.values()].sort((a, b) => b.position - a.position);
    const editor = h("div.role-editor");
    const edit = (role) => {
      const name = h("input", { value: role.name, maxlength: 100, "aria-label": "Role name" });
      const form = h("form", { onsubmit: async (e) => {
        e.preventDefault();
        const patch = { permissions: maskOf(form, "perm") };
        if (role.id !== server.id) patch.name = name.value;
        try { await api.call("PATCH", `/servers/${server.id}/roles/${role.id}`, patch); toast("Saved"); } catch (err) { toast(err.message); }
      } }, role.id === server.id ? h("strong", "@everyone") : name, permissionBoxes(role.permissions, "perm"),
      h("button.primary", { type: "submit" }, "Save"),
      role.id !== server.id ? h("button.danger", { type: "button", onclick: async () => { await api.call("DELETE", `/servers/${server.id}/roles/${role.id}`).catch((e) => toast(e.message)); show(roles); } }, "Delete role") : null);
      replace(editor, form);
    };
    return h("div.split",
      h("ul.role-list", list.map((r) => h("li", h("button", { onclick: () => edit(r) }, r.id === server.id ? "@everyone" : r.name))),
        h("li", h("button#new-role", { onclick: async () => { try { const r = await api.call("POST", `/servers/${server.id}/roles`, { name: "new role" }); store.apply("ROLE_CREATE", { server_id: server.id, role: r }); show(roles); } catch (e) { toast(e.message); } } }, "+ New role"))),
      editor);
  }

  async function channels() {
    const { top, groups } = shell.channelsOf(server);
    const all = [...top, ...groups.flatMap((g) => [g.cat, ...g.children])];
    const name = h("input#new-channel-name", { maxlength: 100, required: true, placeholder: "channel-name", "aria-label": "Channel name" });
    const type = h("select#new-channel-type", { "aria-label": "Type" }, ["text", "voice", "category"].map((t) => h("option", { value: t }, t)));
    const parent = h("select#new-channel-parent", { "aria-label": "Category" }, h("option", { value: "" }, "no category"), groups.map((g) => h("option", { value: g.cat.id }, g.cat.name)));
    const editor = h("div.overwrite-editor");
    const overwrites = (c) => {
      const targets = [...server.roles.values()].map((r) => ({ id: r.id, type: "role", label: r.id === server.id ? "@everyone" : r.name }))
        .concat([...(store.members.get(server.id)?.values() || [])].map((m) => ({ id: m.user.id, type: "member", label: `@${m.user.username}` })));
      const pickTarget = h("select", { "aria-label": "Role or member" }, targets.map((t, i) => h("option", { value: i }, t.label)));
      const grid = h("div");
      const drawGrid = () => {
        const t = targets[pickTarget.value];
        const ow = c.permission_overwrites.find((o) => o.id === t.id) || { allow: "0", deny: "0" };
        replace(grid, h("table.overwrites", h("tr", h("th", "permission"), h("th", "allow"), h("th", "deny")),
          EDITABLE.map((p) => h("tr", h("td", p),
            h("td", h("input", { type: "checkbox", name: "allow", value: p, checked: (BigInt(ow.allow) & P[p]) !== 0n, "aria-label": `allow ${p}` })),
            h("td", h("input", { type: "checkbox", name: "deny", value: p, checked: (BigInt(ow.deny) & P[p]) !== 0n, "aria-label": `deny ${p}` }))))));
      };
      pickTarget.onchange = drawGrid;
      drawGrid();
      const form = h("form", { onsubmit: async (e) => {
        e.preventDefault();
        const t = targets[pickTarget.value];
        try {
          await api.call("PUT", `/channels/${c.id}/permissions/${t.id}`, { type: t.type, allow: maskOf(form, "allow"), deny: maskOf(form, "deny") });
          toast("Saved");
        } catch (err) { toast(err.message); }
      } }, h("h4", `Overwrites of ${c.name}`), pickTarget, grid, h("button.primary", { type: "submit" }, "Save overwrite"));
      replace(editor, form);
    };
    return h("div",
      h("form.row", { onsubmit: async (e) => {
        e.preventDefault();
        try {
          await api.call("POST", `/servers/${server.id}/channels`, { name: name.value.trim(), type: type.value, parent_id: type.value !== "category" && parent.value ? parent.value : null });
          show(channels);
        } catch (err) { toast(err.message); }
      } }, name, type, parent, h("button.primary#create-channel", { type: "submit" }, "Create")),
      h("ul.channel-admin", all.map((c) => h("li", c.type === "category" ? h("strong", c.name) : `${c.parent_id ? "  " : ""}${c.type === "voice" ? "🔊" : "#"} ${c.name}`,
        h("button", { onclick: () => move(c, -1) , "aria-label": `Move ${c.name} up` }, "↑"),
        h("button", { onclick: () => move(c, 1), "aria-label": `Move ${c.name} down` }, "↓"),
        has(perms, P.MANAGE_ROLES) ? h("button", { onclick: () => overwrites(c) }, "Permissions") : null,
        h("button.danger", { onclick: async () => { if (confirm(`Delete ${c.name}?`)) { await api.call("DELETE", `/channels/${c.id}`).catch((e) => toast(e.message)); show(channels); } } }, "Delete")))),
      editor);
    async function move(c, delta) {
      try { await api.call("PATCH", `/channels/${c.id}`, { position: Math.max(0, c.position + delta) }); show(channels); } catch (e) { toast(e.message); }
    }
  }

  async function members() {
    await store.loadMembers(server.id);
    const list = [...store.members.get(server.id).values()].sort((a, b) => cmpId(a.user.id, b.user.id));
    const roleList = [...server.roles.values()].filter((r) => r.id !== server.id);
    const reason = () => { const r = prompt("Reason (for the audit log)", ""); return r === null ? null : { "X-Audit-Log-Reason": encodeURIComponent(r) }; };
    const act = (fn) => async () => { try { await fn(); show(members); } catch (e) { toast(e.message); } };
    return h("ul.member-admin", list.filter((m) => m.user.id !== store.me?.id && m.user.id !== server.owner_id).map((m) => h("li", { "data-user": m.user.id },
      h("strong", nameOf(m.user)), ` @${m.user.username}`,
      m.communication_disabled_until ? h("em", ` timed out until ${new Date(m.communication_disabled_until).toLocaleString()}`) : null,
      has(perms, P.MANAGE_ROLES) ? h("span.roles", roleList.map((r) => h("label", h("input", { type: "checkbox", checked: m.roles.includes(r.id),
        onchange: act(() => api.call(m.roles.includes(r.id) ? "DELETE" : "PUT", `/servers/${server.id}/members/${m.user.id}/roles/${r.id}`)) }), ` ${r.name}`))) : null,
      has(perms, P.MODERATE_MEMBERS) ? h("button.timeout", { onclick: act(async () => {
        const minutes = prompt("Time out for how many minutes? (0 ends it)", "10");
        if (minutes === null) return;
        const until = Number(minutes) > 0 ? new Date(Date.now() + Number(minutes) * 60_000).toISOString() : null;
        await api.call("PATCH", `/servers/${server.id}/members/${m.user.id}`, { communication_disabled_until: until });
      }) }, "Timeout") : null,
      has(perms, P.KICK_MEMBERS) ? h("button.kick.danger", { onclick: act(async () => { const headers = reason(); if (headers) await api.call("DELETE", `/servers/${server.id}/members/${m.user.id}`, undefined, { headers }); }) }, "Kick") : null,
      has(perms, P.BAN_MEMBERS) ? h("button.ban.danger", { onclick: act(async () => { const headers = reason(); if (headers) await api.call("PUT", `/servers/${server.id}/bans/${m.user.id}`, { delete_message_days: 0 }, { headers }); }) }, "Ban") : null)));
  }

  async function bans() {
    const list = await api.call("GET", `/servers/${server.id}/bans?limit=100`);
    return list.length ? h("ul", list.map((b) => h("li", h("strong", nameOf(b.user)), b.reason ? ` — ${b.reason}` : "",
      h("button", { onclick: async () => { await api.call("DELETE", `/servers/${server.id}/bans/${b.user.id}`).catch((e) => toast(e.message)); show(bans); } }, "Unban")))) : h("p", "Nobody is banned.");
  }

  async function audit() {
    const list = await api.call("GET", `/servers/${server.id}/audit-log?limit=100`);
    const who = (id) => nameOf(store.users.get(id)) || id;
    const target = (id) => {  // a member, role or channel of this server, by name where known
      if (!id) return "";
      if (store.users.has(id)) return nameOf(store.users.get(id));
      if (server.roles.has(id)) return id === server.id ? "@everyone" : `@${server.roles.get(id).name}`;
      if (server.channels.has(id)) return `#${server.channels.get(id).name}`;
      return id;
    };
    return h("table.audit#audit-log", h("tr", h("th", "when"), h("th", "who"), h("th", "what"), h("th", "target"), h("th", "reason")),
      list.map((e) => h("tr", h("td", new Date(e.created_at).toLocaleString()), h("td", who(e.user_id)), h("td", e.action),
        h("td", target(e.target_id)), h("td", e.reason || ""))));
  }
}
