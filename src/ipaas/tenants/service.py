"""Sign-up, login and API tokens."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import secrets
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ipaas.config import Signup
from ipaas.errors import Conflict, IpaasError, NotFound, TooManyRequests, Unauthorized
from ipaas.kit.clock import utcnow
from ipaas.kit.ids import new_id
from ipaas.stores.base import DuplicateError, Store
from ipaas.tenants.models import ApiToken, Role, Tenant, TenantLimits, User, canonical_email
from ipaas.tenants.throttle import LoginThrottle

TOKEN_PREFIX = "ipaas_"  # noqa: S105 - a public prefix that makes leaked tokens greppable

_hasher = PasswordHasher()
_log = structlog.get_logger(__name__)

T = TypeVar("T")

#: Threads per process that hash and verify passwords. An argon2id hash (argon2-cffi's
#: defaults) is ~100 ms of CPU and 64 MiB; on the event loop, one login held intake and
#: deliveries for that long, and one client retrying a wrong password back to back cut
#: webhook intake from 194 to 54 a second (docs/security.md). argon2-cffi releases the
#: GIL, so on a thread of its own the loop goes on meanwhile.
PASSWORD_THREADS = 1
#: Password hashes waiting for that thread at most; more is a 429 at once, so that a flood
#: of logins queues neither without end nor for longer than a few seconds.
PASSWORD_QUEUE_MAX = 16
#: What that 429 tells the client to wait.
PASSWORD_RETRY_AFTER_S = 1


class TooManyLogins(TooManyRequests):
    code = "too_many_logins"

    def __init__(self) -> None:
        super().__init__(
            "Too many sign-ups or logins at once; retry shortly",
            headers={"Retry-After": str(PASSWORD_RETRY_AFTER_S)},
        )


class _PasswordWork:
    """Password hashing off the event loop, on ``PASSWORD_THREADS`` threads (started on
    first use: processes that never see a login, workers, have none)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._pending = 0

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            if self._pending >= PASSWORD_THREADS + PASSWORD_QUEUE_MAX:
                raise TooManyLogins
            self._pending += 1
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PASSWORD_THREADS, thread_name_prefix="ipaas-password")
        work = self._pool.submit(fn, *args)
        # Counted until the hash is done (on the thread), not until its caller stops
        # waiting: a client that hangs up does not free the thread.
        work.add_done_callback(self._finished)
        return await asyncio.shield(asyncio.wrap_future(work))

    def _finished(self, _: object) -> None:
        with self._lock:
            self._pending -= 1

    @property
    def pending(self) -> int:
        return self._pending


_password_work = _PasswordWork()


@functools.cache
def _dummy_hash() -> str:
    """Verifying against a dummy hash when the email is unknown keeps login timing uniform.
    Made on first use, not at import: an argon2 hash takes 64 MiB while it runs, which every
    process (workers too) would otherwise reach at start."""
    return _hasher.hash("not-a-real-password")


