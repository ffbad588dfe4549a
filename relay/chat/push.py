"""Web Push delivery: after a message commits, decide who is pushed about it, coalesce, and
send through relay.netfetch (docs/push.md).

Off the send path: the channel actor's commit hands the stored row to `PushNotifier.submit`
(the hub's `on_created` hook), which only puts it in a bounded queue. Three kinds of task,
all owned by `run`'s nursery (in the services tree):

- the planner takes messages from the queue, reads the candidates (a DM's other recipient or
  the server's members, with a subscription on a valid login, and their settings), skips
  those attentive on the gateway (`attentive`, from the hub) and asks relay.chat.notify why
  each of the rest would be pushed; each (user, channel, reason) goes to the coalescer;
- the coalescer allows one push per user and channel per `push_coalesce_s`: the first goes at
  once, what follows in the window is merged (latest message, most important reason, a count)
  and sent when the window ends, by the flusher task;
- `push_workers` delivery tasks check at send time that the user still may see the channel
  (and is still away) and that the message still exists (its text is read then), encrypt for
  each of the user's subscriptions and POST it, with TTL, Urgency and Topic; 429 and 5xx (and
  network failures) are retried with exponential backoff, honouring Retry-After, up to
  `push_max_attempts`; 404 and 410 delete the subscription.

Overflow policy: DROP NEWEST, counted (`dropped`) and logged (the 1st, 2nd, 4th... drop), for
both the message queue and the delivery queue: a flood costs some pushes, never a sender's time
or unbounded memory. The coalescer's windows are bounded the same way (`push_queue` * 8 keys).

Resource handling: `run` owns every task; on shutdown they are cancelled and whatever is still
queued is dropped (pushes are best effort; nothing is half-written). Error handling: a failed
delivery is logged and counted, never raised; a bug in one job is logged with its traceback
and the worker goes on.
"""

from __future__ import annotations

import email.utils
import logging
import os
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import trio

from relay.chat.notify import RANK, Reason, mentions_of, push_reason
from relay.errors import BadRequest, ConfigError
from relay.netfetch import FetchError, Limits, fetch
from relay.netfetch.addresses import parse_ip, refusal
from relay.webpush import MAX_PLAINTEXT, Vapid, check_keys, encrypt

if TYPE_CHECKING:
    from collections.abc import Callable

    from relay.config import Settings
    from relay.netfetch import FetchPolicy
    from relay.storage.areas import Areas
    from relay.storage.messages import AuthorRow, MessageRow
    from relay.storage.push import SubscriptionRow
    from relay.storage.sqlite.db import Store

log = logging.getLogger("relay.push")

MAX_ENDPOINT_CHARS = 2048
MAX_TEXT_CHARS = 1000  # message text in a push (the payload must stay under 4 KiB)
VAPID_FILE = "vapid.pem"
WINDOW_KEYS_PER_QUEUE = 8
_ANSWER = Limits(max_bytes=8192, deadline_s=15.0, max_redirects=0)


def now_ms() -> int:
    return int(time.time() * 1000)


# -- the VAPID key -----------------------------------------------------------------------------


def load_vapid(settings: Settings) -> Vapid:
    """The server's VAPID key: `push_vapid_key` if set, else <data_dir>/vapid.pem, made on first
    start (mode 0600, never overwritten). Blocking file I/O: run in a thread.

    Raises:
        ConfigError: the file cannot be read or is not a P-256 private key.
    """
    if settings.push_vapid_key is not None:
        path = Path(settings.push_vapid_key)
    else:
        folder = Path(settings.data_dir)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / VAPID_FILE
        if not path.exists():
            # Written whole under a temp name, then linked in: cluster nodes sharing a data_dir
            # may start together, and none must read a half-written file; one key wins.
            tmp = folder / f".{VAPID_FILE}.{secrets.token_hex(6)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(Vapid.generate_pem())
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, path)
                    log.info("made a VAPID key for Web Push", extra={"path": str(path)})
                except FileExistsError:
                    pass
            finally:
                tmp.unlink()
    try:
        return Vapid.from_pem(path.read_bytes(), settings.push_vapid_subject)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"push_vapid_key (RELAY_PUSH_VAPID_KEY) {path}: {e}") from None


