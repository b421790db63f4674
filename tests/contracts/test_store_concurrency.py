"""Many callers at once: one caller's failure or cancellation never touches the others'."""

from __future__ import annotations

import asyncio

import pytest

from ipaas.executions.models import Execution
from ipaas.kit.ids import new_id
from ipaas.stores import DuplicateError, Store
from ipaas.stores.sql import SqlStore
from ipaas.workflows.models import Workflow
from tests.contracts.test_store import T0, Account, make_workflow, new_account, new_execution


@pytest.fixture
async def acct(store: Store) -> Account:
    return await new_account(store)


@pytest.fixture
async def wf(store: Store, acct: Account) -> Workflow:
    workflow = make_workflow(acct.id)
    await store.create_workflow(workflow)
    return workflow


async def test_one_failing_write_among_many(store: Store, acct: Account, wf: Workflow) -> None:
    taken = acct.user.email.upper()
    results = await asyncio.gather(
        *(new_execution(store, acct.id, wf.id) for _ in range(20)),
        new_account(store, email=taken),
        *(new_account(store) for _ in range(5)),
        *(new_execution(store, acct.id, wf.id) for _ in range(20)),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1
    assert isinstance(failed[0], DuplicateError)
    for result in results:
        if isinstance(result, Execution):
            assert await store.get_execution(acct.id, result.id) is not None
        elif isinstance(result, Account):
            assert await store.get_user_by_email(result.user.email) is not None
    assert await store.count_queued(acct.id) == 40
    # The refused sign-up left nothing behind.
    user = await store.get_user_by_email(taken)
    assert user is not None
    assert user.id == acct.user.id


async def test_cancelled_callers_write_all_or_nothing(store: Store) -> None:
    async def sign_up(n: int) -> None:
        account = await new_account(store, email=f"user{n}@example.com")
        second = account.token.model_copy(update={"id": new_id("tok"), "token_hash": new_id("h")})
        await store.create_token(second)

    calls = [asyncio.ensure_future(sign_up(n)) for n in range(30)]
    await asyncio.sleep(0)
    for call in calls[::3]:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)
    for n, call in enumerate(calls):
        user = await store.get_user_by_email(f"user{n}@example.com")
        if not call.cancelled():
            assert user is not None
            assert len(await store.list_tokens(user.tenant_id, now=T0)) == 2
        elif user is not None:  # the sign-up had started: all of it was written
            assert len(await store.list_tokens(user.tenant_id, now=T0)) >= 1
    # The store carries on.
    account = await new_account(store)
    await store.create_workflow(make_workflow(account.id))
    assert len(await store.list_workflows(account.id)) == 1


async def test_shutdown_finishes_pending_writes(sql_url: str) -> None:
    store = SqlStore(sql_url)
    await store.startup()
    acct = await new_account(store)
    wf = make_workflow(acct.id)
    await store.create_workflow(wf)
    writes = [asyncio.ensure_future(new_execution(store, acct.id, wf.id)) for _ in range(50)]
    await asyncio.sleep(0)  # every write is submitted, most still queued
    await store.shutdown()
    executions = await asyncio.gather(*writes)
    with pytest.raises(RuntimeError):
        await new_execution(store, acct.id, wf.id)

    reopened = SqlStore(sql_url)
    await reopened.startup()
    try:
        for ex in executions:
            assert await reopened.get_execution(acct.id, ex.id) is not None
        assert await reopened.count_queued(acct.id) == 50
    finally:
        await reopened.shutdown()
