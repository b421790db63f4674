"""Edits of one workflow at the same time (workflows/service.py ``update``), on every store:
each edit is saved whole, none overwrites another's fields, every new version gets its own
number and keeps the definition it was saved with."""

from __future__ import annotations

import asyncio

import pytest

from ipaas.kit.preconditions import IfMatch, PreconditionFailed
from ipaas.stores import Store
from ipaas.webhooks.cache import WorkflowCache
from ipaas.workflows import service as workflow_service
from ipaas.workflows.models import Step, Workflow
from ipaas.workflows.schemas import WorkflowPatch, WorkflowUpdate
from tests.contracts.test_store import Account, make_credential, new_account, new_workflow

EDITS = 8


@pytest.fixture
async def acct(store: Store) -> Account:
    return await new_account(store)


def steps(credential_id: str, text: str) -> list[Step]:
    config = {"text": text}
    return [Step(id="notify", type="slack_message", credential_id=credential_id, config=config)]


async def test_concurrent_puts_each_make_their_own_version(store: Store, acct: Account) -> None:
    credential = make_credential(acct.id)
    await store.create_credential(credential)
    wf = await new_workflow(store, acct.id)
    cache = WorkflowCache()

    async def put(n: int) -> tuple[int, str]:
        data = WorkflowUpdate(name=f"edit {n}", steps=steps(credential.id, f"edit {n}"))
        saved = await workflow_service.update(
            store, cache, tenant_id=acct.id, workflow_id=wf.id, data=data
        )
        return saved.version, saved.steps[0].config["text"]

    saved = await asyncio.gather(*(put(n) for n in range(EDITS)))

    versions = sorted(version for version, _ in saved)
    assert versions == list(range(2, EDITS + 2))
    for version, text in saved:
        definition = await store.get_workflow_version(acct.id, wf.id, version)
        assert definition is not None
        assert definition.steps[0].config["text"] == text
    last = await store.get_workflow(acct.id, wf.id)
    assert last is not None
    assert last.version == EDITS + 1
    assert last.steps[0].config["text"] == dict(saved)[EDITS + 1]


async def test_concurrent_patches_of_different_fields_all_stay(store: Store, acct: Account) -> None:
    credential = make_credential(acct.id)
    await store.create_credential(credential)
    wf = await new_workflow(store, acct.id)
    cache = WorkflowCache()
    patches = [
        WorkflowPatch(name="renamed"),
        WorkflowPatch(active=False),
        WorkflowPatch(steps=steps(credential.id, "patched")),
    ]

    await asyncio.gather(
        *(
            workflow_service.update(store, cache, tenant_id=acct.id, workflow_id=wf.id, data=p)
            for p in patches
        )
    )

    got = await store.get_workflow(acct.id, wf.id)
    assert got is not None
    assert (got.name, got.active, got.version) == ("renamed", False, 2)
    assert got.steps[0].config == {"text": "patched"}


async def test_an_edit_that_keeps_losing_gives_up_with_409(
    store: Store, acct: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    wf = await new_workflow(store, acct.id)
    rounds = 0
    update_workflow = store.update_workflow

    async def always_beaten(*args: object, **kwargs: object) -> bool:
        # Another edit lands between every read and write of this one.
        nonlocal rounds
        rounds += 1
        current = await store.get_workflow(acct.id, wf.id)
        assert current is not None
        bump = current.model_copy(update={"updated_at": current.updated_at.replace(year=2030)})
        bump.updated_at = bump.updated_at.replace(microsecond=rounds)
        assert await update_workflow(bump, new_version=False)
        return await update_workflow(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "update_workflow", always_beaten)
    with pytest.raises(workflow_service.WorkflowEditConflict):
        await workflow_service.update(
            store,
            WorkflowCache(),
            tenant_id=acct.id,
            workflow_id=wf.id,
            data=WorkflowPatch(name="x"),
        )
    assert rounds == workflow_service.MAX_EDIT_ROUNDS
    got = await store.get_workflow(acct.id, wf.id)
    assert got is not None
    assert got.name == wf.name


async def test_if_match_lets_one_of_many_edits_of_one_state_through(
    store: Store, acct: Account
) -> None:
    """Edits all made from the same copy, each with its ``If-Match``: exactly one is saved;
    the others get 412 (they would have replaced what they never saw), and start over from
    nothing silently."""
    wf = await new_workflow(store, acct.id)
    cache = WorkflowCache()
    seen = IfMatch.parse(wf.etag)

    async def rename(n: int) -> Workflow | PreconditionFailed:
        try:
            return await workflow_service.update(
                store,
                cache,
                tenant_id=acct.id,
                workflow_id=wf.id,
                data=WorkflowPatch(name=f"edit {n}"),
                if_match=seen,
            )
        except PreconditionFailed as exc:
            return exc

    results = await asyncio.gather(*(rename(n) for n in range(EDITS)))

    saved = [r for r in results if isinstance(r, Workflow)]
    refused = [r for r in results if isinstance(r, PreconditionFailed)]
    assert len(saved) == 1
    assert len(refused) == EDITS - 1
    got = await store.get_workflow(acct.id, wf.id)
    assert got is not None
    assert got.name == saved[0].name
    assert got.etag == saved[0].etag != wf.etag
    assert {r.details["etag"] for r in refused} == {got.etag}


async def test_if_match_on_delete_spares_a_workflow_edited_since(
    store: Store, acct: Account
) -> None:
    wf = await new_workflow(store, acct.id)
    cache = WorkflowCache()
    edited = await workflow_service.update(
        store, cache, tenant_id=acct.id, workflow_id=wf.id, data=WorkflowPatch(name="edited")
    )
    with pytest.raises(PreconditionFailed):
        await workflow_service.delete(
            store, cache, tenant_id=acct.id, workflow_id=wf.id, if_match=IfMatch.parse(wf.etag)
        )
    assert await store.get_workflow(acct.id, wf.id) is not None
    await workflow_service.delete(
        store, cache, tenant_id=acct.id, workflow_id=wf.id, if_match=IfMatch.parse(edited.etag)
    )
    assert await store.get_workflow(acct.id, wf.id) is None


async def test_if_match_on_delete_loses_to_an_edit_between_read_and_delete(
    store: Store, acct: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check is the store's delete itself, not only the read before it."""
    wf = await new_workflow(store, acct.id)
    delete_workflow = store.delete_workflow

    async def edited_meanwhile(*args: object, **kwargs: object) -> bool:
        later = wf.model_copy(
            update={"name": "edited", "updated_at": wf.updated_at.replace(year=2031)}
        )
        assert await store.update_workflow(later, new_version=False)
        return await delete_workflow(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "delete_workflow", edited_meanwhile)
    with pytest.raises(PreconditionFailed):
        await workflow_service.delete(
            store,
            WorkflowCache(),
            tenant_id=acct.id,
            workflow_id=wf.id,
            if_match=IfMatch.parse(wf.etag),
        )
    got = await store.get_workflow(acct.id, wf.id)
    assert got is not None
    assert got.name == "edited"
