// Relay's service worker: served at /sw.js (scope "/"), it only shows Web Push notifications
// (docs/push.md's payload) and opens the channel when one is clicked. It caches nothing.

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));

function describe(d) {
  const who = d.author_name || "Someone";
  const more = d.count > 1 ? ` (${d.count} messages)` : "";
  const why = { dm: "sent you a message", mention: "mentioned you", role: "mentioned your role", everyone: "mentioned everyone" }[d.reason] || "posted";
  return { title: `${who} ${why}${more}`, body: d.content ?? "Open Relay to read it." };
}

self.addEventListener("push", (e) => {
  let d = {};
  try { d = e.data ? e.data.json() : {}; } catch { d = {}; }
  if (d.type !== "message") return;
  const { title, body } = describe(d);
  // One notification per channel (tag): a newer push replaces the older one.
  e.waitUntil(self.registration.showNotification(title, {
    body, tag: `channel-${d.channel_id}`, renotify: true, icon: "/web/icon.svg", data: d,
  }));
});

self.addEventListener("notificationclick", (e) => {
  e.notification.close();
  const d = e.notification.data || {};
  if (!/^[0-9]{1,20}$/.test(d.channel_id || "")) return;
  const server = /^[0-9]{1,20}$/.test(d.server_id || "") ? d.server_id : "@me";
  e.waitUntil((async () => {
    const open = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    const page = open.find((c) => new URL(c.url).origin === self.location.origin);
    if (page) {
      page.postMessage({ type: "open-channel", server_id: server, channel_id: d.channel_id });
      return page.focus();
    }
    return self.clients.openWindow(`/?server=${server}&channel=${d.channel_id}`);
  })());
});
