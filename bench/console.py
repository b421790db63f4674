"""``python -m bench.console`` (part of ``make bench``): server time of every console page
with 10,000 executions of the last hour in a SQLite store (issue 6's 200 ms budget).

Runs the app in this process over ASGI (no sockets, so the figure is the server's own time),
signed in with a console session; prints the median and the worst of ``--runs`` requests per
page. It measures and prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from ipaas.api.app import create_app
from ipaas.config import Settings, Signup
from ipaas.executions.models import Execution, ExecutionStatus, TriggerData
from ipaas.kit.clock import utcnow
from ipaas.kit.ids import new_id
from ipaas.runtime import Runtime
from ipaas.stores.sql import SqlStore, run_migrations
from ipaas.tenants import service as tenant_service
from ipaas.web.session import SESSION_COOKIE
from ipaas.workflows import service as workflow_service
from ipaas.workflows.schemas import WorkflowCreate

STATUSES = [ExecutionStatus.succeeded] * 17 + [ExecutionStatus.failed, ExecutionStatus.queued]


async def seed(store: SqlStore, executions: int, workflows: int) -> tuple[str, str, str, str]:
    tenant, token = await tenant_service.signup(
        store,
        email="bench@example.com",
        password="bench password",
        tenant_name="Bench",
        token_ttl_s=3600,
        policy=Signup.open,
    )
    ids = []
    for n in range(workflows):
        data = WorkflowCreate.model_validate(
            {
                "name": f"workflow {n}",
                "steps": [
                    {"id": "s", "type": "http_request", "config": {"url": "https://example.com/"}}
                ],
            }
        )
        ids.append((await workflow_service.create(store, tenant_id=tenant.id, data=data)).id)
    now = utcnow()
    rng = random.Random(6)
    last = ""
    for n in range(executions):
        created = now - timedelta(seconds=rng.uniform(0, 3590))
        status = rng.choice(STATUSES)
        started = created + timedelta(milliseconds=5) if status.terminal else None
        execution = Execution(
            id=new_id("ex"),
            tenant_id=tenant.id,
            workflow_id=rng.choice(ids),
            workflow_version=1,
            status=status,
            trigger=TriggerData(body={"n": n}),
            created_at=created,
            started_at=started,
            finished_at=started + timedelta(milliseconds=rng.uniform(5, 900)) if started else None,
        )
        await store.create_execution(execution)
        last = execution.id
    return tenant.id, token, ids[0], last


async def main(executions: int, workflows: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'ipaas.db'}"
        await asyncio.to_thread(run_migrations, url)
        settings = Settings(
            env="test",
            database_url=url,
            secret_key=Fernet.generate_key().decode(),
            data_dir=Path(tmp),
            log_level="warning",
        )
        store = SqlStore(url)
        runtime = Runtime.build(settings, store=store)
        app = create_app(runtime=runtime, workers=False)
        async with app.router.lifespan_context(app):
            started = time.perf_counter()
            _, token, workflow_id, execution_id = await seed(store, executions, workflows)
            print(
                f"seeded {executions} executions over {workflows} workflows "
                f"in {time.perf_counter() - started:.1f} s"
            )
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                client.cookies.set(SESSION_COOKIE, token)
                pages = [
                    "/",
                    "/dashboard/live",
                    "/workflows",
                    f"/workflows/{workflow_id}",
                    f"/workflows/{workflow_id}/edit",
                    f"/workflows/{workflow_id}/versions",
                    f"/workflows/{workflow_id}/versions/1",
                    "/workflows/new",
                    "/credentials",
                    "/executions",
                    "/executions/rows",
                    f"/executions/{execution_id}",
                    "/tokens",
                    "/members",
                    "/login",
                ]
                print(f"{'page':<45} {'median ms':>10} {'max ms':>8}")
                for page in pages:
                    times = []
                    for _ in range(runs):
                        t0 = time.perf_counter()
                        response = await client.get(page)
                        times.append((time.perf_counter() - t0) * 1000)
                        assert response.status_code == 200, (page, response.status_code)
                    print(f"{page:<45} {statistics.median(times):>10.1f} {max(times):>8.1f}")
        await store.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--workflows", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.executions, args.workflows, args.runs))