# -- endpoints and keys, checked when a client subscribes ---------------------------------------


async def check_endpoint(url: str, policy: FetchPolicy) -> str:
    """A push endpoint checked as the fetcher will check it at delivery, plus https only.

    Raises:
        BadRequest("invalid_push_endpoint"): saying why.
    """

    def refused(why: str) -> BadRequest:
        return BadRequest(f"endpoint: {why}", code="invalid_push_endpoint")

    if len(url) > MAX_ENDPOINT_CHARS:
        raise refused(f"longer than {MAX_ENDPOINT_CHARS} characters")
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise refused("not a URL") from None
    if target.scheme != "https":
        raise refused("must be an https URL")
    if target.userinfo or target.fragment:
        raise refused("no credentials or fragment allowed")
    host = target.host.lower()
    if not host:
        raise refused("no host")
    port = target.port or 443
    if port not in policy.ports:
        raise refused(f"port {port} is not allowed")
    literal = parse_ip(host)
    if literal is not None:
        texts = [str(literal)]
    else:
        try:
            with trio.fail_after(5):
                texts = await policy.resolver(host)
        except (OSError, trio.TooSlowError):
            raise refused(f"{host} does not resolve") from None
        if not texts:
            raise refused(f"{host} does not resolve")
    for text in texts:
        address = parse_ip(text.partition("%")[0])
        why = (
            "unreadable"
            if address is None
            else refusal(address, allow_test_loopback=policy.allow_test_loopback)
        )
        if why is not None:
            raise refused(f"{host} -> {text} is not a public address ({why})")
    return url  # as given: the browser unsubscribes with the same string


def checked_keys(p256dh: str, auth: str) -> tuple[bytes, bytes]:
    """Raises BadRequest("invalid_push_keys")."""
    try:
        return check_keys(p256dh, auth)
    except ValueError as e:
        raise BadRequest(str(e), code="invalid_push_keys") from None


# -- the notifier --------------------------------------------------------------------------------


