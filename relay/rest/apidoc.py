"""What each REST route says about itself, for the OpenAPI document (relay.rest.openapi).

A route is described where it is written: `@doc(...)` under its `@bp.<method>(...)` records its
summary, body type, response type and statuses, query parameters and the error codes its
operation raises. The rest is read from the route itself: path parameters from its URL rule,
bearer auth from its calling `principal`, the `X-Audit-Log-Reason` header from its calling
`audit_reason`, an optional body from its calling `optional_body`. `ERRORS` is the one list of
error codes a client can see, with each code's HTTP status and meaning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
Auth = Literal["bearer", "optional", "none"]
ATTRIBUTE = "__relay_doc__"


@dataclass(frozen=True)
class ErrorCode:
    statuses: tuple[int, ...]  # the first is the usual one
    meaning: str


def _e(status: int | tuple[int, ...], meaning: str) -> ErrorCode:
    return ErrorCode(status if isinstance(status, tuple) else (status,), meaning)


# Every `code` of the error object (the gateway shares some). tests/rest/test_openapi.py checks
# that each error raised in relay/ with a literal code is here, with its class's status.
ERRORS: Mapping[str, ErrorCode] = {
    # 400
    "bad_request": _e(400, "the HTTP request is malformed"),
    "missing_body": _e(400, "a JSON request body is required"),
    "malformed_json": _e(400, "the body is not valid JSON"),
    "invalid_field": _e(
        400, "a body field, query parameter or header is invalid: `fields` names it"
    ),
    "invalid_emoji": _e(400, "the emoji is not a single emoji"),
    "not_a_text_channel": _e(400, "the channel does not take messages"),
    "bad_image": _e(400, "an image file is corrupt, truncated, or over the pixel limits"),
    "malformed_form": _e(400, "the multipart/form-data body is malformed"),
    "cannot_dm_self": _e(400, "a DM needs another user"),
    "not_a_group_dm": _e(400, "the channel is not a group DM"),
    "everyone_role": _e(400, "@everyone cannot be moved, deleted, given or taken"),
    "invalid_push_endpoint": _e(400, "a push endpoint must be https to a public address"),
    "invalid_push_keys": _e(400, "keys.p256dh must be a P-256 point, keys.auth 16 bytes"),
    "not_a_voice_channel": _e(400, "the channel is not a voice channel"),
    "not_in_voice": _e(400, "the member is not in a voice channel of this server"),
    # 401
    "missing_token": _e(401, "no Authorization header"),
    "invalid_token": _e(401, "the access token is malformed or not an access token"),
    "token_expired": _e(401, "the access token has expired: refresh it"),
    "session_revoked": _e(401, "the session was revoked (logout, password change) or has expired"),
    "invalid_credentials": _e((401, 403), "wrong username or password (403: current_password)"),
    "account_disabled": _e(403, "the account was disabled by an operator (relay user disable)"),
    "bad_metrics_token": _e(401, "GET /metrics without the metrics token, or with another one"),
    "invalid_challenge": _e(401, "the challenge is unknown, used or expired"),
    "invalid_signature": _e(401, "the challenge or signature is not valid"),
    "invalid_refresh_token": _e(401, "the refresh token is not valid"),
    "refresh_token_reused": _e(401, "the refresh token was used before: the session is revoked"),
    "invalid_bot_token": _e(401, "the bot token is unknown, reset or of a deleted application"),
    "invalid_webhook_token": _e(401, "the webhook URL's token is not the webhook's (reset?)"),
    # 403
    "missing_permission": _e(403, "a permission is missing: `fields.permission` names it"),
    "timed_out": _e(403, "the member is timed out: `fields.permission` is suspended"),
    "role_hierarchy": _e(403, "the target's highest role is at or above the caller's"),
    "not_owner": _e(403, "only the server owner may do this"),
    "not_author": _e(403, "only the message's author may do this"),
    "not_creator": _e(403, "only the room's creator may do this"),
    "banned": _e(403, "the user is banned from this server"),
    "bots_not_allowed": _e(403, "bots cannot use this route (passwords, keys, logins, apps)"),
    "managed_role": _e(403, "a bot's managed role cannot be changed, given or taken by hand"),
    "dm_channel": _e(403, "a DM channel cannot be changed and has no overwrites"),
    "thread_channel": _e(403, "a thread has its parent's overwrites and none of its own"),
    "no_shared_server": _e(403, "the users share no server"),
    "not_group_owner": _e(403, "only the group DM's owner may do this"),
    "thread_locked": _e(403, "the thread is locked: only MANAGE_THREADS may post or change it"),
    # 404
    "unknown_route": _e(404, "no route has this path"),
    "unknown_user": _e(404, "no such user"),
    "unknown_session": _e(404, "no such session of the caller's"),
    "unknown_server": _e(404, "no such server, or the caller is not a member"),
    "unknown_channel": _e(404, "no such channel, or the caller cannot see it"),
    "unknown_message": _e(404, "no such message in this channel"),
    "unknown_role": _e(404, "no such role in this server"),
    "unknown_member": _e(404, "no such member of this server"),
    "unknown_overwrite": _e(404, "no such overwrite on this channel"),
    "unknown_ban": _e(404, "no such ban in this server"),
    "unknown_recipient": _e(404, "no such recipient of this group DM"),
    "unknown_invite": _e(404, "no such invite"),
    "unknown_application": _e(404, "no such application of the caller's (or it is private)"),
    "unknown_webhook": _e(
        404, "no such webhook, or deleted, or in a channel the caller cannot see"
    ),
    "unknown_room": _e(404, "no such room, or a private room of someone else's"),
    "unknown_push_subscription": _e(404, "the caller has no push subscription with this endpoint"),
    "push_disabled": _e(404, "push notifications are off on this server"),
    "unknown_file": _e(404, "no such file, or the URL is tampered with or expired"),
    "unknown_emoji": _e(404, "no such custom emoji in this server"),
    # 405, 408
    "method_not_allowed": _e(405, "the path does not take this method"),
    "request_timeout": _e(408, "the body did not arrive in time"),
    "upload_too_slow": _e(408, "the upload stayed slower than upload_min_rate"),
    # 409
    "username_taken": _e(409, "the username is taken"),
    "voice_channel_full": _e(409, "the voice channel has as many members as it may"),
    "too_many_voice_channels": _e(409, "the server has as many voice channels in use as it may"),
    "key_taken": _e(409, "the public key is registered already"),
    "invite_code_taken": _e(409, "no free invite code was found: retry"),
    "bot_already_member": _e(409, "the bot is a member of the server already"),
    # 410
    "invite_expired": _e(410, "the invite has expired"),
    "invite_exhausted": _e(410, "the invite has been used up"),
    # 413, 415
    "payload_too_large": _e(413, "the body is larger than the server takes (max_body_bytes)"),
    "unsupported_media_type": _e(415, "the body's media type is not taken"),
    "file_too_large": _e(413, "a file is larger than max_upload_bytes"),
    "too_many_files": _e(413, "a message has more than 10 files"),
    "upload_quota": _e(413, "the user's uploads today would pass upload_quota_bytes"),
    # 422
    "too_many_keys": _e(422, "the account holds max_keys_per_user keys"),
    "too_many_servers": _e(422, "the user owns max_servers_owned servers"),
    "too_many_servers_joined": _e(422, "the user is a member of max_servers_joined servers"),
    "too_many_channels": _e(422, "the server has max_channels_per_server channels"),
    "too_many_threads": _e(422, "the channel has max_threads_per_channel threads"),
    "thread_exists": _e(422, "the message has started a thread already"),
    "too_many_recipients": _e(422, "the group DM has max_group_dm_recipients people"),
    "too_many_roles": _e(422, "the server has max_roles_per_server roles"),
    "too_many_applications": _e(422, "the user owns max_applications_per_user applications"),
    "too_many_webhooks": _e(422, "the channel has max_webhooks_per_channel webhooks"),
    "too_many_invites": _e(422, "the server has max_invites_per_server usable invites"),
    "too_many_overwrites": _e(422, "the channel has max_overwrites_per_channel overwrites"),
    "too_many_pins": _e(422, "the channel has max_pins pins"),
    "too_many_emojis": _e(422, "the server has 50 still (or 50 animated) custom emoji"),
    "too_many_reactions": _e(422, "the message has as many different reactions as it may"),
    "too_many_rooms": _e(422, "the user has as many live rooms as they may"),
    "too_many_push_subscriptions": _e(422, "the login has push_subscriptions_per_session"),
    "too_many_notification_settings": _e(422, "the user has max_notification_settings entries"),
    "capacity_exceeded": _e(422, "the server cannot commit that many more clients to rooms"),
    "owner_cannot_leave": _e(422, "the owner cannot leave: delete the server or hand it over"),
    "cannot_time_out": _e(422, "owners and administrators cannot be timed out"),
    "cannot_kick_self": _e(422, "leave instead"),
    "cannot_ban_self": _e(422, "a member cannot ban themselves"),
    # 429
    "rate_limited": _e(429, "too many requests: wait Retry-After seconds"),
    # 500
    "internal_error": _e(500, "a failure of the server's own (logged); the request may be retried"),
    # 503
    "too_many_connections": _e(503, "over max_connections (per IP too): the connection is closed"),
    "unavailable": _e(503, "the server is starting or shutting down"),
    "channel_busy": _e(503, "the channel did not commit in time: retry with the same nonce"),
    "room_busy": _e(503, "the room did not answer in time"),
    "voice_unavailable": _e(503, "cluster mode: the voice channel's process cannot be reached"),
    "insufficient_storage": _e(507, "the server's disk is nearly full: uploads are refused"),
    "rooms_unavailable": _e(503, "app rooms are not available"),
}

ErrorSpec = str | tuple[int, str]  # a code at its usual status, or (status, code)


@dataclass(frozen=True)
class Doc:
    summary: str
    body: Any  # a type msgspec can describe, or None
    responses: Mapping[int, str]  # status: when
    response: Any  # the type of a success body; None: no content
    errors: tuple[ErrorSpec, ...]
    query: Any  # a msgspec Struct whose fields are the query parameters, or None
    auth: Auth | None  # None: bearer if the route calls `principal`, else none
    path: Mapping[str, str]  # where the usual description of a path parameter is wrong


def doc(
    summary: str,
    *,
    body: Any = None,
    response: Any = None,
    status: int | Mapping[int, str] = 200,
    errors: tuple[ErrorSpec, ...] = (),
    query: Any = None,
    auth: Auth | None = None,
    path: Mapping[str, str] | None = None,
) -> Callable[[F], F]:
    """Describe a route for the OpenAPI document.

    Args:
        summary: one line, what the operation does.
        body: the request body's type (what the route hands `body` or `optional_body`).
        response: the success body's type; None for 204 No Content.
        status: the success status, or each success status with when it is given.
        errors: the error codes of what the route does (from ERRORS; `(status, code)` for a
            code that is not at its usual status). Those every route of its kind can give
            (auth, body, query, rate limits) are added.
        query: a msgspec Struct describing the query parameters.
        auth: "optional" for a route that reads a token if one is sent.
        path: descriptions of path parameters that differ from the usual ones.
    """
    statuses = {status: ""} if isinstance(status, int) else dict(status)
    if response is None:  # no body: 204 No Content, and only that
        if set(statuses) - {200, 204}:
            raise ValueError(f"{summary}: a success status without response= is 204")
        statuses = {204: statuses.get(204, "")}
    record = Doc(summary, body, statuses, response, errors, query, auth, dict(path or {}))

    def mark(view: F) -> F:
        setattr(view, ATTRIBUTE, record)
        return view

    return mark


NOT_API = "__relay_not_api__"


def not_api(view: F) -> F:
    """Leave a route out of the OpenAPI document: a page for browsers (the web client), not
    part of the API."""
    setattr(view, NOT_API, True)
    return view


def doc_of(view: Callable[..., Any]) -> Doc | None:
    found = getattr(view, ATTRIBUTE, None)
    return found if isinstance(found, Doc) else None
