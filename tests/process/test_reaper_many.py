"""Issue 3, item 6: the reaper is safe with many processes at once.

A crashed worker (owner ``dead``) left ~200 ``running`` executions with expired leases on one
PostgreSQL database, some also past their deadline, some with a cancel requested. Three
separate OS processes then run ``reap_once`` against that database at the same moment, a few
passes each. Every execution is re-queued (or timed out) by exactly one of them, each ends in
the state its case dictates, and nothing else is touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from ipaas.executions.models import ExecutionStatus
from ipaas.kit.clock import utcnow
from ipaas.stores.sql import SqlStore, run_migrations
from tests.contracts.conftest import in_thread, postgres_database
from tests.contracts.test_store import make_workflow, new_account, new_execution
from tests.process.conftest import SECRET_KEY, START_TIMEOUT_S

POSTGRES_URL = os.environ.get("IPAAS_TEST_POSTGRES_URL")

pytestmark = [
    pytest.mark.process,
    pytest.mark.postgres,
    pytest.mark.skipif(not POSTGRES_URL, reason="IPAAS_TEST_POSTGRES_URL is not set"),
]

_REPO_ROOT = Path(__file__).resolve().parents[2]
REAPERS = 3
PASSES = 5
#: Seconds between a reaper's passes: the rows held through the first pass are free by the
#: third.
PASS_GAP_S = 0.3
#: Expired leases of the crashed worker, by case (10 per cycle of ``_EXPIRED_CYCLE``).
EXPIRED = 200
_EXPIRED_CYCLE = (
    *(["requeue"] * 6),
    "timeout",
    "timeout",
    "cancel",
    "cancel_past_deadline",
)
#: Executions the reapers must leave alone (count per case), and the extra queued ones past
#: their deadline that time out.
OTHERS = {
    "live": 10,
    "live_past_deadline": 5,
    "succeeded": 10,
    "cancelled_before": 5,
    "queued": 10,
    "timeout_queued": 5,
}
EXPECTED = {
    "requeue": ExecutionStatus.queued,
    "timeout": ExecutionStatus.timed_out,
    "cancel": ExecutionStatus.cancelled,
    "cancel_past_deadline": ExecutionStatus.timed_out,  # the deadline takes precedence
    "timeout_queued": ExecutionStatus.timed_out,
    "live": ExecutionStatus.running,
    "live_past_deadline": ExecutionStatus.running,  # its live worker records the timeout
    "succeeded": ExecutionStatus.succeeded,
    "cancelled_before": ExecutionStatus.cancelled,
    "queued": ExecutionStatus.queued,
}
UNTOUCHED = ("live", "live_past_deadline", "succeeded", "cancelled_before", "queued")

#: One reaper process: build a Runtime on ``IPAAS_DATABASE_URL``, say ``ready``, wait for
#: ``go`` on stdin (so the three start together), run ``reap_once`` a few times
#: (``PASS_GAP_S`` apart), print what it changed as one ``RESULT {json}`` line.
_REAPER_SCRIPT = """
import asyncio, json, sys
from ipaas.config import Settings
from ipaas.engine.reaper import reap_once
from ipaas.runtime import Runtime

async def main(passes, gap_s):
    runtime = Runtime.build(Settings())
    await runtime.startup()
    result = {"requeued": [], "timed_out": [], "errors": []}
    try:
        await runtime.store.ping()  # the pool holds a connection before the start signal
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        for n in range(passes):
            if n:
                await asyncio.sleep(gap_s)
            try:
                reaped = await reap_once(runtime)
            except Exception as exc:
                result["errors"].append(repr(exc))
                continue
            result["requeued"] += reaped.requeued
            result["timed_out"] += reaped.timed_out
    finally:
        await runtime.shutdown()
    print("RESULT " + json.dumps(result), flush=True)

asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
"""


@pytest.fixture
def database_url() -> Iterator[str]:
    """A new PostgreSQL database of this test's own, migrated; dropped afterwards."""
    with postgres_database() as url:
        in_thread(lambda: run_migrations(url))
        yield url


async def _seed(url: str) -> tuple[str, dict[str, str], dict[str, dict[str, Any]]]:
    """Create the executions; their tenant, ``id -> case`` and the untouched ones' rows."""
    store = SqlStore(url)
    await store.startup()
    try:
        acct = await new_account(store)
        workflow = make_workflow(acct.id)
        await store.create_workflow(workflow)
        now = utcnow()
        crashed = now - timedelta(seconds=120)  # the dead worker claimed then, 30 s leases

        async def make(case: str) -> tuple[str, str]:
            ex = await new_execution(store, acct.id, workflow.id, created_at=crashed)

            async def claim(owner: str, lease_s: float, timeout_s: float) -> None:
                claimed = await store.claim_execution(
                    ex.id,
                    owner=owner,
                    now=crashed,
                    lease_until=crashed + timedelta(seconds=lease_s),
                    timeout_s=timeout_s,
                )
                assert claimed is not None

            match case:
                case "requeue":
                    await claim("dead", 30, 3600)
                case "timeout":
                    await claim("dead", 30, 10)
                case "cancel":
                    await claim("dead", 30, 3600)
                    await store.request_cancel(acct.id, ex.id, now=crashed)
                case "cancel_past_deadline":
                    await claim("dead", 30, 10)
                    await store.request_cancel(acct.id, ex.id, now=crashed)
                case "live":
                    await claim("alive", 3600, 3600)
                case "live_past_deadline":
                    await claim("alive", 3600, 10)
                case "succeeded":
                    await claim("gone", 30, 10)
                    assert await store.finish_execution(
                        ex.id,
                        owner="gone",
                        status=ExecutionStatus.succeeded,
                        error=None,
                        finished_at=crashed + timedelta(seconds=1),
                    )
                case "cancelled_before":
                    await store.request_cancel(acct.id, ex.id, now=crashed)
                case "timeout_queued":
                    await claim("gone", 30, 10)
                    assert await store.release_execution(ex.id, owner="gone")
                case "queued":
                    pass
            return ex.id, case

        cases = [_EXPIRED_CYCLE[n % len(_EXPIRED_CYCLE)] for n in range(EXPIRED)]
        cases += [case for case, count in OTHERS.items() for _ in range(count)]
        made: list[tuple[str, str]] = []
        for start in range(0, len(cases), 25):
            made += await asyncio.gather(*(make(case) for case in cases[start : start + 25]))
        case_of = dict(made)
        before = await _rows(store, acct.id, [i for i, c in case_of.items() if c in UNTOUCHED])
        return acct.id, case_of, before
    finally:
        await store.shutdown()


