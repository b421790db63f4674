"""``IPAAS_TENANT_API_RATE_LIMIT``: each tenant's bearer-token API requests in a budget of
their own, so one tenant's script cannot take the process from the others."""

from __future__ import annotations

import httpx
import pytest

from ipaas.config import Settings
from ipaas.runtime import Runtime
from tests.conftest import signup


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # 3 per 3,000 s: the limiter's windows start at multiples of the window (epoch time), and
    # with a window of 3 s the test's requests straddled a boundary now and then, where the
    # count of the window before is weighted down and a fourth request passed (a flaky
    # failure on a busy machine). Across a window of 3,000 s that is 1,000 times rarer.
    return settings.model_copy(update={"tenant_api_rate_limit": 0.001, "tenant_api_rate_burst": 3})


async def test_over_its_rate_a_tenant_gets_429_and_the_others_do_not(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    other = await signup(client, "grace@example.com")
    created = await client.post(
        "/api/workflows",
        json={"name": "w", "steps": [{"id": "s", "type": "http_request",
              "config": {"url": "http://x.test"}}]},
        headers=auth,
    )  # fmt: skip
    assert created.status_code == 201  # the first of the burst of 3
    answers = [(await client.get("/api/workflows", headers=auth)).status_code for _ in range(3)]
    assert answers == [200, 200, 429]
    refused = await client.get("/api/executions", headers=auth)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "api_rate_limited"
    assert error["message"].startswith("Over this tenant's API request rate (3 per 3000 s)")
    assert 1 <= int(refused.headers["retry-after"]) <= 3000
    assert refused.headers["ratelimit-policy"] == "3;w=3000"
    assert refused.headers["ratelimit-remaining"] == "0"
    # Another tenant has its own budget.
    assert (await client.get("/api/workflows", headers=other)).status_code == 200
    # The webhooks have theirs: the intake still takes the limited tenant's events.
    webhook = await client.post(f"/api/webhooks/{created.json()['id']}", json={})
    assert webhook.status_code == 202
    # No token: 401, and nobody's budget is spent.
    assert (await client.get("/api/workflows")).status_code == 401


async def test_unset_means_no_limit(client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.settings.tenant_api_rate_limit = None
    auth = await signup(client, "hedy@example.com")
    answers = {(await client.get("/api/workflows", headers=auth)).status_code for _ in range(30)}
    assert answers == {200}
