"""Issue 4's per-tenant cap, scaled out: three worker processes with room for 18 executions
claim one tenant's backlog on PostgreSQL, and the tenant never has more than its cap running.

The contract suite races claimers inside one process (``test_exact_under_concurrent_claimers``)
and checks the lock's snapshot (``TestPostgresClaimLock``); this runs the product: claims by
id from the Redis queue and fair claims from the store, in three processes at once, each
claim one statement that counts under the tenant's lock (migration 0008).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import asyncpg

from tests.process.conftest import SCALED_OUT_MARKS, Api, Fleet, Standin, wait_for

pytestmark = SCALED_OUT_MARKS

CAP = 4
WEBHOOKS = 40
#: Each delivery is held this long at the stand-in, so the backlog outlasts many claims.
SLOW_S = 0.25
ENV = {"IPAAS_WORKERS": "6", "IPAAS_POLL_INTERVAL_S": "0.2"}


class RunningSampler:
    """Counts the ``running`` executions in the database every few milliseconds, from a
    thread, until stopped; ``peak`` is the largest count seen."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url.replace("postgresql+asyncpg://", "postgresql://")
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> RunningSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)

    async def _run(self) -> None:
        connection = await asyncpg.connect(self.url)
        try:
            while not self._stop.is_set():
                count = await connection.fetchval(
                    "SELECT count(*) FROM execution WHERE status = 'running'"
                )
                self.samples.append(int(count))
                await asyncio.sleep(0.005)
        finally:
            await connection.close()


def test_one_tenant_never_runs_more_than_its_cap_across_workers(
    tmp_path: Path, fleet: list[Fleet], database_url: str, redis_url: str, standin: Standin
) -> None:
    fleet_ = Fleet(tmp_path, {"IPAAS_DATABASE_URL": database_url, "IPAAS_REDIS_URL": redis_url})
    fleet.append(fleet_)
    fleet_.migrate()
    api = Api(fleet_.start("api").url).signup()
    try:
        _run_and_check(api, fleet_, database_url, standin)
    finally:
        api.close()


def _run_and_check(api: Api, fleet_: Fleet, database_url: str, standin: Standin) -> None:
    for _ in range(3):
        fleet_.start("worker", **ENV, IPAAS_TENANT_MAX_CONCURRENCY=str(CAP))
    standin.add_fault("/services/", status=None, count=None, delay_s=SLOW_S)
    workflow_id = api.slack_workflow(standin.slack_hook(), "cap {{ trigger.body.n }}")
    with RunningSampler(database_url) as sampler:
        started = time.monotonic()
        for n in range(WEBHOOKS):
            response = api.post(f"/api/webhooks/{workflow_id}", json={"n": n})
            assert response.status_code == 202, response.text
        wait_for(
            lambda: api.executions(workflow_id=workflow_id, status="succeeded"),
            until=lambda done: len(done) == WEBHOOKS,
            timeout_s=60,
            what="every execution succeeded",
            interval_s=0.2,
        )
        took = time.monotonic() - started
    print(
        f"\n{WEBHOOKS} executions of one tenant, cap {CAP}, 3 workers x {ENV['IPAAS_WORKERS']} "
        f"slots: peak running {sampler.peak} over {len(sampler.samples)} samples, {took:.1f} s"
    )
    # Never over the cap, and at it: the backlog waited on the cap, so the bound was tested.
    assert sampler.peak == CAP, sampler.peak
    # At the cap the whole way: about WEBHOOKS / CAP rounds of SLOW_S, not one round.
    assert took >= (WEBHOOKS / CAP) * SLOW_S * 0.8
    assert len({r["body"]["text"] for r in standin.requests(kind="slack_webhook")}) == WEBHOOKS
    assert not fleet_.error_events(), fleet_.error_events()[:5]