async def _rows(store: SqlStore, tenant_id: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    found = await asyncio.gather(*(store.get_execution(tenant_id, i) for i in ids))
    rows = {}
    for execution_id, execution in zip(ids, found, strict=True):
        assert execution is not None, execution_id
        rows[execution_id] = execution.model_dump()
    return rows


async def _read_all(url: str, tenant_id: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    store = SqlStore(url)
    await store.startup()
    try:
        return await _rows(store, tenant_id, ids)
    finally:
        await store.shutdown()


async def _go_together(url: str, processes: list[subprocess.Popen[str]]) -> None:
    """Start the reapers while this connection holds half the execution rows locked: they
    must reap the other half without waiting for those locks (a reaper that waited could
    deadlock with another, each holding rows the other wants). Then let go: their later
    passes (``PASS_GAP_S`` apart) contend for the rows that were held."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as holder, engine.connect() as watcher:
            await holder.execute(
                sa.text(
                    "SELECT id FROM execution WHERE id IN "
                    "(SELECT id FROM execution ORDER BY id LIMIT (SELECT count(*) / 2 "
                    "FROM execution)) FOR UPDATE"
                )
            )
            for process in processes:
                assert process.stdin is not None
                process.stdin.write("go\n")
                process.stdin.flush()
            waiting = sa.text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            # Through the reapers' first pass: none of them waits for a held row.
            deadline = time.monotonic() + PASS_GAP_S * 1.5
            while time.monotonic() < deadline:
                assert await watcher.scalar(waiting) == 0, "a reaper waited for a row lock"
                await watcher.rollback()  # a fresh snapshot of pg_stat_activity
                await asyncio.sleep(0.01)
            await holder.rollback()
    finally:
        await engine.dispose()


def _run_reapers(url: str, cwd: Path) -> list[dict[str, list[str]]]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IPAAS_")}
    environ.update(
        {
            "IPAAS_DATABASE_URL": url,
            "IPAAS_SECRET_KEY": SECRET_KEY,
            "IPAAS_DATA_DIR": str(cwd),
            "IPAAS_LOG_LEVEL": "warning",
        }
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _REAPER_SCRIPT, str(PASSES), str(PASS_GAP_S)],
            cwd=_REPO_ROOT,
            env=environ,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(REAPERS)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            while (line := process.stdout.readline()) and line.strip() != "ready":
                pass
            assert line, (
                f"reaper exited before it was ready: {process.stderr and process.stderr.read()}"
            )
        asyncio.run(_go_together(url, processes))
        results = []
        for process in processes:
            out, err = process.communicate(timeout=START_TIMEOUT_S)
            assert process.returncode == 0, err[-4000:]
            lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
            assert len(lines) == 1, (out[-2000:], err[-2000:])
            results.append(json.loads(lines[0].removeprefix("RESULT ")))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_three_reaper_processes_requeue_each_expired_lease_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    tenant_id, case_of, before = asyncio.run(_seed(database_url))

    results = _run_reapers(database_url, tmp_path)

    errors = [error for result in results for error in result["errors"]]
    assert not errors, errors
    requeued = Counter(i for result in results for i in result["requeued"])
    timed_out = Counter(i for result in results for i in result["timed_out"])
    print(
        "reapers: "
        + ", ".join(
            f"requeued {len(r['requeued'])} timed out {len(r['timed_out'])}" for r in results
        )
    )
    # Nothing is re-queued or timed out twice, by one process or by two.
    assert [i for i, n in requeued.items() if n > 1] == []
    assert [i for i, n in timed_out.items() if n > 1] == []
    assert not set(requeued) & set(timed_out)
    # ... and exactly the right ones are.
    assert set(requeued) == {i for i, c in case_of.items() if c == "requeue"}
    expect_timed_out = {"timeout", "cancel_past_deadline", "timeout_queued"}
    assert set(timed_out) == {i for i, c in case_of.items() if c in expect_timed_out}

    after = asyncio.run(_read_all(database_url, tenant_id, list(case_of)))
    wrong = {
        i: (case_of[i], row["status"])
        for i, row in after.items()
        if row["status"] is not EXPECTED[case_of[i]]
    }
    assert wrong == {}
    for execution_id, row in after.items():
        case = case_of[execution_id]
        if case in UNTOUCHED:
            assert row == before[execution_id], case
        elif case == "requeue":
            assert (row["lease_owner"], row["lease_expires_at"], row["attempt"]) == (None, None, 1)
            assert row["finished_at"] is None
        else:  # ended by a reaper
            assert row["lease_owner"] is None
            assert row["finished_at"] is not None
            assert row["error"]
