// Permission bits (relay/permissions.py) and the same computation, to show only the controls a
// member may use. The server decides; this only hides what would be refused. BigInt: bit 32.

export const P = Object.fromEntries([
  "VIEW_CHANNEL", "SEND_MESSAGES", "READ_MESSAGE_HISTORY", "ADD_REACTIONS", "ATTACH_FILES",
  "EMBED_LINKS", "MENTION_EVERYONE", "MANAGE_MESSAGES", "MANAGE_CHANNELS", "MANAGE_ROLES",
  "MANAGE_SERVER", "CREATE_INVITE", "MANAGE_NICKNAMES", "CHANGE_NICKNAME", "KICK_MEMBERS",
  "BAN_MEMBERS", "MODERATE_MEMBERS", "VIEW_AUDIT_LOG", "CONNECT", "SPEAK", "STREAM",
  "MUTE_MEMBERS", "DEAFEN_MEMBERS", "MOVE_MEMBERS", "BYPASS_SLOWMODE", "ADMINISTRATOR",
  "CREATE_EMOJIS", "MANAGE_EMOJIS", "CREATE_THREADS", "SEND_MESSAGES_IN_THREADS",
  "MANAGE_THREADS", "MANAGE_WEBHOOKS", "VIDEO",
].map((name, bit) => [name, 1n << BigInt(bit)]));

export const ALL = Object.values(P).reduce((a, b) => a | b, 0n);
const KEEP_TIMED_OUT = P.VIEW_CHANNEL | P.READ_MESSAGE_HISTORY;
const DM = P.VIEW_CHANNEL | P.SEND_MESSAGES | P.READ_MESSAGE_HISTORY | P.ADD_REACTIONS | P.ATTACH_FILES | P.EMBED_LINKS;

// What `me` may do in `server` (a channel object: there). `member` from the member list.
export function compute(server, member, userId, channel = null) {
  if (channel?.type === "dm" || channel?.type === "group_dm") return DM;
  if (!server) return 0n;
  if (server.owner_id === userId) return ALL;
  const roleIds = member?.roles || [];
  let perms = BigInt(server.roles.get(server.id)?.permissions || "0");
  for (const id of roleIds) perms |= BigInt(server.roles.get(id)?.permissions || "0");
  if (perms & P.ADMINISTRATOR) return ALL;
  if (channel) {
    const ows = channel.permission_overwrites || [];
    const apply = (o) => { perms = (perms & ~BigInt(o.deny)) | BigInt(o.allow); };
    const everyone = ows.find((o) => o.type === "role" && o.id === server.id);
    if (everyone) apply(everyone);
    let allow = 0n, deny = 0n;
    for (const o of ows) if (o.type === "role" && o.id !== server.id && roleIds.includes(o.id)) { allow |= BigInt(o.allow); deny |= BigInt(o.deny); }
    apply({ allow, deny });
    const own = ows.find((o) => o.type === "member" && o.id === userId);
    if (own) apply(own);
    if (!(perms & P.VIEW_CHANNEL)) return 0n;
  }
  const until = member?.communication_disabled_until;
  if (until && new Date(until) > new Date()) perms &= KEEP_TIMED_OUT;
  return perms;
}

export const has = (perms, bit) => (perms & bit) === bit;
