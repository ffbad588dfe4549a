"""Storage rows as the API's JSON objects: IDs and permission masks as strings, times as ISO
8601. One builder per object, shared by the routes and the gateway events that carry it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relay.rest import permission_bodies as pbodies
from relay.rest import server_bodies
from relay.rest.http import iso
from relay.storage.access import now_ms

if TYPE_CHECKING:
    from relay.permissions import Overwrite
    from relay.storage.audit import AuditEntry
    from relay.storage.channels import ChannelRow
    from relay.storage.moderation import BanRow
    from relay.storage.roles import RoleRow
    from relay.storage.servers import (
        DmRow,
        InviteRow,
        MemberRow,
        PublicServer,
        ServerRow,
        ServerState,
        UserBrief,
    )


def id_or_none(value: int | None) -> str | None:
    return None if value is None else str(value)


def server_out(s: ServerRow) -> server_bodies.Server:
    return server_bodies.Server(
        id=str(s.id),
        name=s.name,
        owner_id=str(s.owner_id),
        created_at=iso(s.created_at),
        description=s.description,
        public=s.is_public,
    )


def overwrite_out(o: Overwrite) -> server_bodies.Overwrite:
    return server_bodies.Overwrite(
        id=str(o.target_id), type=o.type, allow=str(o.allow), deny=str(o.deny)
    )


def channel_out(c: ChannelRow) -> server_bodies.Channel:
    return server_bodies.Channel(
        id=str(c.id),
        server_id=id_or_none(c.server_id),
        type=c.type,
        name=c.name,
        topic=c.topic,
        position=c.position,
        parent_id=id_or_none(c.parent_id),
        last_message_id=id_or_none(c.last_message_id),
        created_at=iso(c.created_at),
        rate_limit_per_user=c.rate_limit_per_user,
        permissions_synced=c.permissions_synced,
        permission_overwrites=[overwrite_out(o) for o in c.overwrites],
    )


def role_out(r: RoleRow) -> server_bodies.Role:
    return server_bodies.Role(
        id=str(r.id),
        name=r.name,
        permissions=str(r.permissions),
        color=r.color,
        position=r.position,
        hoist=r.hoist,
        mentionable=r.mentionable,
    )


def server_state_out(state: ServerState) -> server_bodies.ServerWithChannels:
    s = server_out(state.server)
    return server_bodies.ServerWithChannels(
        id=s.id,
        name=s.name,
        owner_id=s.owner_id,
        created_at=s.created_at,
        description=s.description,
        public=s.public,
        channels=[channel_out(c) for c in state.channels],
        roles=[role_out(r) for r in state.roles],
    )


def user_brief_out(u: UserBrief) -> server_bodies.UserBrief:
    return server_bodies.UserBrief(id=str(u.id), username=u.username, display_name=u.display_name)


def dm_out(dm: DmRow) -> server_bodies.DmChannel:
    c = dm.channel
    return server_bodies.DmChannel(
        id=str(c.id),
        server_id=None,
        type=c.type,
        name=c.name,
        topic=c.topic,
        position=c.position,
        parent_id=None,
        last_message_id=id_or_none(c.last_message_id),
        created_at=iso(c.created_at),
        rate_limit_per_user=0,
        permissions_synced=False,
        permission_overwrites=[],
        recipients=[user_brief_out(u) for u in dm.recipients],
    )


def timeout_out(until: int | None) -> str | None:
    """A timeout's end while it lasts; null once it has ended."""
    return iso(until) if until is not None and until > now_ms() else None


def member_out(m: MemberRow) -> server_bodies.Member:
    return server_bodies.Member(
        user=user_brief_out(m.user),
        nickname=m.nickname,
        joined_at=iso(m.joined_at),
        roles=[str(r) for r in m.roles],
        communication_disabled_until=timeout_out(m.communication_disabled_until),
    )


def member_update_out(m: MemberRow) -> pbodies.MemberUpdate:
    return pbodies.MemberUpdate(
        server_id=str(m.server_id),
        user=user_brief_out(m.user),
        nickname=m.nickname,
        roles=[str(r) for r in m.roles],
        communication_disabled_until=timeout_out(m.communication_disabled_until),
    )


def invite_out(i: InviteRow) -> server_bodies.Invite:
    return server_bodies.Invite(
        code=i.code,
        server_id=str(i.server_id),
        inviter_id=str(i.inviter_id),
        max_uses=i.max_uses or 0,
        uses=i.uses,
        expires_at=None if i.expires_at is None else iso(i.expires_at),
        created_at=iso(i.created_at),
    )


def public_server_out(p: PublicServer) -> server_bodies.PublicServer:
    return server_bodies.PublicServer(
        id=str(p.server.id),
        name=p.server.name,
        description=p.server.description,
        member_count=p.member_count,
    )


def ban_out(b: BanRow) -> pbodies.Ban:
    return pbodies.Ban(user=user_brief_out(b.user), reason=b.reason, created_at=iso(b.created_at))


_MASKS = frozenset({"permissions", "allow", "deny"})
_TIMES = frozenset({"communication_disabled_until", "expires_at"})


def _audit_value(key: str, value: Any) -> Any:
    """IDs and masks as strings, times as ISO 8601, like everywhere else in the API."""
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    if key.endswith("_id") or key in _MASKS:
        return str(value)
    if key in _TIMES:
        return iso(value)
    return value


def audit_out(e: AuditEntry) -> pbodies.AuditEntry:
    return pbodies.AuditEntry(
        id=str(e.id),
        user_id=str(e.user_id),
        action=e.action,
        target_id=id_or_none(e.target_id),
        reason=e.reason,
        changes=[
            pbodies.AuditChange(
                key=c.key, old=_audit_value(c.key, c.old), new=_audit_value(c.key, c.new)
            )
            for c in e.changes
        ],
        created_at=iso(e.created_at),
    )
