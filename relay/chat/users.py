"""Users: one's own profile, keys and logins, and anyone's public profile.

Logging in, tokens and password hashing are the account service's (relay.accounts); these
operations use it where a change needs it (a new password is hashed there, and ends every
other login).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay import crypto
from relay.chat.args import field_error, snowflake
from relay.chat.objects import LoginSession, iso, key_out, me_out, user_out
from relay.errors import Forbidden, NotFound
from relay.storage.access import now_ms

if TYPE_CHECKING:
    from relay.accounts import Accounts, Principal
    from relay.chat import commands
    from relay.chat.context import Chat
    from relay.chat.objects import Key, Me, User
    from relay.storage.users import UserRow


def public_key(text: str) -> bytes:
    """An Ed25519 public key from its base64 (400 invalid_field otherwise)."""
    raw = crypto.b64decode_exact(text, 32)
    if raw is None:
        raise field_error("public_key", "must be standard base64 of a 32-byte Ed25519 key")
    return raw


def _unknown_user() -> NotFound:
    return NotFound("unknown user", code="unknown_user")


async def _load(chat: Chat, user_id: int) -> UserRow:
    user = await chat.store.read(chat.q.users.get_user, user_id)
    if user is None:  # the account was deleted while a token was still live
        raise _unknown_user()
    return user


async def me_of(chat: Chat, user: UserRow) -> Me:
    """The user's own object, with their keys."""
    return me_out(user, await chat.store.read(chat.q.users.list_keys, user.id))


async def me(chat: Chat, user_id: int) -> Me:
    return await me_of(chat, await _load(chat, user_id))


async def update_me(
    chat: Chat, accounts: Accounts, who: Principal, data: commands.UpdateMe, ip: str
) -> Me:
    """Change one's display name or password. Changing an existing password needs the current
    one (403 invalid_credentials), and ends every other login of the user."""
    current = await _load(chat, who.user_id)
    new_hash = None
    if isinstance(data.password, str):
        if current.password_hash is not None:
            if not isinstance(data.current_password, str):
                raise field_error("current_password", "required to change the password")
            given = data.current_password
            if not await accounts.verify_password(current.password_hash, given, ip):
                raise Forbidden("current_password is wrong", code="invalid_credentials")
        new_hash = await accounts.hash_password(data.password, ip)
    display_name = data.display_name if isinstance(data.display_name, str) else None
    updated = await chat.store.write(
        chat.q.users.update_user,
        who.user_id,
        now_ms(),
        display_name=display_name,
        clear_display_name=data.display_name is None,
        password_hash=new_hash,
    )
    if new_hash is not None:
        await accounts.revoke_all(who.user_id, "password_changed", keep=who.session_id)
    return await me_of(chat, updated)


async def add_key(chat: Chat, user_id: int, data: commands.AddKey) -> Key:
    """Another login key (422 once the user has `max_keys_per_user`)."""
    key = await chat.store.write(
        chat.q.users.add_key,
        chat.store.ids.next(),
        user_id,
        public_key(data.public_key),
        now_ms(),
        chat.settings.max_keys_per_user,
    )
    return key_out(key)


async def get(chat: Chat, user_id: str) -> User:
    """Anyone's public profile."""
    user = await chat.store.read(chat.q.users.get_user, snowflake(user_id, "user"))
    if user is None:
        raise _unknown_user()
    return user_out(user)


async def logins(chat: Chat, who: Principal) -> list[LoginSession]:
    """The user's live logins, the one asking marked `current`."""
    rows = await chat.store.read(chat.q.users.list_sessions, who.user_id, now_ms())
    return [
        LoginSession(
            id=str(s.id),
            created_at=iso(s.created_at),
            last_used_at=iso(s.last_used_at),
            expires_at=iso(s.expires_at),
            user_agent=s.user_agent,
            ip=s.ip,
            current=s.id == who.session_id,
        )
        for s in rows
    ]
