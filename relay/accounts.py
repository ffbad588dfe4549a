"""The account service: registration, password and Ed25519 login, access and refresh tokens.

Routes stay thin: they decode a body, call one method here, and encode the result. Slow hashing
(argon2) runs in worker threads; every state change goes through the store's writer, and a login
returns only after its session committed.

Access tokens are checked without a database read: the signature and expiry prove them, and the
in-memory `_revoked` map (loaded at start-up for the last access-token lifetime, then kept up to
date by every revocation in this process) catches revoked sessions before their tokens expire.
Logins another process revoked (the admin CLI: `relay user disable`, `relay user set-password`)
reach the map through `follow_revocations`, which polls the database every REVOCATION_POLL_S.

Bots (relay.chat.applications) authenticate with `Authorization: Bot <token>`: the token's
SHA-256 is looked up in `_bots`, an in-memory table loaded at start-up and kept up to date by
every application change here, so a reset token is refused at once (a bot disabled by
`relay user disable` within a poll, as for revocations). A bot's Principal has
`bot=True` and the application's `token_id` as its session id: revoking that closes the bot's
gateway sessions (4004) like a revoked login. Bot requests have their own per-bot budget
(`bot_requests_per_s`).

A disabled account (`users.disabled_at`) cannot log in (password or key) or refresh: 403
`account_disabled`, checked after the password or signature, so the answer tells nothing to
someone who does not hold them.
"""

from __future__ import annotations

import logging
import secrets as pysecrets
import time
from collections import OrderedDict
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import msgspec
import trio

from relay import crypto
from relay.errors import RateLimited, Unauthorized
from relay.fairlimit import FairLimiter, QueueFull
from relay.ratelimit import RateLimiter
from relay.storage import applications, users

if TYPE_CHECKING:
    from collections.abc import Callable

    from relay.config import Settings
    from relay.storage.sqlite.db import Store
    from relay.storage.users import SessionRow, UserRow

log = logging.getLogger("relay.auth")
CHALLENGES_PER_USER = 5
VERIFIED_CACHE = 10_000  # access tokens
HASHES_AT_ONCE = 2  # argon2 uses ~64 MiB per hash
HASHES_PER_IP = 8  # password hashes one client address may have running or waiting; more: 429
REVOCATION_POLL_S = 1.0  # how often the database is asked for logins other processes revoked

