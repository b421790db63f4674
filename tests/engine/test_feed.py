from __future__ import annotations

import asyncio
import time

from ipaas.config import Settings
from ipaas.engine.queue.memory import MemoryQueue
from ipaas.engine.worker import Worker
from ipaas.executions.models import ExecutionStatus, TriggerData
from ipaas.runtime import Runtime
from ipaas.stores.memory import MemoryStore
from ipaas.webhooks import service as webhook_service
from ipaas.workflows import service as workflow_service
from ipaas.workflows.schemas import WorkflowCreate
from tests.standins.server import StandinServer


async def test_storm_beyond_the_buffer_is_worked_off_from_the_store(
    settings: Settings, clean_standin: StandinServer
) -> None:
    queue = MemoryQueue(buffer_size=5)
    runtime = Runtime.build(
        settings.model_copy(update={"poll_interval_s": 5.0}), store=MemoryStore(), queue=queue
    )
    await runtime.startup()
    workflow = await workflow_service.create(
        runtime.store,
        tenant_id="tn_a",
        data=WorkflowCreate(
            name="w",
            steps=[
                {
                    "id": "c",
                    "type": "http_request",  # type: ignore[list-item]
                    "config": {"url": f"{clean_standin.url}/echo"},
                }
            ],
        ),
    )
    ids = [
        (
            await webhook_service.start(
                runtime.store,
                runtime.queue,
                workflow_id=workflow.id,
                tenant_id="tn_a",
                version=1,
                trigger=TriggerData(body={"n": n}),
            )
        ).id
        for n in range(60)
    ]
    assert queue.dropped == 55  # the buffer held 5: the rest exist only in the store
    worker = Worker(runtime, concurrency=3)
    started = time.monotonic()
    await worker.start(reaper=False)
    try:
        deadline = time.monotonic() + 20
        while await runtime.store.count_queued() or worker.running:
            assert time.monotonic() < deadline, "storm not worked off"
            await asyncio.sleep(0.01)
    finally:
        await worker.stop(grace_s=5)
        await runtime.shutdown()
    elapsed = time.monotonic() - started
    statuses = {runtime.store.executions[i].status for i in ids}  # type: ignore[attr-defined]
    assert statuses == {ExecutionStatus.succeeded}
    # Store claims run back to back, not one poll interval (5 s) per batch.
    assert elapsed < 5
    assert len(clean_standin.requests(path_prefix="/echo")) == 60