class PushPayload(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a push carries (JSON, encrypted): enough for a notification and a link."""

    type: str  # "message"
    reason: str  # dm | mention | role | everyone | message
    channel_id: str
    message_id: str
    author_id: str
    author_name: str
    count: int  # messages this push stands for (coalesced)
    server_id: str | None = None
    content: str | None = None  # left out when settings say so


@dataclass(frozen=True, slots=True)
class Note:
    """One user's pending push about a channel."""

    user_id: int
    channel_id: int
    server_id: int | None
    message_id: int
    author: AuthorRow
    show_content: bool  # settings allow message text in this user's pushes
    reason: Reason
    count: int = 1

    def merged(self, later: Note) -> Note:
        reason = self.reason if RANK[self.reason] < RANK[later.reason] else later.reason
        return replace(later, reason=reason, count=self.count + later.count)


@dataclass(slots=True)
class _Window:
    until: float  # trio time: no push for this (user, channel) before it
    pending: Note | None = None


@dataclass(frozen=True, slots=True)
class _Revoked:
    auth_session_id: int


class PushNotifier:
    """The queue, coalescer and delivery workers (see the module doc)."""

    def __init__(
        self,
        store: Store,
        areas: Areas,
        settings: Settings,
        vapid: Vapid,
        policy: FetchPolicy,
        attentive: Callable[[int], bool],
    ) -> None:
        self.store = store
        self.q = areas
        self.settings = settings
        self.vapid = vapid
        self.policy = policy
        self.attentive = attentive  # user id -> has a connected, not long-idle gateway session
        self._jobs_send, self._jobs = trio.open_memory_channel[Any](settings.push_queue)
        self._out_send, self._out = trio.open_memory_channel[Note](settings.push_queue)
        self._windows: dict[tuple[int, int], _Window] = {}
        self._max_windows = settings.push_queue * WINDOW_KEYS_PER_QUEUE
        self._wake = trio.Event()
        # Users who may have a subscription (a superset: ids are added on subscribe and never
        # removed until a restart), so that a message nobody could be pushed about costs
        # nothing: without subscribers, `submit` returns at once.
        self.subscribers: set[int] = set()
        self.dropped = 0  # messages or pushes refused because a queue was full (drop newest)
        self.sent = 0  # pushes a push service accepted
        self.failed = 0  # pushes given up on
        self.pruned = 0  # subscriptions deleted on 404/410

    def queued(self) -> tuple[int, int]:
        """Messages waiting for the planner, and pushes waiting for a delivery task."""
        return (
            self._jobs_send.statistics().current_buffer_used,
            self._out_send.statistics().current_buffer_used,
        )

    # -- entry points (never block, never raise) ---------------------------------------------

    def submit(self, row: MessageRow) -> None:
        """Queue a committed message (called in its channel's publisher, after the commit)."""
        subscribers = self.subscribers
        if not subscribers or (len(subscribers) == 1 and row.author.id in subscribers):
            return
        self._offer_job(row)

    def forget_login(self, auth_session_id: int) -> None:
        """A login was revoked: its subscriptions go (deliveries skip them already)."""
        self._offer_job(_Revoked(auth_session_id))

    def _offer_job(self, job: object) -> None:
        try:
            self._jobs_send.send_nowait(job)
        except trio.WouldBlock:
            self._dropped("push queue full: a job is dropped")
        except trio.ClosedResourceError:
            pass  # shutting down

    # -- tasks ---------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.subscribers.update(await self.store.read(self.q.push.subscriber_ids))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._plan_forever)
            nursery.start_soon(self._flush_forever)
            for _ in range(self.settings.push_workers):
                nursery.start_soon(self._deliver_forever)
            task_status.started()

    async def _plan_forever(self) -> None:
        async for job in self._jobs:
            try:
                if isinstance(job, _Revoked):
                    await self.store.write(
                        self.q.push.drop_login_subscriptions, job.auth_session_id
                    )
                else:
                    await self.plan(job)
            except Exception:  # a bug in one job must not end pushes for everyone
                log.exception("push planning failed")

    async def plan(self, row: MessageRow) -> None:
        """Decide who is pushed about one message and hand each to the coalescer."""
        mentions = mentions_of(row)
        found = await self.store.read(
            self.q.push.candidates, row.channel_id, row.author.id, now_ms(), bool(mentions.roles)
        )
        now = now_ms()
        dm = row.server_id is None
        for candidate in found:
            if self.attentive(candidate.user_id):
                continue
            reason = push_reason(
                candidate.user_id,
                dm=dm,
                mentions=mentions,
                roles=candidate.roles,
                server=candidate.server,
                channel=candidate.channel,
                now_ms=now,
            )
            if reason is None:
                continue
            show = self.settings.push_message_text and not candidate.hide_content
            self.offer(
                Note(
                    candidate.user_id,
                    row.channel_id,
                    row.server_id,
                    row.id,
                    row.author,
                    show,
                    reason,
                )
            )

    def offer(self, note: Note) -> None:
        """The coalescer: send at once if the (user, channel) window is open, else merge."""
        key = (note.user_id, note.channel_id)
        now = trio.current_time()
        window = self._windows.get(key)
        if window is None or (window.until <= now and window.pending is None):
            if window is None and len(self._windows) >= self._max_windows:
                self._dropped("push coalescer full: a push is dropped")
                return
            self._windows[key] = _Window(now + self.settings.push_coalesce_s)
            self._enqueue(note)
            self._wake.set()
            return
        window.pending = note if window.pending is None else window.pending.merged(note)

    def _dropped(self, what: str) -> None:
        self.dropped += 1
        if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, 8...: a flood logs a few lines
            log.warning(what, extra={"dropped": self.dropped})

    def _enqueue(self, note: Note) -> None:
        try:
            self._out_send.send_nowait(note)
        except trio.WouldBlock:
            self._dropped("push delivery queue full: a push is dropped")
        except trio.ClosedResourceError:
            pass

    async def _flush_forever(self) -> None:
        """Send what each window gathered when it ends; forget windows with nothing left."""
        while True:
            now = trio.current_time()
            for key, window in list(self._windows.items()):
                if window.until > now:
                    continue
                if window.pending is None:
                    del self._windows[key]
                    continue
                note, window.pending = window.pending, None
                window.until = now + self.settings.push_coalesce_s
                self._enqueue(note)
            self._wake = trio.Event()
            if not self._windows:
                await self._wake.wait()
            else:
                with trio.move_on_at(min(w.until for w in self._windows.values())):
                    await self._wake.wait()

    async def _deliver_forever(self) -> None:
        async for note in self._out:
            try:
                await self.deliver(note)
            except Exception:  # a bug in one push must not end the worker
                self.failed += 1
                log.exception("push delivery failed", extra={"user": note.user_id})

    async def deliver(self, note: Note) -> None:
        """Send one push to every subscription of the user, if they still may see the
        channel and are still away."""
        if self.attentive(note.user_id):
            return
        visible = await self.store.read(
            self.q.audience.visible_channel, note.channel_id, note.user_id
        )
        if visible is None:  # hidden since (or never visible): nothing of it leaves
            return
        subscriptions = await self.store.read(self.q.push.subscriptions_of, note.user_id, now_ms())
        if not subscriptions:
            return
        # The text as it is now: a message deleted meanwhile is not pushed, an edit is.
        content = await self.store.read(self.q.push.message_content, note.message_id)
        if content is None:
            return
        payload = encode_payload(
            PushPayload(
                type="message",
                reason=note.reason,
                channel_id=str(note.channel_id),
                message_id=str(note.message_id),
                author_id=str(note.author.id),
                author_name=note.author.display_name or note.author.username,
                count=note.count,
                server_id=None if note.server_id is None else str(note.server_id),
                content=content[:MAX_TEXT_CHARS] if note.show_content else None,
            )
        )
        urgency = "normal" if note.reason == "message" else "high"
        for subscription in subscriptions:
            await self.send(subscription, payload, urgency, topic=f"c{note.channel_id}")

    async def send(
        self, subscription: SubscriptionRow, payload: bytes, urgency: str, *, topic: str
    ) -> bool:
        """POST one encrypted push, retrying as the module doc says; True if accepted."""
        body = encrypt(payload, subscription.p256dh, subscription.auth)
        settings = self.settings
        wait = 1.0
        for attempt in range(1, settings.push_max_attempts + 1):
            headers = {
                "Authorization": self.vapid.authorization(subscription.endpoint),
                "Content-Encoding": "aes128gcm",
                "Content-Type": "application/octet-stream",
                "TTL": str(settings.push_ttl_s),
                "Urgency": urgency,
                "Topic": topic,
            }
            retry_after: float | None = None
            try:
                answer = await fetch(
                    subscription.endpoint,
                    self.policy,
                    _ANSWER,
                    method="POST",
                    body=body,
                    headers=headers,
                )
            except FetchError as e:
                if e.reason not in ("timeout", "network"):  # refused: retrying will not help
                    self.failed += 1
                    log.info("push refused", extra={"reason": e.reason, "detail": e.detail})
                    return False
                log.info("push failed", extra={"reason": e.reason, "attempt": attempt})
            else:
                status = answer.status
                if 200 <= status < 300:
                    self.sent += 1
                    return True
                if status in (404, 410):  # the subscription is gone for good
                    await self.store.write(self.q.push.drop_subscription, subscription.id)
                    self.pruned += 1
                    return False
                if status != 429 and status < 500:
                    self.failed += 1
                    log.info("push rejected", extra={"status": status})
                    return False
                retry_after = parse_retry_after(answer.headers.get("retry-after"))
                log.info("push deferred", extra={"status": status, "attempt": attempt})
            if attempt < settings.push_max_attempts:
                delay = wait if retry_after is None else retry_after
                await trio.sleep(min(delay, settings.push_retry_max_s))
                wait *= 2
        self.failed += 1
        return False


def encode_payload(payload: PushPayload) -> bytes:
    """The payload as JSON within MAX_PLAINTEXT bytes: the text is cut (by halves) until it
    fits, since characters can take up to 6 bytes once encoded (escapes) and names 4 each."""
    data = msgspec.json.encode(payload)
    for _ in range(32):  # halving 1000 characters reaches nothing in 10 rounds
        if len(data) <= MAX_PLAINTEXT:
            break
        content = payload.content or ""
        payload = msgspec.structs.replace(payload, content=content[: len(content) // 2] or None)
        if not content:
            payload = msgspec.structs.replace(payload, author_name=payload.author_name[:32])
        data = msgspec.json.encode(payload)
    return data


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), 86_400))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())
