// Group DMs (docs/servers.md): make one with several people, rename it, add and remove people
// (the owner), leave. The list and the members pane follow CHANNEL_* and
// CHANNEL_RECIPIENT_* events through the Store.

import { dialog, h, nameOf, toast } from "../dom.js";

export const isGroup = (c) => c?.type === "group_dm";

export function groupName(c, meId) {
  return c.name || c.recipients?.filter((u) => u.id !== meId).map(nameOf).join(", ") || "empty group";
}

// People one may add: those of one's servers seen so far (members loaded), and DM partners.
function known(store, except) {
  const skip = new Set([store.me?.id, ...except]);
  return [...store.users.values()].filter((u) => !skip.has(u.id) && !u.bot).sort((a, b) => a.username.localeCompare(b.username));
}

function checkboxes(users) {
  return h("ul.people-picker", users.map((u) => h("li", h("label", h("input", { type: "checkbox", value: u.id, "data-username": u.username }), ` ${nameOf(u)} (@${u.username})`))));
}

const checked = (root) => [...root.querySelectorAll("input[type=checkbox]:checked")].map((el) => el.value);

// The member lists of one's servers not loaded yet (after a reload only the open one is).
async function loadPeople(store) {
  await Promise.all([...store.servers.keys()].filter((id) => !store.members.has(id)).map((id) => store.loadMembers(id).catch(() => {})));
}

export async function newGroupDialog(shell) {
  const { api, store } = shell;
  await loadPeople(store);
  const name = h("input#group-name", { maxlength: 100, placeholder: "name (optional)", "aria-label": "Group name" });
  const people = checkboxes(known(store, []));
  const d = dialog("New group DM", h("form#new-group-form", { onsubmit: async (e) => {
    e.preventDefault();
    const ids = checked(people);
    if (ids.length < 2) return toast("Pick at least two people");
    try {
      const c = await api.call("POST", "/users/@me/channels", { recipients: ids, name: name.value.trim() || null });
      store.apply("CHANNEL_CREATE", c);
      d.close();
      shell.openServer("@me");
      shell.openChannel(c.id);
    } catch (err) { toast(err.message); }
  } }, name, h("p.hint", "Pick 2 to 9 people who share a server with you."), people, h("button.primary#create-group", { type: "submit" }, "Create")));
}

export async function manageGroupDialog(shell, c) {
  const { api, store } = shell;
  if (c.owner_id === store.me?.id) await loadPeople(store);
  const me = store.me?.id;
  const owner = c.owner_id === me;
  const act = (fn) => async () => { try { await fn(); d.close(); } catch (err) { toast(err.message); } };
  const name = h("input#group-rename", { maxlength: 100, value: c.name || "", "aria-label": "Group name" });
  const add = checkboxes(known(store, c.recipients.map((u) => u.id)));
  const d = dialog(groupName(c, me),
    h("form.row", { onsubmit: (e) => { e.preventDefault(); act(() => api.call("PATCH", `/channels/${c.id}`, { name: name.value.trim() || null }))(); } },
      name, h("button#rename-group", { type: "submit" }, "Rename")),
    h("h3", "People"),
    h("ul.group-people", c.recipients.map((u) => h("li", { "data-user": u.id }, nameOf(u), u.id === c.owner_id ? " 👑" : "",
      owner && u.id !== me ? h("button.danger.remove-recipient", { onclick: act(() => api.call("DELETE", `/channels/${c.id}/recipients/${u.id}`)) }, "Remove") : null))),
    owner ? [h("h3", "Add people"), add, h("button#add-recipients", { onclick: act(async () => {
      for (const id of checked(add)) await api.call("PUT", `/channels/${c.id}/recipients/${id}`);
    }) }, "Add")] : null,
    h("p", h("button.danger#leave-group", { onclick: act(() => api.call("DELETE", `/channels/${c.id}`)) }, "Leave group")));
}