T = TypeVar("T")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: from a verified access token."""

    user_id: int
    session_id: int  # a bot's: its application's token_id
    bot: bool = False


class Tokens(msgspec.Struct, frozen=True):
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: int


class Accounts:
    """Owns the signing key, the rate limiters and the revoked-session map."""

    def __init__(self, store: Store, settings: Settings, signing_key: bytes) -> None:
        self.store = store
        self.settings = settings
        self._signer = crypto.TokenSigner(signing_key)
        self._revoked: dict[int, int] = {}  # session id -> revoked at (ms)
        # Tokens whose signature was checked: verifying a JWT was ~40% of a message post's own
        # CPU. Keyed by the exact token string, so a cached entry proves the same thing again;
        # expiry and revocation are still checked on every use. Least recently used go first.
        self._verified: OrderedDict[str, crypto.AccessClaims] = OrderedDict()
        # Called with each revoked session id (the gateway closes its connections).
        self.on_revoke: list[Callable[[int], None]] = []
        window = settings.rate_window_s
        self._login_by_name = RateLimiter(settings.login_per_username, window)
        self._login_by_ip = RateLimiter(settings.login_per_ip, window)
        self._register_by_ip = RateLimiter(settings.register_per_ip, window)
        # At most HASHES_AT_ONCE argon2 hashes run (memory), and waiters take turns by client
        # address: one address's flood of wrong passwords cannot hold everyone's logins up.
        self._hash_queue = FairLimiter(HASHES_AT_ONCE, HASHES_PER_IP)
        # Never waited on (the queue admits no more), but keeps hashing off trio's default
        # thread limiter, which other worker-thread calls share.
        self._hash_threads = trio.CapacityLimiter(HASHES_AT_ONCE)
        self._bots: dict[bytes, Principal] = {}  # SHA-256 of a bot token -> the bot
        self._bot_token_of: dict[int, bytes] = {}  # bot user id -> its token's hash
        self._bot_requests = RateLimiter(settings.bot_requests_per_s, 1.0)

    @classmethod
    async def open(cls, store: Store, settings: Settings) -> Accounts:
        if settings.secret_key is not None:
            key = settings.secret_key.encode("utf-8")
        else:
            key = await store.write(
                users.secret, "token_signing_key", lambda: pysecrets.token_bytes(32)
            )
        accounts = cls(store, settings, key)
        now = now_ms()
        for session_id in await store.read(
            users.revoked_since, now - settings.access_token_ttl_s * 1000
        ):
            # Kept an access-token lifetime from now, as `_forget` does: `follow_revocations`
            # finds these again until then and must not take them for new ones.
            accounts._revoked[session_id] = now
        for bot in await store.read(applications.bot_tokens):
            accounts.set_bot_token(bot.token_hash, bot.bot_id, bot.token_id)
        return accounts

    # -- rate limits ---------------------------------------------------------------------------

    def check_login_rate(self, username: str | None, ip: str) -> None:
        """Count an attempt against the client IP's budget and, for a login or challenge, the
        username's (None: a refresh, whose username is not known before its token is)."""
        now = trio.current_time()
        limits = [(self._login_by_ip, ip, "login_per_ip")]
        if username is not None:
            limits.append((self._login_by_name, username.lower(), "login_per_username"))
        for limiter, key, name in limits:
            decision = limiter.hit(key, now)
            if not decision.allowed:
                raise RateLimited.refusing(
                    "too many login attempts; try again later", decision, name
                )

    def check_register_rate(self, ip: str) -> None:
        decision = self._register_by_ip.hit(ip, trio.current_time())
        if not decision.allowed:
            raise RateLimited.refusing(
                "too many registrations from this address", decision, "register_per_ip"
            )

    # -- registration and login ----------------------------------------------------------------

    async def hash_password(self, password: str, ip: str) -> str:
        """Hash in a worker thread, in `ip`'s turn. Raises RateLimited: see `_in_turn`."""
        return await self._in_turn(ip, partial(crypto.hash_password, password))

    async def verify_password(self, password_hash: str, password: str, ip: str) -> bool:
        """Verify in a worker thread, in `ip`'s turn. Raises RateLimited: see `_in_turn`."""
        return await self._in_turn(ip, partial(crypto.verify_password, password_hash, password))

    async def _in_turn(self, ip: str, work: Callable[[], T]) -> T:
        """Run one argon2 call once the client address `ip` has its turn.

        Raises:
            RateLimited: `ip` already has HASHES_PER_IP hashes running or waiting.
        """
        try:
            async with self._hash_queue.hold(ip):
                return await trio.to_thread.run_sync(work, limiter=self._hash_threads)
        except QueueFull:
            raise RateLimited(
                "too many password checks from this address at once; try again shortly",
                limit=HASHES_PER_IP,
                retry_after_s=1.0,
                limit_name="password_checks_per_ip",
            ) from None

    async def register(
        self,
        username: str,
        password: str | None,
        public_key: bytes | None,
        display_name: str | None,
        ip: str,
    ) -> UserRow:
        password_hash = await self.hash_password(password, ip) if password is not None else None
        ids = self.store.ids
        return await self.store.write(
            users.insert_user,
            ids.next(),
            username,
            display_name,
            password_hash,
            public_key,
            ids.next(),
            now_ms(),
        )

    async def login_password(
        self, username: str, password: str, user_agent: str | None, ip: str
    ) -> tuple[UserRow, Tokens]:
        user = await self.store.read(users.get_user_by_name, username)
        stored = user.password_hash if user is not None else None
        # Verify against a dummy hash for unknown users too, so timing does not reveal them.
        ok = await self.verify_password(stored or _DUMMY_HASH, password, ip)
        if user is None or stored is None or not ok:
            raise Unauthorized("wrong username or password", code="invalid_credentials")
        if user.disabled_at is not None:
            raise users.account_disabled()
        return user, await self._start_session(user.id, user_agent, ip)

    async def challenge(self, username: str) -> tuple[bytes, int]:
        """A fresh single-use challenge and its expiry (ms). Unknown users get an unstored one,
        so the endpoint does not reveal which usernames exist."""
        challenge = pysecrets.token_bytes(32)
        expires_at = now_ms() + self.settings.challenge_ttl_s * 1000
        user = await self.store.read(users.get_user_by_name, username)
        if user is not None:
            await self.store.write(
                users.insert_challenge,
                challenge,
                user.id,
                expires_at,
                now_ms(),
                CHALLENGES_PER_USER,
            )
        return challenge, expires_at

    async def login_key(
        self,
        username: str,
        challenge: bytes,
        signature: bytes,
        user_agent: str | None,
        ip: str | None,
    ) -> tuple[UserRow, Tokens]:
        failed = Unauthorized("the challenge or signature is not valid", code="invalid_signature")
        user = await self.store.read(users.get_user_by_name, username)
        if user is None:
            raise failed
        # Spent before the signature is checked: a challenge gets exactly one try.
        if not await self.store.write(users.consume_challenge, challenge, user.id, now_ms()):
            raise Unauthorized(
                "the challenge is unknown, used or expired", code="invalid_challenge"
            )
        keys = await self.store.read(users.list_keys, user.id)
        if not any(crypto.verify_login_signature(k.public_key, challenge, signature) for k in keys):
            raise failed
        if user.disabled_at is not None:
            raise users.account_disabled()
        return user, await self._start_session(user.id, user_agent, ip)

    async def _start_session(self, user_id: int, user_agent: str | None, ip: str | None) -> Tokens:
        """Raises Forbidden(account_disabled) if the account was disabled since it was read."""
        refresh = crypto.new_refresh_token()
        now = now_ms()
        session = await self.store.write(
            users.create_session,
            self.store.ids.next(),
            user_id,
            crypto.hash_token(refresh),
            now,
            now + self.settings.refresh_token_ttl_s * 1000,
            (user_agent or "")[:256] or None,
            ip,
        )
        keep = self.settings.max_logins_per_user
        for old in await self.store.write(users.revoke_beyond, user_id, now, "session_limit", keep):
            self._forget(old)
        return self._tokens(session, refresh)

    def _tokens(self, session: SessionRow, refresh: str) -> Tokens:
        ttl = self.settings.access_token_ttl_s
        access = self._signer.issue(session.user_id, session.id, now_ms() // 1000, ttl)
        return Tokens(access, refresh, ttl, session.id)

    async def refresh(self, refresh_token: str) -> tuple[int, Tokens]:
        new = crypto.new_refresh_token()
        rotated = await self.store.write(
            users.rotate_refresh_token,
            crypto.hash_token(refresh_token),
            crypto.hash_token(new),
            now_ms(),
            self.settings.refresh_token_ttl_s * 1000,
        )
        if rotated.error is not None or rotated.session is None:
            if rotated.error == "refresh_token_reused" and rotated.session is not None:
                log.warning(
                    "refresh token reused; session revoked", extra={"session": rotated.session.id}
                )
                self._forget(rotated.session.id)
            if rotated.error == "account_disabled":
                raise users.account_disabled()
            code = rotated.error or "invalid_refresh_token"
            raise Unauthorized(_REFRESH_ERRORS[code], code=code)
        return rotated.session.user_id, self._tokens(rotated.session, new)

    # -- sessions ------------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Principal:
        """Check an `Authorization: Bearer <token>` (or `Bot <token>`) header value; no I/O."""
        if not authorization:
            raise Unauthorized("an Authorization: Bearer token is required", code="missing_token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bot":
            return self._bot(token.strip())
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("use Authorization: Bearer <token>", code="invalid_token")
        token = token.strip()
        now_s = int(time.time())
        claims = self._verified.get(token)
        if claims is None or claims.expires_at <= now_s:
            try:
                claims = self._signer.verify(token, now_s)
            except crypto.TokenError as e:
                raise Unauthorized(str(e), code=e.code) from None
            self._verified[token] = claims
            if len(self._verified) > VERIFIED_CACHE:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(token)
        if claims.session_id in self._revoked:
            raise Unauthorized("the session was revoked", code="session_revoked")
        return Principal(claims.user_id, claims.session_id)

    # -- bots --------------------------------------------------------------------------------------

    def _bot(self, token: str) -> Principal:
        who = self._bots.get(crypto.hash_token(token)) if token else None
        if who is None:
            raise Unauthorized("the bot token is not valid", code="invalid_bot_token")
        decision = self._bot_requests.hit(str(who.user_id), trio.current_time())
        if not decision.allowed:
            raise RateLimited.refusing(
                f"a bot may make {decision.limit} requests a second", decision, "bot_requests_per_s"
            )
        return who

    def set_bot_token(self, token_hash: bytes, bot_id: int, token_id: int) -> None:
        """Accept a bot's new token; its old one, if any, is refused from now on and the
        bot's gateway sessions close (4004)."""
        self.drop_bot(bot_id)
        self._bots[token_hash] = Principal(bot_id, token_id, bot=True)
        self._bot_token_of[bot_id] = token_hash

    def bot_ids(self) -> set[int]:
        """The bots with a live token (every application's bot)."""
        return set(self._bot_token_of)

    def drop_bot(self, bot_id: int) -> None:
        """Refuse the bot's token from now on and close its gateway sessions."""
        old = self._bot_token_of.pop(bot_id, None)
        if old is not None:
            who = self._bots.pop(old)
            self._forget(who.session_id)

    async def revoke(self, user_id: int, session_id: int, reason: str) -> bool:
        """Revoke one of the user's sessions; False if it is not theirs or already ended."""
        session = await self.store.read(users.get_session, session_id)
        if session is None or session.user_id != user_id:
            return False
        done = await self.store.write(users.revoke_session, session_id, now_ms(), reason)
        self._forget(session_id)
        return done

    async def revoke_all(self, user_id: int, reason: str, keep: int | None = None) -> None:
        for session_id in await self.store.write(
            users.revoke_user_sessions, user_id, now_ms(), reason, keep
        ):
            self._forget(session_id)

    async def follow_revocations(self, interval_s: float = REVOCATION_POLL_S) -> None:
        """Every `interval_s`, take in the logins revoked in the database that this process
        did not revoke itself (the admin CLI writes the database directly): their access tokens
        are refused from then on and their gateway connections closed, as for a revocation
        here; and bots an operator disabled lose their token (and gateway sessions). Runs until
        cancelled; one indexed read per round (auth_sessions_revoked), and one pass over the
        applications while there are bots."""
        while True:
            await trio.sleep(interval_s)
            since = now_ms() - self.settings.access_token_ttl_s * 1000
            found = await self.store.read(users.revoked_since, since)
            new = [session_id for session_id in found if session_id not in self._revoked]
            for session_id in new:
                self._forget(session_id)
            if new:
                log.info("logins revoked by another process", extra={"sessions": len(new)})
            if self._bot_token_of:  # bots an operator disabled: their tokens go too
                for bot_id in await self.store.read(applications.disabled_bots):
                    if bot_id in self._bot_token_of:
                        self.drop_bot(bot_id)
                        log.info("bot disabled by another process", extra={"user": bot_id})

    def _forget(self, session_id: int) -> None:
        now = now_ms()
        self._revoked[session_id] = now
        for callback in self.on_revoke:
            callback(session_id)
        horizon = now - self.settings.access_token_ttl_s * 1000
        # Once a token's lifetime has passed since revocation its tokens have expired anyway.
        for old in [s for s, at in self._revoked.items() if at < horizon]:
            del self._revoked[old]


_DUMMY_HASH = crypto.hash_password(pysecrets.token_urlsafe(16))
_REFRESH_ERRORS = {
    "invalid_refresh_token": "the refresh token is not valid",
    "session_revoked": "the session was revoked or has expired",
    "refresh_token_reused": "the refresh token was already used; the session has been revoked",
}
