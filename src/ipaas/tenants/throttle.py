"""Failed log-ins per account: password guessing is slowed to 10 tries per 15 minutes.

After ``LOGIN_FAILURES`` failed log-ins for one email within ``LOGIN_WINDOW_S``, a log-in for
it (API or console) is a 429 ``too_many_attempts`` with ``Retry-After``, answered before the
password is checked, so guessing costs no argon2 either; a successful log-in clears the
count. Unknown emails count the same as known ones, so the answers tell nothing about which
exist. The count lives where the webhook rate limits do: in the process, or in Redis shared
by every API process (``limits``' sliding-window counter).

This lets anyone who knows an email hold its password log-in for up to the window; API
tokens keep working. That trade is the usual one (OWASP's "Blocking Brute Force Attacks"):
without it a password could be guessed at ~10 tries a second per process.
"""

from __future__ import annotations

import math
import time

import structlog
from limits import RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from ipaas.errors import TooManyRequests
from ipaas.tenants.models import canonical_email

_log = structlog.get_logger(__name__)

#: Failed log-ins for one email within ``LOGIN_WINDOW_S``, after which log-ins wait.
LOGIN_FAILURES = 10
LOGIN_WINDOW_S = 900


class TooManyAttempts(TooManyRequests):
    code = "too_many_attempts"


class LoginThrottle:
    def __init__(self, storage: Storage) -> None:
        self._limiter = SlidingWindowCounterRateLimiter(storage)

    @staticmethod
    def _key(email: str) -> str:
        return f"login/{canonical_email(email)}"

    @staticmethod
    def _item() -> RateLimitItemPerSecond:
        return RateLimitItemPerSecond(LOGIN_FAILURES, LOGIN_WINDOW_S)

    async def check(self, email: str) -> None:
        """Raise ``TooManyAttempts`` when ``email`` has used up its failed log-ins. The
        store of the counts being unreachable (Redis down) lets the log-in through."""
        item, key = self._item(), self._key(email)
        try:
            if await self._limiter.test(item, key):
                return
            stats = await self._limiter.get_window_stats(item, key)
        except StorageError as exc:
            _log.warning("login_throttle_unavailable", error=repr(exc))
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        _log.warning("login_throttled", retry_after_s=retry_after)
        raise TooManyAttempts(
            f"Too many failed log-ins for this account; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )

    async def failed(self, email: str) -> None:
        try:
            await self._limiter.hit(self._item(), self._key(email))
        except StorageError as exc:
            _log.warning("login_throttle_unavailable", error=repr(exc))

    async def succeeded(self, email: str) -> None:
        try:
            await self._limiter.clear(self._item(), self._key(email))
        except StorageError as exc:
            _log.warning("login_throttle_unavailable", error=repr(exc))
