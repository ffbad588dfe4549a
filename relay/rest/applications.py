"""Application routes (`/applications`: bot accounts, owned by people) and adding a bot to a
server (`/servers/{id}/bots`). Each decodes, calls relay.chat.applications and encodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

from relay.chat import applications as chat_applications
from relay.chat import commands, objects
from relay.rest.apidoc import doc
from relay.rest.http import audit_reason, body, json_response, no_bots, no_content, principal

if TYPE_CHECKING:
    from relay.runtime import Runtime


def applications_blueprint(rt: Runtime) -> Blueprint:
    bp = Blueprint("applications", __name__, url_prefix="/v1/api")

    @bp.post("/applications")
    @doc(
        "Create an application with a bot user; its bot token is in this answer only",
        body=commands.CreateApplication,
        response=objects.ApplicationWithToken,
        status=201,
        errors=("bots_not_allowed", "too_many_applications", "username_taken"),
    )
    async def create_application() -> Response:
        who = no_bots(principal(rt))
        data = await body(commands.CreateApplication)
        app = await chat_applications.create(rt.chat, rt.accounts, who.user_id, data)
        return json_response(app, 201)

    @bp.get("/applications")
    @doc(
        "The caller's applications",
        response=list[objects.Application],
        errors=("bots_not_allowed",),
    )
    async def list_applications() -> Response:
        who = no_bots(principal(rt))
        return json_response(await chat_applications.list_own(rt.chat, who.user_id))

    @bp.get("/applications/<app_id>")
    @doc(
        "One of the caller's applications",
        response=objects.Application,
        errors=("bots_not_allowed", "unknown_application"),
    )
    async def get_application(app_id: str) -> Response:
        who = no_bots(principal(rt))
        return json_response(await chat_applications.get(rt.chat, who.user_id, app_id))

    @bp.patch("/applications/<app_id>")
    @doc(
        "Rename an application (its bot's display name follows) or make it public or private",
        body=commands.UpdateApplication,
        response=objects.Application,
        errors=("bots_not_allowed", "unknown_application"),
    )
    async def update_application(app_id: str) -> Response:
        who = no_bots(principal(rt))
        data = await body(commands.UpdateApplication)
        return json_response(await chat_applications.update(rt.chat, who.user_id, app_id, data))

    @bp.delete("/applications/<app_id>")
    @doc(
        "Delete an application: its bot leaves every server and its sessions close",
        errors=("bots_not_allowed", "unknown_application"),
    )
    async def delete_application(app_id: str) -> Response:
        who = no_bots(principal(rt))
        await chat_applications.delete(rt.chat, rt.accounts, who.user_id, app_id)
        return no_content()

    @bp.post("/applications/<app_id>/bot/reset-token")
    @doc(
        "A new bot token, shown this once: the old one stops working and the bot's gateway "
        "sessions close (4004)",
        response=objects.ApplicationWithToken,
        errors=("bots_not_allowed", "unknown_application"),
    )
    async def reset_bot_token(app_id: str) -> Response:
        who = no_bots(principal(rt))
        app = await chat_applications.reset_token(rt.chat, rt.accounts, who.user_id, app_id)
        return json_response(app)

    @bp.post("/servers/<server_id>/bots")
    @doc(
        "Add an application's bot to the server (MANAGE_SERVER) with a managed role holding "
        "the chosen permissions, at most the caller's own",
        body=commands.AddBot,
        response=objects.BotAdded,
        status=201,
        errors=(
            "unknown_server",
            "unknown_application",
            "missing_permission",
            "role_hierarchy",
            "banned",
            "bot_already_member",
            "too_many_roles",
            "too_many_servers_joined",
        ),
    )
    async def add_bot(server_id: str) -> Response:
        who = principal(rt)
        data = await body(commands.AddBot)
        added = await chat_applications.add_bot(
            rt.chat, who.user_id, server_id, data, audit_reason()
        )
        return json_response(added, 201)

    return bp
