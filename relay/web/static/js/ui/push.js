// Push notifications (docs/push.md): the service worker (/sw.js) shows them; this module
// subscribes with the server's VAPID key, opens the channel a clicked notification names, and
// holds the notification settings (levels per server and channel, message text shown or not).

import { dialog, h, replace, toast } from "../dom.js";

const LEVELS = [["", "default"], ["all", "all messages"], ["mentions", "mentions only"], ["none", "nothing"]];

export const supported = () => window.isSecureContext && "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;

function bytes(b64url) {
  const bin = atob(b64url.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(b64url.length / 4) * 4, "="));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

// Called once logged in: a notification's click (a message from the worker, or the page it
// opened: /?server=S&channel=C) opens that channel.
export function initPush(app) {
  const params = new URLSearchParams(location.search);
  const channel = params.get("channel");
  if (/^[0-9]{1,20}$/.test(channel || "")) {
    const server = params.get("server") || "@me";
    localStorage.setItem("relay.last", JSON.stringify({ serverId: server, channelId: channel }));
    history.replaceState(null, "", "/");
  }
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker.addEventListener("message", (e) => {
    const d = e.data;
    if (d?.type !== "open-channel" || !app.store.channel(d.channel_id)) return;
    app.shell.openServer(app.store.servers.has(d.server_id) ? d.server_id : "@me");
    app.shell.openChannel(d.channel_id);
  });
}

async function registration() {
  const reg = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
  await navigator.serviceWorker.ready;
  return reg;
}

export async function enablePush(api) {
  if (!supported()) throw new Error("Push needs HTTPS (or localhost) and a browser with the Push API");
  if (await Notification.requestPermission() !== "granted") throw new Error("Notifications are blocked for this site");
  const reg = await registration();
  const { public_key } = await api.call("GET", "/push/vapid-key");
  let sub = await reg.pushManager.getSubscription();
  if (sub && btoa(String.fromCharCode(...new Uint8Array(sub.options.applicationServerKey || []))) !== btoa(String.fromCharCode(...bytes(public_key)))) {
    await sub.unsubscribe();  // made with another server key: useless now
    sub = null;
  }
  sub ??= await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: bytes(public_key) });
  await api.call("POST", "/push/subscriptions", sub.toJSON());
  return sub;
}

export async function disablePush(api) {
  const reg = await navigator.serviceWorker.getRegistration("/");
  const sub = await reg?.pushManager.getSubscription();
  if (!sub) return;
  await api.call("DELETE", "/push/subscriptions", { endpoint: sub.endpoint }).catch((e) => { if (e.status !== 404) throw e; });
  await sub.unsubscribe();
}

async function subscribed() {
  if (!supported()) return false;
  const reg = await navigator.serviceWorker.getRegistration("/");
  return Boolean(await reg?.pushManager.getSubscription());
}

// The notifications dialog (the 🔔 in the account bar).
export async function notificationsDialog(app) {
  const { api, store } = app;
  const status = h("p#push-status", { role: "status" });
  const toggle = h("button.primary#push-toggle");
  const draw = async () => {
    const on = await subscribed().catch(() => false);
    status.textContent = !supported() ? "This browser cannot get push notifications here (HTTPS or localhost is needed)."
      : on ? "Push notifications are on in this browser." : "Push notifications are off in this browser.";
    toggle.textContent = on ? "Turn off" : "Turn on";
    toggle.disabled = !supported();
    toggle.onclick = async () => {
      toggle.disabled = true;
      try { if (on) await disablePush(api); else await enablePush(api); } catch (e) { toast(e.message); }
      await draw();
    };
  };
  const levels = h("div.notification-levels");
  const d = dialog("Notifications", status, toggle, levels);
  await draw();
  try {
    const settings = await api.call("GET", "/users/@me/notification-settings");
    const patch = (body) => api.call("PATCH", "/users/@me/notification-settings", body).then(() => toast("Saved"), (e) => toast(e.message));
    const select = (kind, id, label) => h("label.level", label, " ", h("select", { "data-level": `${kind}:${id}`, "aria-label": `Notifications for ${label}`,
      onchange: (e) => patch({ [kind]: { [id]: { level: e.target.value || null } } }) },
      LEVELS.map(([value, text]) => h("option", { value, selected: (settings[kind][id]?.level || "") === value ? "selected" : null }, text))));
    const channel = app.shell.chat.channel;
    replace(levels,
      h("label", h("input#hide-content", { type: "checkbox", checked: settings.hide_content, onchange: (e) => patch({ hide_content: e.target.checked }) }), " Leave message text out of notifications"),
      h("h3", "Servers"), [...store.servers.values()].map((s) => select("servers", s.id, s.name)),
      channel ? [h("h3", "This channel"), select("channels", channel.id, channel.name ? `#${channel.name}` : "this conversation")] : null);
  } catch (e) { replace(levels, h("p.error", e.message)); }
  return d;
}
