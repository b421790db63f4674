from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import argon2.profiles
import httpx
import pytest
import structlog
from argon2 import PasswordHasher
from cryptography.fernet import Fernet
from structlog.testing import capture_logs

from ipaas.api.app import create_app
from ipaas.config import Settings
from ipaas.runtime import Runtime
from ipaas.tenants import service as tenant_service

pytest_plugins = ["tests.standins.fixtures"]

TEST_KEY = Fernet.generate_key().decode()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # In CI the service-backed suites must run: a missing service is a failure, not a skip.
    if os.environ.get("IPAAS_REQUIRE_SERVICES"):
        for var in ("IPAAS_TEST_POSTGRES_URL", "IPAAS_TEST_REDIS_URL"):
            if not os.environ.get(var):
                raise pytest.UsageError(f"IPAAS_REQUIRE_SERVICES is set but {var} is not")


#: The hasher the product uses (argon2id, RFC 9106's low-memory profile: 64 MiB, 3 passes),
#: kept for the test that checks it; ~150 ms a hash on the CI machine.
PRODUCTION_HASHER = tenant_service._hasher


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process tests hash passwords with argon2-cffi's profile for tests (same argon2id
    format, minimal cost): a sign-up or log-in was ~150 ms of argon2 each, a fifth of
    ``make test``. Server processes that tests start keep the real cost."""
    monkeypatch.setattr(tenant_service, "_hasher", _CHEAP_HASHER)


_CHEAP_HASHER = PasswordHasher.from_parameters(argon2.profiles.CHEAPEST)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        env="test",
        database_url="memory://",
        secret_key=TEST_KEY,
        data_dir=tmp_path,
        log_format="console",
        log_level="warning",
        log_flush_s=0,  # capsys reads lines right after they are logged
        egress_allow=["127.0.0.1/32"],
        poll_interval_s=0.05,
    )


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """The store of ``settings.database_url``: the memory store, unless a module's
    ``settings`` names another (``tests/engine/conftest.py``, ``each_store``)."""
    return Runtime.build(settings)


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The API over ASGI, with no background worker: tests drive executions explicitly."""
    app = create_app(runtime=runtime, workers=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ipaas.test") as c:
            yield c


async def signup(client: httpx.AsyncClient, email: str = "ada@example.com") -> dict[str, str]:
    response = await client.post(
        "/api/auth/signup",
        json={"email": email, "password": "correct horse battery", "tenant_name": "Acme"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return {"Authorization": f"Bearer {body['access_token']}", "tenant_id": body["tenant_id"]}


@pytest.fixture
async def auth(client: httpx.AsyncClient) -> dict[str, str]:
    headers = await signup(client)
    headers.pop("tenant_id")
    return headers


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every line logged while the test runs, info included, whatever level an earlier test
    configured (the logger filters below its level before any processor sees a line)."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**saved)


@pytest.fixture
async def redis_key_prefix() -> AsyncIterator[str]:
    """A Redis key prefix of this test's own (``IPAAS_TEST_REDIS_URL``); its keys are
    deleted afterwards."""
    from redis.asyncio import Redis

    url = os.environ.get("IPAAS_TEST_REDIS_URL")
    assert url is not None
    name = f"ipaas-test-{secrets.token_hex(6)}"
    yield name
    async with Redis.from_url(url) as redis:
        keys = [key async for key in redis.scan_iter(match=f"{name}*")]
        if keys:
            await redis.delete(*keys)
