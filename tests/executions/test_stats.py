from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from ipaas.cli import main
from ipaas.config import Settings, Signup
from ipaas.engine.worker import Worker
from ipaas.executions.models import ExecutionStatus
from ipaas.executions.stats import percentile, summarize
from ipaas.stores import FinishedExecution, create_store
from ipaas.tenants import service as tenant_service
from tests.conftest import TEST_KEY, signup
from tests.engine.test_worker import Api, api, worker

__all__ = ["api", "worker"]  # the shared fixtures, re-used here

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class TestSummarize:
    def test_nearest_rank_percentiles(self) -> None:
        values = [float(n) for n in range(1, 101)]
        assert [percentile(values, p) for p in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]
        assert percentile([], 50) is None
        assert percentile([3.0], 99) == 3.0

    def test_minutes_and_statuses(self) -> None:
        finished = [
            FinishedExecution(ExecutionStatus.succeeded, T0 + timedelta(seconds=s), d)
            for s, d in ((5, 1.0), (30, 2.0), (70, 3.0))
        ] + [FinishedExecution(ExecutionStatus.failed, T0 + timedelta(seconds=75), 4.0)]
        got = summarize(finished, since=T0, until=T0 + timedelta(minutes=2), truncated=False)
        assert got.total == 4
        assert got.by_status["succeeded"] == 3
        assert got.by_status["timed_out"] == 0
        assert got.per_minute_avg["succeeded"] == 1.5
        assert [(m.minute, m.counts) for m in got.per_minute] == [
            (T0, {"succeeded": 2}),
            (T0 + timedelta(minutes=1), {"succeeded": 1, "failed": 1}),
        ]
        assert got.duration_s == {"p50": 2.0, "p95": 4.0, "p99": 4.0}


async def _run_one(api: Api, headers: dict[str, str], worker: Worker, *, ok: bool) -> None:
    url = f"{api.standin_url}/{'echo' if ok else 'nowhere'}"
    r = await api.client.post(
        "/api/workflows",
        json={"name": "s", "steps": [{"id": "s", "type": "http_request", "config": {"url": url}}]},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    r = await api.client.post(f"/api/webhooks/{r.json()['id']}", json={})
    assert r.status_code == 202
    await worker.run_until_empty()


async def test_stats_are_the_tenants_own(api: Api, worker: Worker) -> None:
    other = await signup(api.client, "bob@example.com")
    other.pop("tenant_id")
    await _run_one(api, api.auth, worker, ok=True)
    await _run_one(api, api.auth, worker, ok=True)
    for _ in range(3):
        await _run_one(api, other, worker, ok=False)
    mine = (await api.client.get("/api/stats", headers=api.auth)).json()
    theirs = (await api.client.get("/api/stats?window_s=600", headers=other)).json()
    assert mine["total"] == 2
    assert mine["by_status"]["succeeded"] == 2
    assert mine["by_status"]["failed"] == 0
    assert mine["duration_s"]["p50"] is not None
    assert sum(sum(m["counts"].values()) for m in mine["per_minute"]) == 2
    assert theirs["total"] == 3
    assert theirs["by_status"]["failed"] == 3


async def test_window_is_bounded(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    assert (await client.get("/api/stats?window_s=86401", headers=auth)).status_code == 422
    assert (await client.get("/api/stats?window_s=59", headers=auth)).status_code == 422
    assert (await client.get("/api/stats")).status_code == 401
    r = await client.get("/api/stats?window_s=60", headers=auth)
    assert r.status_code == 200
    assert r.json()["total"] == 0
    assert r.json()["duration_s"] == {"p50": None, "p95": None, "p99": None}


def test_cli_prints_a_tenants_stats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IPAAS_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("IPAAS_SECRET_KEY", TEST_KEY)
    assert main(["migrate"]) == 0

    async def sign_up() -> str:
        store = create_store(Settings())
        await store.startup()
        try:
            tenant, _ = await tenant_service.signup(
                store, email="a@example.com", password="long enough pw", tenant_name="A",
                token_ttl_s=60, policy=Signup.open,
            )  # fmt: skip
        finally:
            await store.shutdown()
        return tenant.id

    tenant_id = asyncio.run(sign_up())
    capsys.readouterr()
    assert main(["stats", tenant_id, "--window", "120"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == 0
    assert set(report["by_status"]) == {"succeeded", "failed", "cancelled", "timed_out"}
    assert main(["stats", "tn_missing"]) == 1


@pytest.mark.parametrize(
    ("window", "why"),
    [
        ("5", "must be 60 to 86,400 seconds: '5'"),
        ("999999", "must be 60 to 86,400 seconds: '999999'"),
        ("1e3", "not a whole number of seconds: '1e3'"),
    ],
)
def test_cli_refuses_a_window_the_api_refuses(
    capsys: pytest.CaptureFixture[str], window: str, why: str
) -> None:
    """Found by hand: ``--window 5`` showed the last minute, and ``--window 999999`` the last
    day, as if asked for."""
    with pytest.raises(SystemExit) as exited:
        main(["stats", "tn_any", "--window", window])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"ipaas stats: error: argument --window: {why}"
    )
