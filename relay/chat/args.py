"""Checks of a chat operation's arguments that a body's types cannot express: ids given as
text, permission masks, overwrites. Each raises the error the client gets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from relay import permissions as perms
from relay.errors import BadRequest, NotFound
from relay.ids import parse_id
from relay.permissions import Overwrite

if TYPE_CHECKING:
    from relay.chat.commands import OverwriteIn


def field_error(field: str, reason: str) -> BadRequest:
    return BadRequest(f"{field}: {reason}", code="invalid_field", fields={field: reason})


def snowflake(text: str, what: str = "resource") -> int:
    """An id that names the thing acted on (a path segment): anything else is not found."""
    value = parse_id(text)
    if value is None:
        raise NotFound(f"unknown {what}", code=f"unknown_{what}")
    return value


def id_field(text: str, field: str) -> int:
    """An id given in a body or query field: anything else is an invalid field."""
    value = parse_id(text)
    if value is None:
        raise field_error(field, "must be an ID")
    return value


def mask_field(text: str, field: str) -> int:
    """A permission mask from its decimal string; bits that are not defined are refused."""
    value = int(text)  # the body pattern allows digits only, at most 19
    if value & ~perms.ALL:
        raise field_error(field, "has bits that are not defined permissions")
    return value


def overwrite_of(
    target_id: int, kind: Literal["role", "member"], allow: str, deny: str, field: str
) -> Overwrite:
    """An overwrite from its request fields (`field`: where they are, for errors)."""
    prefix = f"{field}." if field else ""
    allow_bits = mask_field(allow, f"{prefix}allow")
    deny_bits = mask_field(deny, f"{prefix}deny")
    if (allow_bits | deny_bits) & perms.P.ADMINISTRATOR:
        raise field_error(field or "allow", "ADMINISTRATOR cannot be allowed or denied per channel")
    return Overwrite(target_id, kind, allow_bits, deny_bits)


def overwrite_in(o: OverwriteIn, field: str) -> Overwrite:
    return overwrite_of(id_field(o.id, f"{field}.id"), o.type, o.allow, o.deny, field)
