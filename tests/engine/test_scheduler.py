"""The scheduler: one execution per workflow and tick, the latest tick only, in the right zone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ipaas.config import Settings
from ipaas.engine import scheduler
from ipaas.engine.queue import JobQueue
from ipaas.engine.queue.memory import MemoryQueue
from ipaas.engine.scheduler import (
    Memo,
    at_fixed_times,
    dedup_key,
    due_tick,
    run_scheduler,
    schedule_once,
)
from ipaas.executions.models import Execution, ExecutionStatus
from ipaas.kit.ids import new_id
from ipaas.runtime import Runtime
from ipaas.stores import MemoryStore, Store
from ipaas.stores.base import ScheduledWorkflow
from ipaas.stores.sql import SqlStore, run_migrations
from ipaas.tenants.models import ApiToken, Tenant, User
from ipaas.workflows.models import Step, Trigger, Workflow

#: A winter Monday: Europe/Berlin is UTC+1.
CREATED = datetime(2026, 1, 12, 7, 2, 30, tzinfo=UTC)


def utc(hour: int, minute: int, second: int = 0, *, day: int = 12) -> datetime:
    return datetime(2026, 1, day, hour, minute, second, tzinfo=UTC)


@pytest.fixture
async def queue() -> AsyncIterator[JobQueue]:
    q = MemoryQueue(buffer_size=1000)
    await q.startup()
    yield q
    await q.shutdown()


@pytest.fixture
async def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ipaas.db'}"
    await asyncio.to_thread(run_migrations, url)
    sql = SqlStore(url)
    await sql.startup()
    yield sql
    await sql.shutdown()


async def new_tenant(store: Store) -> str:
    tenant = Tenant(id=new_id("tn"), name="Acme", created_at=CREATED)
    user = User(
        id=new_id("usr"),
        tenant_id=tenant.id,
        email=f"{new_id('u')}@example.com",
        password_hash="x",
        created_at=CREATED,
    )
    token = ApiToken(
        id=new_id("tok"),
        tenant_id=tenant.id,
        user_id=user.id,
        name="t",
        token_hash=new_id("h"),
        created_at=CREATED,
    )
    await store.create_tenant(tenant, user, token)
    return tenant.id


async def new_schedule(
    store: Store,
    tenant_id: str,
    cron: str = "*/5 * * * *",
    *,
    timezone: str | None = None,
    active: bool = True,
    created_at: datetime = CREATED,
) -> Workflow:
    trigger: dict[str, Any] = {"type": "schedule", "cron": cron}
    if timezone is not None:
        trigger["timezone"] = timezone
    workflow = Workflow(
        id=new_id("wf"),
        tenant_id=tenant_id,
        name="Every five minutes",
        active=active,
        version=1,
        trigger=Trigger.model_validate(trigger),
        steps=[Step(id="notify", type="http_request", config={"url": "http://example.com"})],
        created_at=created_at,
        updated_at=created_at,
    )
    await store.create_workflow(workflow)
    return workflow


async def executions(store: Store, tenant_id: str, workflow_id: str) -> list[Execution]:
    page = await store.list_executions(tenant_id, workflow_id=workflow_id, limit=1000)
    return sorted(page.items, key=lambda ex: ex.trigger.body["scheduled_for"])


async def _all(store: Store, tenant_id: str) -> list[Execution]:
    return (await store.list_executions(tenant_id, limit=1000)).items


def scheduled_for(items: list[Execution]) -> list[str]:
    return [ex.trigger.body["scheduled_for"] for ex in items]


class TestScheduleOnce:
    async def test_one_execution_per_tick(self, store: MemoryStore, queue: JobQueue) -> None:
        tenant = await new_tenant(store)
        wf = await new_schedule(store, tenant)  # created 07:02:30, ticks */5 in UTC

        first = await schedule_once(store, queue, now=utc(7, 5, 0))
        second = await schedule_once(store, queue, now=utc(7, 10, 1))

        made = await executions(store, tenant, wf.id)
        assert [ex.id for ex in made] == first + second
        assert len(made) == 2
        assert scheduled_for(made) == ["2026-01-12T07:05:00+00:00", "2026-01-12T07:10:00+00:00"]
        ex = made[0]
        assert ex.status is ExecutionStatus.queued
        assert ex.tenant_id == tenant
        assert ex.workflow_version == wf.version
        assert ex.trigger.type == "schedule"
        assert ex.dedup_key == "schedule:2026-01-12T07:05:00+00:00"
        # Offered to the workers, like a webhook's execution.
        assert await queue.receive(max_items=10, timeout_s=0) == first + second

    async def test_the_same_tick_twice_makes_one(self, store: MemoryStore, queue: JobQueue) -> None:
        tenant = await new_tenant(store)
        wf = await new_schedule(store, tenant)
        assert len(await schedule_once(store, queue, now=utc(7, 5, 0))) == 1
        assert await schedule_once(store, queue, now=utc(7, 5, 0)) == []
        assert await schedule_once(store, queue, now=utc(7, 9, 59)) == []
        assert len(await executions(store, tenant, wf.id)) == 1

    async def test_the_memo_skips_the_insert_and_is_not_needed(
        self, store: MemoryStore, queue: JobQueue
    ) -> None:
        tenant = await new_tenant(store)
        wf = await new_schedule(store, tenant)
        memo = Memo()
        assert len(await schedule_once(store, queue, now=utc(7, 5), memo=memo)) == 1
        assert memo.ticks == {wf.id: "schedule:2026-01-12T07:05:00+00:00"}
        # A second process (no memo) hits the unique key and creates nothing.
        assert await schedule_once(store, queue, now=utc(7, 6)) == []
        assert await schedule_once(store, queue, now=utc(7, 6), memo=memo) == []
        assert len(await executions(store, tenant, wf.id)) == 1
        # A workflow that is no longer scheduled is forgotten.
        wf.active = False
        assert await store.update_workflow(wf, new_version=False)
        await schedule_once(store, queue, now=utc(7, 7), memo=memo)
        assert memo.ticks == {}
        assert memo.quiet_until == {}

    async def test_the_memo_computes_a_schedule_once_per_tick(
        self, store: MemoryStore, queue: JobQueue, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A pass a second for every schedule ran croniter twice a second per workflow: 165 ms
        a pass for 1,000 schedules. With the memo, a schedule is computed again only once its
        next tick has come, or the workflow changed."""
        tenant = await new_tenant(store)
        wf = await new_schedule(store, tenant)  # */5
        computed: list[datetime] = []
        real_due_tick = scheduler.due_tick

        def counted(workflow: Workflow, now: datetime) -> datetime | None:
            computed.append(now)
            return real_due_tick(workflow, now)

        monkeypatch.setattr(scheduler, "due_tick", counted)
        memo = Memo()
        for second in range(0, 300, 1):  # 07:05:00 to 07:09:59, a pass a second
            await schedule_once(store, queue, now=utc(7, 5) + timedelta(seconds=second), memo=memo)
        assert computed == [utc(7, 5)]
        assert len(await schedule_once(store, queue, now=utc(7, 10), memo=memo)) == 1
        assert computed == [utc(7, 5), utc(7, 10)]
        # A change (a new cron) is seen at the next pass, not at the old next tick.
        wf.trigger = Trigger.model_validate({"type": "schedule", "cron": "* * * * *"})
        wf.updated_at = utc(7, 10, 30)
        assert await store.update_workflow(wf, new_version=True)
        assert await schedule_once(store, queue, now=utc(7, 10, 31), memo=memo) == []
        assert len(await schedule_once(store, queue, now=utc(7, 11), memo=memo)) == 1
        assert computed[2:] == [utc(7, 10, 31), utc(7, 11)]

    async def test_the_memo_reads_whole_only_new_or_changed_schedules(
        self, store: MemoryStore, queue: JobQueue, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Reading every schedule whole each second took 0.1-0.2 s a pass for 10,000 of
        them; a pass now reads ids and ``updated_at``, and whole only what changed."""
        tenant = await new_tenant(store)
        schedules = [await new_schedule(store, tenant) for _ in range(3)]
        reads: list[list[str] | None] = []
        real_list = store.list_scheduled_workflows

        async def counted(ids: Collection[str] | None = None) -> list[ScheduledWorkflow]:
            reads.append(None if ids is None else sorted(ids))
            return await real_list(ids)

        monkeypatch.setattr(store, "list_scheduled_workflows", counted)
        memo = Memo()
        assert len(await schedule_once(store, queue, now=utc(7, 5), memo=memo)) == 3
        assert reads == [sorted(w.id for w in schedules)]
        for second in range(1, 60):
            await schedule_once(store, queue, now=utc(7, 5, second), memo=memo)
        assert len(reads) == 1

        # An edit (a new cron), a new schedule and a pause: the edit and the new one are
        # read, and both take effect; the paused one is dropped.
        edited, paused, _ = schedules
        edited.trigger = Trigger.model_validate({"type": "schedule", "cron": "* * * * *"})
        edited.updated_at = utc(7, 6, 1)
        assert await store.update_workflow(edited, new_version=True)
        paused.active = False
        paused.updated_at = utc(7, 6, 1)
        assert await store.update_workflow(paused, new_version=False)
        added = await new_schedule(store, tenant, "* * * * *", created_at=utc(7, 6, 2))
        made = await schedule_once(store, queue, now=utc(7, 7), memo=memo)
        assert reads[1:] == [sorted([edited.id, added.id])]
        assert len(made) == 2
        assert {ex.workflow_id for ex in await _all(store, tenant) if ex.id in made} == {
            edited.id,
            added.id,
        }
        assert paused.id not in memo.workflows
        assert await schedule_once(store, queue, now=utc(7, 7, 30), memo=memo) == []
        assert len(reads) == 2

    async def test_many_new_schedules_are_read_in_one_go(
        self, store: MemoryStore, queue: JobQueue, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        tenant = await new_tenant(store)
        monkeypatch.setattr(scheduler, "READ_BY_ID_MAX", 2)
        for _ in range(3):
            await new_schedule(store, tenant)
        reads: list[Collection[str] | None] = []
        real_list = store.list_scheduled_workflows

        async def counted(ids: Collection[str] | None = None) -> list[ScheduledWorkflow]:
            reads.append(ids)
            return await real_list(ids)

        monkeypatch.setattr(store, "list_scheduled_workflows", counted)
        assert len(await schedule_once(store, queue, now=utc(7, 5), memo=Memo())) == 3
        assert reads == [None]

    async def test_concurrent_passes_on_sqlite_make_one_per_tick(
        self, sqlite_store: SqlStore, queue: JobQueue
    ) -> None:
        tenant = await new_tenant(sqlite_store)
        workflows = [await new_schedule(sqlite_store, tenant) for _ in range(4)]

        for now in (utc(7, 5, 0), utc(7, 10, 0)):
            results = await asyncio.gather(
                *(schedule_once(sqlite_store, queue, now=now) for _ in range(3))
            )
            assert sum(len(ids) for ids in results) == len(workflows)

        for wf in workflows:
            made = await executions(sqlite_store, tenant, wf.id)
            assert scheduled_for(made) == [
                "2026-01-12T07:05:00+00:00",
                "2026-01-12T07:10:00+00:00",
            ]

    async def test_after_downtime_only_the_latest_tick_runs_once(
        self, store: MemoryStore, queue: JobQueue
    ) -> None:
        tenant = await new_tenant(store)
        wf = await new_schedule(store, tenant)
        await schedule_once(store, queue, now=utc(7, 5, 0))
        # Down from 07:06 until 07:32: ticks 07:10 ... 07:30 (five of them) were missed.
        back = await schedule_once(store, queue, now=utc(7, 32, 0))
        again = await schedule_once(store, queue, now=utc(7, 33, 0))

        assert len(back) == 1
        assert again == []
        assert scheduled_for(await executions(store, tenant, wf.id)) == [
            "2026-01-12T07:05:00+00:00",
            "2026-01-12T07:30:00+00:00",
        ]

    async def test_time_zone(self, store: MemoryStore, queue: JobQueue) -> None:
        tenant = await new_tenant(store)
        berlin = await new_schedule(store, tenant, "0 9 * * *", timezone="Europe/Berlin")
        default = await new_schedule(store, tenant, "0 9 * * *")  # UTC

        # 09:00 in Berlin in winter is 08:00 UTC.
        assert await schedule_once(store, queue, now=utc(7, 59, 59)) == []
        at_eight = await schedule_once(store, queue, now=utc(8, 0, 0))
        at_nine = await schedule_once(store, queue, now=utc(9, 0, 0))

        made = await executions(store, tenant, berlin.id)
        assert [ex.id for ex in made] == at_eight
        assert scheduled_for(made) == ["2026-01-12T09:00:00+01:00"]
        assert made[0].dedup_key == "schedule:2026-01-12T08:00:00+00:00"
        assert [ex.id for ex in await executions(store, tenant, default.id)] == at_nine

    async def test_summer_time(self, store: MemoryStore, queue: JobQueue) -> None:
        tenant = await new_tenant(store)
        created = datetime(2026, 7, 1, 0, 0, tzinfo=UTC)
        wf = await new_schedule(
            store, tenant, "0 9 * * *", timezone="Europe/Berlin", created_at=created
        )
        # 09:00 in Berlin in summer is 07:00 UTC.
        assert await schedule_once(store, queue, now=created.replace(hour=6, minute=59)) == []
        assert len(await schedule_once(store, queue, now=created.replace(hour=7))) == 1
        made = await executions(store, tenant, wf.id)
        assert scheduled_for(made) == ["2026-07-01T09:00:00+02:00"]

    async def test_inactive_workflows_are_skipped(
        self, store: MemoryStore, queue: JobQueue
    ) -> None:
        tenant = await new_tenant(store)
        paused = await new_schedule(store, tenant, active=False)
        assert await schedule_once(store, queue, now=utc(7, 5)) == []
        assert await executions(store, tenant, paused.id) == []

    async def test_ticks_before_creation_or_change_are_skipped(
        self, store: MemoryStore, queue: JobQueue
    ) -> None:
        tenant = await new_tenant(store)
        wf = await new_schedule(store, tenant)  # created 07:02:30
        # The latest tick, 07:00, is before the workflow existed.
        assert await schedule_once(store, queue, now=utc(7, 4, 59)) == []
        assert len(await schedule_once(store, queue, now=utc(7, 5))) == 1
        # Edited (or re-activated) at 07:21: the 07:20 tick is from before the change.
        wf.updated_at = utc(7, 21)
        assert await store.update_workflow(wf, new_version=False)
        assert await schedule_once(store, queue, now=utc(7, 22)) == []
        assert len(await schedule_once(store, queue, now=utc(7, 25))) == 1

    async def test_a_tick_at_the_creation_instant_runs(self) -> None:
        store = MemoryStore()
        tenant = await new_tenant(store)
        wf = await new_schedule(store, tenant, created_at=utc(7, 5))
        assert due_tick(wf, utc(7, 5)) == utc(7, 5)
        assert due_tick(wf, utc(7, 4, 59)) is None

    async def test_an_invalid_stored_schedule_does_not_stop_the_others(
        self, store: MemoryStore, queue: JobQueue
    ) -> None:
        tenant = await new_tenant(store)
        broken = await new_schedule(store, tenant)
        # Written behind the API's back (or a zone dropped from tzdata).
        broken.trigger = Trigger.model_validate(
            {"type": "schedule", "cron": "*/5 * * * *", "timezone": "Mars/Olympus"}
        )
        assert await store.update_workflow(broken, new_version=False)
        fine = await new_schedule(store, tenant)
        created = await schedule_once(store, queue, now=utc(7, 5))
        assert [ex.id for ex in await executions(store, tenant, fine.id)] == created
        assert await executions(store, tenant, broken.id) == []

    async def test_a_stored_schedule_that_never_fires_does_not_stop_the_others(
        self, store: MemoryStore, queue: JobQueue, logs: list[MutableMapping[str, Any]]
    ) -> None:
        # February 30, stored before the API refused it: croniter cannot find its tick.
        # Before, that error ended every pass, so no tenant's schedule fired any more.
        tenant = await new_tenant(store)
        broken = await new_schedule(store, tenant)
        broken.trigger = Trigger.model_validate({"type": "schedule", "cron": "0 0 30 2 *"})
        assert await store.update_workflow(broken, new_version=False)
        other_tenant = await new_tenant(store)
        fine = await new_schedule(store, other_tenant)
        memo = Memo()
        created = await schedule_once(store, queue, now=utc(7, 5), memo=memo)
        assert [ex.id for ex in await executions(store, other_tenant, fine.id)] == created
        assert len(created) == 1
        warned = [line for line in logs if line["event"] == "schedule_invalid"]
        assert [(w["workflow_id"], w["tenant_id"]) for w in warned] == [(broken.id, tenant)]
        assert warned[0]["exc_info"] is True  # the traceback says what failed
        # Left alone (and not warned about) for an hour; the others go on every minute.
        created = await schedule_once(store, queue, now=utc(7, 10), memo=memo)
        assert len(created) == 1
        assert len([line for line in logs if line["event"] == "schedule_invalid"]) == 1
        await schedule_once(store, queue, now=utc(8, 6), memo=memo)
        assert len([line for line in logs if line["event"] == "schedule_invalid"]) == 2


async def _every_minute(store: Store, queue: JobQueue, start: datetime, end: datetime) -> list[str]:
    """Passes a minute apart from ``start`` to ``end``, with a memo, as ``run_scheduler``
    makes them (one a second; cron ticks are minutes)."""
    memo = Memo()
    created: list[str] = []
    now = start
    while now <= end:
        created += await schedule_once(store, queue, now=now, memo=memo)
        now += timedelta(minutes=1)
    return created


class TestDaylightSaving:
    """As cron (cronie, Vixie cron): a time skipped in spring fires once, right after the
    change; one repeated in autumn fires once at fixed times, in both passes for schedules
    of every hour or more often (intervals of real time)."""

    @pytest.mark.parametrize(
        ("zone", "cron", "back", "first", "second"),
        [
            # The clocks go back at 03:00 CEST (01:00 UTC): 02:30 comes round twice.
            ("Europe/Berlin", "30 2 * * *", datetime(2026, 10, 25, 1, tzinfo=UTC),
             "2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"),
            # 02:00 EDT (06:00 UTC) back to 01:00 EST: 01:30 twice.
            ("America/New_York", "30 1 * * *", datetime(2026, 11, 1, 6, tzinfo=UTC),
             "2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-05:00"),
            # Southern autumn: 03:00 AEDT (16:00 UTC the day before) back to 02:00 AEST.
            ("Australia/Sydney", "30 2 * * *", datetime(2026, 4, 4, 16, tzinfo=UTC),
             "2026-04-05T02:30:00+11:00", "2026-04-05T02:30:00+10:00"),
        ],
    )  # fmt: skip
    async def test_a_repeated_time_fires_once_at_fixed_times(
        self,
        store: MemoryStore,
        queue: JobQueue,
        zone: str,
        cron: str,
        back: datetime,
        first: str,
        second: str,
    ) -> None:
        tenant = await new_tenant(store)
        start, end = back - timedelta(hours=3), back + timedelta(hours=3)
        wf = await new_schedule(store, tenant, cron, timezone=zone, created_at=start)
        made = await _every_minute(store, queue, start, end)
        assert scheduled_for(await executions(store, tenant, wf.id)) == [first]
        assert len(made) == 1
        # A scheduler that starts during the second pass (no memo) makes none either.
        in_second_pass = datetime.fromisoformat(second) + timedelta(minutes=5)
        assert await schedule_once(store, queue, now=in_second_pass) == []
        assert len(await executions(store, tenant, wf.id)) == 1

    async def test_a_repeated_hour_runs_twice_every_hour(
        self, store: MemoryStore, queue: JobQueue
    ) -> None:
        tenant = await new_tenant(store)
        created = datetime(2026, 10, 24, 12, tzinfo=UTC)
        berlin: dict[str, Any] = {"timezone": "Europe/Berlin", "created_at": created}
        hourly = await new_schedule(store, tenant, "0 * * * *", **berlin)
        quarter = await new_schedule(store, tenant, "*/30 * * * *", **berlin)
        start, end = (
            datetime(2026, 10, 24, 23, 30, tzinfo=UTC),
            datetime(2026, 10, 25, 2, 10, tzinfo=UTC),
        )
        await _every_minute(store, queue, start, end)
        # Every real hour: 02:00 comes round twice, and each is an hour after the last.
        assert scheduled_for(await executions(store, tenant, hourly.id)) == [
            "2026-10-25T01:00:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T03:00:00+01:00",
        ]
        assert [ex.dedup_key for ex in await executions(store, tenant, hourly.id)] == [
            "schedule:2026-10-24T23:00:00+00:00",
            "schedule:2026-10-25T01:00:00+00:00",
            "schedule:2026-10-25T00:00:00+00:00",
            "schedule:2026-10-25T02:00:00+00:00",
        ]
        assert len(await executions(store, tenant, quarter.id)) == 6  # 23:30 ... 02:00 UTC

    async def test_a_skipped_time_fires_once_after_the_change(
        self, store: MemoryStore, queue: JobQueue
    ) -> None:
        tenant = await new_tenant(store)
        created = datetime(2026, 3, 27, 12, tzinfo=UTC)
        # 02:00 CET (01:00 UTC) forward to 03:00 CEST: 02:30 does not happen that night.
        wf = await new_schedule(
            store, tenant, "30 2 * * *", timezone="Europe/Berlin", created_at=created
        )
        start, end = datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 29, 4, tzinfo=UTC)
        await _every_minute(store, queue, start, end)
        assert scheduled_for(await executions(store, tenant, wf.id)) == [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
        ]


@pytest.mark.parametrize(
    ("cron", "fixed"),
    [
        ("30 2 * * *", True),
        ("0 9 * * 1-5", True),
        ("0,30 8-18 * * *", True),
        ("@daily", True),
        ("@weekly", True),
        ("0 * * * *", False),
        ("*/15 * * * *", False),
        ("30 */2 * * *", False),
        ("@hourly", False),
    ],
)
def test_at_fixed_times(cron: str, fixed: bool) -> None:
    assert at_fixed_times(cron) is fixed


def test_dedup_key_is_the_utc_instant() -> None:
    from zoneinfo import ZoneInfo

    local = datetime(2026, 1, 12, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert dedup_key(local) == dedup_key(utc(8, 0)) == "schedule:2026-01-12T08:00:00+00:00"


class _FailingStore(MemoryStore):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0
        self.recovered = asyncio.Event()

    async def scheduled_workflow_stamps(self) -> list[tuple[str, datetime]]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("database is down")
        self.recovered.set()
        return await super().scheduled_workflow_stamps()


async def test_run_scheduler_survives_a_failing_store(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ipaas.engine.scheduler.SCHEDULER_INTERVAL_S", 0.01)
    store = _FailingStore(failures=2)
    tenant = await new_tenant(store)
    # Created long ago, so the real clock's latest tick is due.
    wf = await new_schedule(store, tenant, "* * * * *", created_at=datetime(2026, 1, 1, tzinfo=UTC))
    runtime = Runtime.build(settings, store=store)
    await runtime.startup()
    stop = asyncio.Event()
    task = asyncio.create_task(run_scheduler(runtime, stop))
    try:
        await asyncio.wait_for(store.recovered.wait(), 5)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)  # returns promptly once stopped; raises nothing
        await runtime.shutdown()
    assert store.calls >= 3
    # The pass after the outage fired the current tick (a minute may roll over before stop).
    made = scheduled_for(await executions(store, tenant, wf.id))
    assert 1 <= len(made) == len(set(made))


async def test_a_started_worker_schedules_and_runs_due_ticks(
    settings: Settings, clean_standin: Any
) -> None:
    from datetime import timedelta

    from ipaas.engine.worker import Worker
    from ipaas.kit.clock import utcnow
    from ipaas.workflows.models import Step

    runtime = Runtime.build(settings, store=MemoryStore())
    await runtime.startup()
    tenant_id = await new_tenant(runtime.store)
    workflow = await new_schedule(
        runtime.store, tenant_id, "* * * * *", created_at=utcnow() - timedelta(minutes=2)
    )
    workflow.steps = [
        Step(id="notify", type="http_request", config={"url": f"{clean_standin.url}/echo"})
    ]
    await runtime.store.update_workflow(workflow, new_version=True)
    worker = Worker(runtime)
    await worker.start()
    try:
        async with asyncio.timeout(10):
            while True:
                runs = await executions(runtime.store, tenant_id, workflow.id)
                if runs and runs[0].status is ExecutionStatus.succeeded:
                    break
                await asyncio.sleep(0.02)
    finally:
        await worker.stop(grace_s=1)
        await runtime.shutdown()
    [run] = runs
    assert run.trigger.type == "schedule"
    assert run.dedup_key is not None
    assert run.dedup_key.startswith("schedule:")
