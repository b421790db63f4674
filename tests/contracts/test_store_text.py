"""Text holding U+0000 (NUL), on every store.

PostgreSQL's text types cannot hold it; SQLite and the memory store can. Before, every value
with one that reached PostgreSQL was an error: a name sent to the API, an id in a URL, a
login's email, and a remote API's error text, which made an execution's finish unwritable
(it stayed ``running``, and the reaper ran its step again and again). Now a write stores the
text, with U+FFFD in place of U+0000 on PostgreSQL, and a lookup by such a value finds
nothing, as no id or email holds one.
"""

from __future__ import annotations

import pytest

from ipaas.credentials.models import Credential, CredentialType
from ipaas.executions.models import ExecutionStatus, StepStatus
from ipaas.kit.ids import new_id
from ipaas.kit.text import NUL, REPLACEMENT
from ipaas.stores import Store
from ipaas.tenants.models import ApiToken
from tests.contracts.test_store import (
    T0,
    Account,
    at,
    claim,
    make_step,
    make_workflow,
    new_account,
    new_execution,
)

pytestmark = pytest.mark.usefixtures("store")


def stored_as(sent: str, read: str | None) -> bool:
    """``read`` is ``sent`` as the store keeps it: as given, or with U+FFFD for U+0000."""
    return read in (sent, sent.replace(NUL, REPLACEMENT))


@pytest.fixture
async def acct(store: Store) -> Account:
    return await new_account(store)


async def test_names_holding_nul_are_stored(store: Store, acct: Account) -> None:
    workflow = make_workflow(acct.id).model_copy(update={"name": f"a{NUL}b"})
    await store.create_workflow(workflow)
    read = await store.get_workflow(acct.id, workflow.id)
    assert read is not None
    assert stored_as(f"a{NUL}b", read.name)

    credential = Credential(
        id=new_id("cred"),
        tenant_id=acct.id,
        name=f"c{NUL}",
        type=CredentialType.slack,
        secret_ciphertext="ciphertext",
        created_at=T0,
    )
    await store.create_credential(credential)
    found = await store.get_credential(acct.id, credential.id)
    assert found is not None
    assert stored_as(f"c{NUL}", found.name)

    token = ApiToken(
        id=new_id("tok"),
        tenant_id=acct.id,
        user_id=acct.user.id,
        name=f"t{NUL}",
        token_hash=new_id("hash"),
        created_at=T0,
    )
    await store.create_token(token)
    names = [t.name for t in await store.list_tokens(acct.id, now=T0)]
    assert any(stored_as(f"t{NUL}", name) for name in names), names


async def test_lookups_by_a_value_holding_nul_find_nothing(store: Store, acct: Account) -> None:
    workflow = make_workflow(acct.id)
    await store.create_workflow(workflow)
    execution = await new_execution(store, acct.id, workflow.id)

    assert await store.get_workflow(acct.id, f"{workflow.id}{NUL}") is None
    assert await store.get_workflow_for_intake(f"wf{NUL}x") is None
    assert await store.get_execution(acct.id, f"{execution.id}{NUL}") is None
    assert await store.get_credential(acct.id, f"cred{NUL}") is None
    assert await store.get_user_by_email(f"{NUL}{acct.user.email}") is None
    assert await store.get_token_by_hash(f"{acct.token.token_hash}{NUL}") is None
    assert await store.get_tenant(f"{acct.id}{NUL}") is None
    page = await store.list_executions(acct.id, workflow_id=f"{workflow.id}{NUL}", limit=10)
    assert page.items == []
    assert not await store.revoke_token(acct.id, f"tok{NUL}", at(1))
    assert not await store.delete_credential(acct.id, f"cred{NUL}")


async def test_a_step_error_holding_nul_is_written_with_the_finish(
    store: Store, acct: Account
) -> None:
    """A remote API's error text reaches the finish as it came (the executor replaces
    U+0000 itself too; this is the store's own guard)."""
    workflow = make_workflow(acct.id)
    await store.create_workflow(workflow)
    execution = await new_execution(store, acct.id, workflow.id)
    assert await claim(store, execution.id) is not None
    error = f"POST answered HTTP 500 | remote: bad{NUL}thing"
    step = make_step(execution, status=StepStatus.failed).model_copy(update={"error": error})

    assert await store.finish_execution(
        execution.id,
        owner="w1",
        status=ExecutionStatus.failed,
        error=error,
        finished_at=at(3),
        step=step,
    )

    finished = await store.get_execution(acct.id, execution.id)
    assert finished is not None
    assert finished.status is ExecutionStatus.failed
    assert stored_as(error, finished.error)
    (recorded,) = await store.list_step_runs(acct.id, execution.id)
    assert stored_as(error, recorded.error)


async def test_an_idempotency_key_holding_nul_is_kept(store: Store, acct: Account) -> None:
    workflow = make_workflow(acct.id)
    await store.create_workflow(workflow)
    first = await new_execution(store, acct.id, workflow.id)
    keyed = first.model_copy(update={"id": new_id("ex"), "dedup_key": f"k{NUL}1"})
    assert await store.create_execution_once(keyed, expired_before=at(-60)) is None
    again = keyed.model_copy(update={"id": new_id("ex")})
    assert await store.create_execution_once(again, expired_before=at(-60)) == keyed.id
