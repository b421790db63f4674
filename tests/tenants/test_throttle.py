"""Failed log-ins per account (``tenants.throttle``): guessing a password is slowed to
``LOGIN_FAILURES`` tries per ``LOGIN_WINDOW_S``, per email, in one process or all of them."""

from __future__ import annotations

import os

import httpx
import pytest

from ipaas.tenants.throttle import LOGIN_FAILURES, LOGIN_WINDOW_S, LoginThrottle, TooManyAttempts
from ipaas.webhooks.ratelimit import TenantRateLimiter
from tests.conftest import signup
from tests.web.test_console import post_form

PASSWORD = "correct horse battery"
REDIS_URL = os.environ.get("IPAAS_TEST_REDIS_URL")


async def _login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/auth/token", data={"username": email, "password": password})


async def test_guessing_is_held_per_account_after_the_limit(client: httpx.AsyncClient) -> None:
    await signup(client)  # ada@example.com
    await signup(client, "bob@example.com")
    for _ in range(LOGIN_FAILURES):
        assert (await _login(client, "ada@example.com", "a guess")).status_code == 401
    # The right password too: the answer comes before any check, and says nothing.
    held = await _login(client, "Ada@Example.com", PASSWORD)
    assert held.status_code == 429
    assert held.json()["error"]["code"] == "too_many_attempts"
    assert 1 <= int(held.headers["retry-after"]) <= LOGIN_WINDOW_S
    # Another account is not held.
    assert (await _login(client, "bob@example.com", PASSWORD)).status_code == 200


async def test_unknown_emails_are_held_the_same(client: httpx.AsyncClient) -> None:
    for _ in range(LOGIN_FAILURES):
        assert (await _login(client, "nobody@example.com", "a guess")).status_code == 401
    assert (await _login(client, "nobody@example.com", "a guess")).status_code == 429


async def test_a_successful_log_in_clears_the_count(client: httpx.AsyncClient) -> None:
    await signup(client)
    for _ in range(LOGIN_FAILURES - 1):
        assert (await _login(client, "ada@example.com", "typo")).status_code == 401
    assert (await _login(client, "ada@example.com", PASSWORD)).status_code == 200
    for _ in range(LOGIN_FAILURES - 1):
        assert (await _login(client, "ada@example.com", "typo")).status_code == 401
    assert (await _login(client, "ada@example.com", PASSWORD)).status_code == 200


async def test_the_console_says_so_on_its_form(client: httpx.AsyncClient) -> None:
    for _ in range(LOGIN_FAILURES):
        await _login(client, "ada@example.com", "a guess")
    page = await post_form(
        client, "/login", "/login", {"email": "ada@example.com", "password": PASSWORD}
    )
    assert page.status_code == 429
    assert "Too many failed log-ins for this account" in page.text
    assert "retry-after" in page.headers


@pytest.mark.redis
@pytest.mark.skipif(not REDIS_URL, reason="IPAAS_TEST_REDIS_URL is not set")
async def test_api_processes_share_the_count_in_redis(redis_key_prefix: str) -> None:
    assert REDIS_URL is not None
    limiters = [TenantRateLimiter(REDIS_URL, key_prefix=redis_key_prefix) for _ in range(2)]
    throttles = [LoginThrottle(limiter.storage) for limiter in limiters]
    try:
        for n in range(LOGIN_FAILURES):
            await throttles[n % 2].check("ada@example.com")
            await throttles[n % 2].failed("ada@example.com")
        for throttle in throttles:
            with pytest.raises(TooManyAttempts):
                await throttle.check("ada@example.com")
        await throttles[0].check("bob@example.com")
    finally:
        for limiter in limiters:
            await limiter.aclose()


async def test_an_unreachable_store_of_counts_lets_log_ins_through() -> None:
    limiter = TenantRateLimiter("redis://127.0.0.1:1/0")
    throttle = LoginThrottle(limiter.storage)
    try:
        for _ in range(LOGIN_FAILURES + 1):
            await throttle.failed("ada@example.com")
        await throttle.check("ada@example.com")
    finally:
        await limiter.aclose()