def _verify(password_hash: str | None, password: str) -> bool:
    """On a password thread."""
    try:
        return bool(_hasher.verify(password_hash or _dummy_hash(), password))
    except (VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    """An argon2id hash, made on a password thread (429 ``too_many_logins`` when busy)."""
    return await _password_work.run(_hasher.hash, password)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: established from a bearer token."""

    tenant_id: str
    token_id: str
    user_id: str | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(
    tenant_id: str,
    user_id: str | None,
    name: str,
    now: datetime,
    ttl_s: int | None,
    *,
    session: bool = False,
) -> tuple[ApiToken, str]:
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        id=new_id("tok"),
        tenant_id=tenant_id,
        user_id=user_id,
        name=name,
        token_hash=hash_token(plaintext),
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s) if ttl_s else None,
        session=session,
    )
    return token, plaintext


class SignupClosed(IpaasError):
    status_code = 403
    code = "signup_closed"

    def __init__(self) -> None:
        super().__init__(
            "Sign-up is closed on this server: ask a tenant's owner for an invitation, or the "
            "server's operator for an account"
        )


#: Stores known to hold a tenant. Tenants are never deleted, so under ``first`` sign-up stays
#: closed for good once one exists: the public log-in page then reads nothing to know it.
_TENANTED: weakref.WeakSet[Store] = weakref.WeakSet()


async def check_signup_open(store: Store, policy: Signup) -> None:
    """``SignupClosed`` unless ``IPAAS_SIGNUP`` lets a new tenant be made now."""
    if policy is Signup.closed:
        raise SignupClosed
    if policy is Signup.first and (store in _TENANTED or await store.list_tenant_ids()):
        _TENANTED.add(store)
        raise SignupClosed


async def signup(
    store: Store,
    *,
    email: str,
    password: str,
    tenant_name: str,
    token_ttl_s: int,
    policy: Signup,
) -> tuple[Tenant, str]:
    """A new tenant, its first user (an owner) and a session token for them. ``policy`` is
    ``IPAAS_SIGNUP``, checked before the password is hashed (``ipaas tenant create``, the
    operator's, passes ``open``); under ``first``, checked again by the store as it writes,
    so of sign-ups at once only one gets in."""
    await check_signup_open(store, policy)
    now = utcnow()
    tenant = Tenant(id=new_id("tn"), name=tenant_name, created_at=now)
    user = User(
        id=new_id("usr"),
        tenant_id=tenant.id,
        email=canonical_email(email),
        password_hash=await hash_password(password),
        created_at=now,
    )
    token, plaintext = new_token(tenant.id, user.id, "signup", now, token_ttl_s, session=True)
    try:
        created = await store.create_tenant(tenant, user, token, first=policy is Signup.first)
    except DuplicateError as exc:
        raise Conflict("An account with this email already exists", code="email_taken") from exc
    if not created:  # another first sign-up got in while this one hashed its password
        _TENANTED.add(store)
        raise SignupClosed
    return tenant, plaintext


async def user_by_email(store: Store, email: str) -> User | None:
    """The user with this address in any spelling of it (``canonical_email``); also one
    stored as typed (lowercased) before addresses were stored canonically."""
    canonical = canonical_email(email)
    user = await store.get_user_by_email(canonical)
    if user is None and canonical != email.strip().lower():
        user = await store.get_user_by_email(email.strip().lower())
    return user


async def login(
    store: Store, *, email: str, password: str, token_ttl_s: int, throttle: LoginThrottle
) -> str:
    await throttle.check(email)
    user = await user_by_email(store, email)
    verified = await _password_work.run(_verify, user.password_hash if user else None, password)
    if user is None or not verified:
        await throttle.failed(email)
        raise Unauthorized("Incorrect email or password")
    await throttle.succeeded(email)
    token, plaintext = new_token(
        user.tenant_id, user.id, "login", utcnow(), token_ttl_s, session=True
    )
    await store.create_token(token)
    return plaintext


async def authenticate(store: Store, token: str) -> Principal:
    if not token.startswith(TOKEN_PREFIX):
        raise Unauthorized()
    found = await store.get_token_by_hash(hash_token(token))
    if (
        found is None
        or found.revoked_at is not None
        or (found.expires_at is not None and found.expires_at <= utcnow())
    ):
        raise Unauthorized()
    return Principal(tenant_id=found.tenant_id, token_id=found.id, user_id=found.user_id)


async def create_token(
    store: Store,
    *,
    tenant_id: str,
    name: str,
    user_id: str | None = None,
    ttl_s: int | None = None,
) -> tuple[ApiToken, str]:
    token, plaintext = new_token(tenant_id, user_id, name, utcnow(), ttl_s)
    await store.create_token(token)
    return token, plaintext


async def list_tokens(store: Store, *, principal: Principal) -> list[ApiToken]:
    """The caller's own live tokens; an owner's call, every one of the tenant. Found by
    hand: a member listed everyone's, sessions included, and could revoke an owner's (or
    an integration's) token."""
    tokens = await store.list_tokens(principal.tenant_id, now=utcnow())
    if await _is_owner(store, principal):
        return tokens
    return [token for token in tokens if token.user_id == principal.user_id]


async def revoke_token(store: Store, *, principal: Principal, token_id: str) -> None:
    """One of the tokens ``list_tokens`` shows the caller; any other id is a 404."""
    mine = {token.id for token in await list_tokens(store, principal=principal)}
    if token_id not in mine or not await store.revoke_token(
        principal.tenant_id, token_id, utcnow()
    ):
        raise NotFound("Token not found")


async def _is_owner(store: Store, principal: Principal) -> bool:
    if principal.user_id is None:  # a token of no user (the store allows one)
        return False
    user = await store.get_user(principal.tenant_id, principal.user_id)
    return user is not None and user.role is Role.owner


class IncorrectPassword(IpaasError):
    status_code = 403
    code = "incorrect_password"


class TokenHasNoUser(IpaasError):
    status_code = 403
    code = "token_has_no_user"


class UserNotFound(NotFound):
    code = "user_not_found"


async def change_password(
    store: Store,
    *,
    principal: Principal,
    current_password: str,
    new_password: str,
    throttle: LoginThrottle,
) -> int:
    """The caller's own password, given the current one (wrong guesses count against the
    account's log-in throttle, like log-ins). Ends the user's other sessions; returns how
    many."""
    if principal.user_id is None:
        raise TokenHasNoUser(
            "This token belongs to no user; use a token from signing up or logging in"
        )
    user = await store.get_user(principal.tenant_id, principal.user_id)
    if user is None:
        raise Unauthorized()
    await throttle.check(user.email)
    if not await _password_work.run(_verify, user.password_hash, current_password):
        await throttle.failed(user.email)
        raise IncorrectPassword("The current password is not correct")
    await throttle.succeeded(user.email)
    ended = await _set_password(store, user, new_password, keep_token_id=principal.token_id)
    _log.info("password_changed", user_id=user.id, tenant_id=user.tenant_id, sessions_ended=ended)
    return ended


async def reset_password(store: Store, *, email: str, new_password: str) -> tuple[User, int]:
    """Operator only (``ipaas user password``): set the password of the user with ``email``
    and end all of that user's sessions. Returns the user and how many sessions ended."""
    user = await user_by_email(store, email)
    if user is None:
        raise UserNotFound("No user has this email")
    ended = await _set_password(store, user, new_password, keep_token_id=None)
    _log.info("password_reset", user_id=user.id, tenant_id=user.tenant_id, sessions_ended=ended)
    return user, ended


async def _set_password(
    store: Store, user: User, new_password: str, *, keep_token_id: str | None
) -> int:
    """The new hash, and the end of the user's sessions (``ApiToken.session``: sign-up's and
    log-in's, the console's included) but ``keep_token_id``; tokens made on purpose stay, as
    GitHub keeps personal access tokens."""
    password_hash = await hash_password(new_password)
    ended = await store.change_password(
        user.tenant_id,
        user.id,
        password_hash,
        keep_token_id=keep_token_id,
        at=utcnow(),
    )
    if ended is None:  # deleted in between
        raise UserNotFound("No such user")
    return ended


class TenantNotFound(NotFound):
    code = "tenant_not_found"


def effective_limits(overrides: TenantLimits, defaults: TenantLimits) -> TenantLimits:
    """Each override, else the default; a rate without a burst gets one second's worth."""
    rate = overrides.rate_limit if overrides.rate_limit is not None else defaults.rate_limit
    burst = overrides.rate_burst if overrides.rate_burst is not None else defaults.rate_burst
    if rate is None:
        burst = None
    elif burst is None:
        burst = max(1, math.ceil(rate))
    return TenantLimits.model_construct(
        rate_limit=rate,
        rate_burst=burst,
        max_queued=overrides.max_queued
        if overrides.max_queued is not None
        else defaults.max_queued,
        max_concurrency=overrides.max_concurrency
        if overrides.max_concurrency is not None
        else defaults.max_concurrency,
    )


async def get(store: Store, *, tenant_id: str) -> Tenant:
    tenant = await store.get_tenant(tenant_id)
    if tenant is None:
        raise TenantNotFound("Tenant not found")
    return tenant


async def set_limits(store: Store, *, tenant_id: str, changes: dict[str, float | None]) -> Tenant:
    """Operator only (``ipaas tenant limits``): apply ``changes`` (``None`` restores the
    default) to the tenant's overrides."""
    tenant = await get(store, tenant_id=tenant_id)
    # Only the changes are checked: a value an older version allowed (outside today's
    # bounds) does not stop the operator from changing another, or that one.
    checked = TenantLimits.model_validate(changes)
    changed = {name: getattr(checked, name) for name in changes}
    limits = TenantLimits.model_construct(**(tenant.limits.model_dump() | changed))
    if not await store.set_tenant_limits(tenant_id, limits):
        raise TenantNotFound("Tenant not found")
    return tenant.model_copy(update={"limits": limits})
