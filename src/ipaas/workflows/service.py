"""Workflows: definitions validated against their connectors, versioned on change."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ipaas.credentials import service as credential_service
from ipaas.credentials.crypto import CredentialCipher
from ipaas.credentials.models import CredentialType
from ipaas.credentials.oauth2 import CredentialSessions
from ipaas.engine.connectors import get_connector
from ipaas.engine.connectors.base import Endpoints
from ipaas.engine.connectors.oauth2 import TokenCache
from ipaas.engine.connectors.run_workflow import RunWorkflow, RunWorkflowParams
from ipaas.engine.steps import StepsRun, run_steps
from ipaas.engine.templating import (
    LOOP_NAMES,
    MAX_TEMPLATE_CODE_CHARS,
    MAX_TEMPLATE_TAGS,
    TemplateRenderer,
    check_references,
    check_syntax,
    is_template,
    template_size,
)
from ipaas.errors import Conflict, NotFound, ValidationFailed
from ipaas.executions import service as execution_service
from ipaas.executions.models import ExecutionStatus, StepRun, TriggerData
from ipaas.kit.clock import utcnow
from ipaas.kit.http import HttpClient
from ipaas.kit.ids import new_id
from ipaas.kit.numbers import MAX_INT32
from ipaas.kit.pagination import Cursor
from ipaas.kit.preconditions import IfMatch
from ipaas.kit.text import name_error
from ipaas.stores.base import Store
from ipaas.webhooks.cache import WorkflowCache
from ipaas.workflows.models import (
    MAX_LOOP_STEP_ID,
    Step,
    Trigger,
    TriggerType,
    Workflow,
    WorkflowDefinition,
    WorkflowVersion,
    named,
)
from ipaas.workflows.schemas import (
    DryRunRead,
    DryRunStep,
    WorkflowCreate,
    WorkflowPatch,
    WorkflowUpdate,
)

if TYPE_CHECKING:
    from ipaas.runtime import Runtime


class WorkflowNotFound(NotFound):
    code = "workflow_not_found"


class WorkflowInUse(Conflict):
    code = "workflow_in_use"


_TICK = timedelta(microseconds=1)


def _is_template_error(error: Mapping[str, Any], config: dict[str, Any]) -> bool:
    """A type error on a value that is still a template is checked after rendering."""
    value: Any = config
    for part in error["loc"]:
        in_dict = isinstance(value, dict) and part in value
        in_list = isinstance(value, list) and isinstance(part, int) and part < len(value)
        if in_dict or in_list:
            value = value[part]
        else:
            return False
    return isinstance(value, str) and is_template(value)


async def validate_definition(
    store: Store,
    *,
    tenant_id: str,
    trigger: Trigger,
    steps: list[Step],
    found: Sequence[dict[str, Any]] = (),
) -> None:
    """Every problem of the trigger and of every step at once, each named by its path
    (``trigger.auth.credential_id``, ``steps[0].config.text``), after those ``found``
    already (the workflow's other fields)."""
    errors = [*found, *await _trigger_errors(store, tenant_id=tenant_id, trigger=trigger)]
    errors += _response_errors(trigger, steps)
    errors += await _step_errors(store, tenant_id=tenant_id, steps=steps)
    if errors:
        raise ValidationFailed("Invalid workflow", details=errors)


def _response_errors(trigger: Trigger, steps: list[Step]) -> list[dict[str, Any]]:
    """A webhook answer that waits for its execution renders ``body`` over the steps: it
    must compile and name only steps the workflow has."""
    if trigger.type is not TriggerType.webhook:
        return []
    response = trigger.webhook.response
    if response is None or response.wait_s is None or response.body is None:
        return []
    loc = ["body", "trigger", "response", "body"]
    too_large = _too_large(response.body, "the body holds")
    if too_large is not None:
        return [{"loc": loc, "msg": too_large, "type": "templates_too_large"}]
    found = _template_problems({"body": response.body}, before=[s.id for s in steps], path="")
    return [{"loc": loc, "msg": msg, "type": "value_error"} for _, msg, _ in found]


def _too_large(value: Any, holder: str) -> str | None:
    """Why ``value``'s templates are too much to compile (``None``: they are not), counted
    before any is: compiling costs time on the event loop and memory."""
    tags, code = template_size(value)
    if tags <= MAX_TEMPLATE_TAGS and code <= MAX_TEMPLATE_CODE_CHARS:
        return None
    return (
        f"{holder} {tags} template tags of {code} characters; at most "
        f"{MAX_TEMPLATE_TAGS} tags of {MAX_TEMPLATE_CODE_CHARS} characters together"
    )


def _template_problems(
    value: Any,
    *,
    before: Sequence[str],
    after: Sequence[str] = (),
    path: str = "config",
    names: frozenset[str] = frozenset(),
) -> list[tuple[str, str, str]]:
    """Every template in ``value`` that does not compile (``template_syntax``) or names
    what no execution has (``template_reference``), as ``(path, message, kind)``."""
    found = [(p, m, "template_syntax") for p, m in check_syntax(value, path=path)]
    references = check_references(value, before=before, after=after, path=path, names=names)
    return found + [(p, m, "template_reference") for p, m in references]


async def _trigger_errors(
    store: Store, *, tenant_id: str, trigger: Trigger
) -> list[dict[str, Any]]:
    """A webhook trigger's ``auth`` must name a ``webhook_secret`` credential of the tenant."""
    if trigger.type is not TriggerType.webhook:
        return []
    auth = trigger.webhook.auth
    if auth is None:
        return []
    loc = ["body", "trigger", "auth", "credential_id"]
    credential = await store.get_credential(tenant_id, auth.credential_id)
    if credential is None:
        return [{"loc": loc, "msg": "credential not found", "type": "credential_not_found"}]
    if credential.type is not CredentialType.webhook_secret:
        msg = f"webhook auth needs a webhook_secret credential, not {credential.type.value}"
        return [{"loc": loc, "msg": msg, "type": "credential_type_mismatch"}]
    return []


async def _step_errors(store: Store, *, tenant_id: str, steps: list[Step]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []

    def add(index: int, loc: Sequence[str | int], msg: str, type_: str = "value_error") -> None:
        errors.append({"loc": ["body", "steps", index, *loc], "msg": msg, "type": type_})

    too_large = _too_large([[s.config, s.for_each, s.when] for s in steps], "the steps hold")
    compile_templates = too_large is None
    if too_large is not None:
        errors.append({"loc": ["body", "steps"], "msg": too_large, "type": "templates_too_large"})
    seen: set[str] = set()
    ids = [s.id for s in steps]
    credential_ids = [s.credential_id for s in steps if s.credential_id]
    credentials = await store.get_credentials(tenant_id, credential_ids) if credential_ids else {}
    for index, step in enumerate(steps):
        if step.id in seen:
            add(index, ["id"], f"duplicate step id {step.id!r}")
        seen.add(step.id)
        # A step's name is a name as the API takes others (``kit.text.Name``): checked here,
        # not in ``Step``, which loads stored steps too. Found by hand: a step named "   "
        # (or 5,000 characters, or holding NUL) was saved.
        wrong = name_error(step.name) if step.name is not None else None
        if wrong is not None:
            add(index, ["name"], wrong[1], wrong[0])
        connector = get_connector(step.type)
        if connector is None:
            add(index, ["type"], f"unknown step type {step.type!r}", "unknown_step_type")
            continue
        if step.credential_id:
            credential = credentials.get(step.credential_id)
            if credential is None:
                add(index, ["credential_id"], "credential not found", "credential_not_found")
            elif connector.credential_type and credential.type != connector.credential_type:
                add(
                    index,
                    ["credential_id"],
                    f"{step.type} needs a {connector.credential_type.value} credential, "
                    f"not {credential.type.value}",
                    "credential_type_mismatch",
                )
        elif connector.credential_type and not connector.credential_optional:
            add(index, ["credential_id"], f"{step.type} needs a credential", "missing")
        if step.credential_id and connector.credential_type is None:
            add(
                index,
                ["credential_id"],
                f"{step.type} takes no credential",
                "credential_type_mismatch",
            )
        names: frozenset[str] = frozenset()
        if step.for_each is not None:
            names = LOOP_NAMES
            if not connector.loops:
                add(index, ["for_each"], f"a {step.type} step does not loop", "value_error")
            if isinstance(step.for_each, str) and not is_template(step.for_each):
                msg = "for_each is a list, or a template that gives one: {{ trigger.body.items }}"
                add(index, ["for_each"], msg)
            if len(step.id) > MAX_LOOP_STEP_ID:
                msg = f"a for_each step's id is at most {MAX_LOOP_STEP_ID} characters"
                add(index, ["id"], msg, "string_too_long")
        if step.concurrency is not None and step.for_each is None:
            add(index, ["concurrency"], "concurrency is for a for_each step's items")
        if isinstance(step.when, str) and not is_template(step.when):
            msg = "when is true, false, or a template that gives one: {{ trigger.body.paid }}"
            add(index, ["when"], msg)
        if compile_templates:
            before, after = ids[:index], ids[index + 1 :]
            found = _template_problems(step.config, before=before, after=after, names=names)
            # Both are read before the step's loop: no ``item`` or ``index`` in them.
            beside = {
                key: value
                for key, value in (("for_each", step.for_each), ("when", step.when))
                if isinstance(value, str)
            }
            if beside:
                found += _template_problems(beside, before=before, after=after, path="")
            for path, msg, kind in found:
                add(index, path.split(".")[1:] or ["config"], msg, kind)
        try:
            params = connector.Params.model_validate(step.config)
        except ValidationError as exc:
            for err in exc.errors(include_url=False, include_input=False):
                if not _is_template_error(err, step.config):
                    add(index, ["config", *err["loc"]], err["msg"], err["type"])
            continue
        if isinstance(params, RunWorkflowParams):
            # A literal id, so that it is checked here and its deletion refused (``delete``).
            if is_template(params.workflow_id):
                msg = "a workflow's id, such as wf_..., not a template"
                add(index, ["config", "workflow_id"], msg)
            elif await store.get_workflow(tenant_id, params.workflow_id) is None:
                msg = "workflow not found"
                add(index, ["config", "workflow_id"], msg, "workflow_not_found")
    return errors


def runs_workflow(workflow: Workflow, workflow_id: str) -> bool:
    """Whether a step of ``workflow`` starts ``workflow_id`` (``run_workflow``)."""
    return any(
        step.type == RunWorkflow.type and step.config.get("workflow_id") == workflow_id
        for step in workflow.steps
    )


async def _error_workflow_errors(
    store: Store, *, tenant_id: str, workflow_id: str, error_workflow_id: str | None
) -> list[dict[str, Any]]:
    """An error workflow must be another workflow of the tenant (422 at
    ``body.error_workflow_id``). Whether it is active is checked at each failure."""
    loc = ["body", "error_workflow_id"]
    if error_workflow_id is None:
        return []
    if error_workflow_id == workflow_id:
        msg = "a workflow cannot be its own error workflow"
        return [{"loc": loc, "msg": msg, "type": "value_error"}]
    if await store.get_workflow(tenant_id, error_workflow_id) is None:
        return [{"loc": loc, "msg": "workflow not found", "type": "workflow_not_found"}]
    return []


async def create(store: Store, *, tenant_id: str, data: WorkflowCreate) -> Workflow:
    workflow_id = new_id("wf")
    await validate_definition(
        store,
        tenant_id=tenant_id,
        trigger=data.trigger,
        steps=data.steps,
        found=await _error_workflow_errors(
            store,
            tenant_id=tenant_id,
            workflow_id=workflow_id,
            error_workflow_id=data.error_workflow_id,
        ),
    )
    now = utcnow()
    workflow = Workflow(
        id=workflow_id,
        tenant_id=tenant_id,
        name=data.name,
        active=data.active,
        version=1,
        trigger=data.trigger,
        steps=data.steps,
        created_at=now,
        updated_at=now,
        error_workflow_id=data.error_workflow_id,
    )
    await store.create_workflow(workflow)
    return workflow


async def get(store: Store, *, tenant_id: str, workflow_id: str) -> Workflow:
    workflow = await store.get_workflow(tenant_id, workflow_id)
    if workflow is None:
        raise WorkflowNotFound("Workflow not found")
    return workflow


async def list_(store: Store, *, tenant_id: str) -> list[Workflow]:
    return await store.list_workflows(tenant_id)


async def names(store: Store, *, tenant_id: str) -> dict[str, str]:
    """Every workflow's name by id, newest first."""
    return await store.workflow_names(tenant_id)


async def list_page(
    store: Store, *, tenant_id: str, cursor: str | None, limit: int
) -> tuple[list[Workflow], str | None]:
    """One page, newest first, and the cursor of the next one (``None`` after the last)."""
    before = Cursor.decode(cursor) if cursor else None
    rows = await store.list_workflows(
        tenant_id,
        before=(before.created_at, before.id) if before else None,
        limit=limit + 1,  # one more tells whether another page follows, without a COUNT
    )
    items = rows[:limit]
    more = len(rows) > limit
    return items, Cursor(items[-1].created_at, items[-1].id).encode() if more else None


#: Rounds an edit may lose to concurrent edits of the same workflow before it gives up with
#: a 409. Each round some edit is saved, so this many at once still all get through.
MAX_EDIT_ROUNDS = 32


class WorkflowEditConflict(Conflict):
    code = "workflow_edit_conflict"


async def update(
    store: Store,
    cache: WorkflowCache,
    *,
    tenant_id: str,
    workflow_id: str,
    data: WorkflowUpdate | WorkflowPatch,
    if_match: IfMatch | None = None,
) -> Workflow:
    """Apply a change; trigger or step changes make a new version (running executions keep
    the version they started with).

    A compare-and-set on the workflow's ``updated_at``: an edit saved by another request
    between this one's read and its write makes this one start over from that edit, so no
    edit overwrites another's fields or reuses its version number. With ``if_match`` (the
    client's ``If-Match``) it does not start over: an edit made from a state other than
    the one named gets 412 (``PreconditionFailed``)."""
    changes = data.model_dump(exclude_unset=not isinstance(data, WorkflowUpdate))
    # PUT replaces the setting (left out: none); PATCH changes it when given, null included.
    sets_error_workflow = "error_workflow_id" in changes
    changes = {k: v for k, v in changes.items() if v is not None}
    if sets_error_workflow:
        errors = await _error_workflow_errors(
            store,
            tenant_id=tenant_id,
            workflow_id=workflow_id,
            error_workflow_id=data.error_workflow_id,
        )
        if errors:
            raise ValidationFailed("Invalid workflow", details=errors)
    for _ in range(MAX_EDIT_ROUNDS):
        workflow = await get(store, tenant_id=tenant_id, workflow_id=workflow_id)
        if if_match is not None:
            # Also after a lost compare-and-set: the state the client named is gone.
            if_match.check(workflow.etag, "workflow")
        updated = workflow.model_copy(
            update={
                "name": changes.get("name", workflow.name),
                "active": changes.get("active", workflow.active),
                "trigger": data.trigger if data.trigger is not None else workflow.trigger,
                "steps": data.steps if data.steps is not None else workflow.steps,
                "error_workflow_id": (
                    data.error_workflow_id if sets_error_workflow else workflow.error_workflow_id
                ),
                # Later than the edit it replaces even with clocks apart, so the next
                # compare-and-set always sees the change.
                "updated_at": max(utcnow(), workflow.updated_at + _TICK),
            }
        )
        new_version = updated.definition != workflow.definition
        if new_version:
            await validate_definition(
                store, tenant_id=tenant_id, trigger=updated.trigger, steps=updated.steps
            )
            updated.version = workflow.version + 1
        if await store.update_workflow(
            updated, new_version=new_version, base_updated_at=workflow.updated_at
        ):
            cache.invalidate(workflow_id)
            return updated
    raise WorkflowEditConflict(
        "The workflow is being changed by other requests at the same time; try again"
    )


class VersionNotFound(NotFound):
    code = "version_not_found"


async def versions(
    store: Store, *, tenant_id: str, workflow_id: str, before: int | None, limit: int
) -> tuple[Workflow, list[WorkflowVersion], int | None]:
    """The workflow, a page of its versions (newest first), and the ``before`` of the next
    page (``None`` after the last). A deleted workflow's versions stay for the executions
    that ran them, but its history is not listed (404)."""
    workflow = await get(store, tenant_id=tenant_id, workflow_id=workflow_id)
    found = await store.list_workflow_versions(
        tenant_id, workflow_id, before=before, limit=limit + 1
    )
    page = found[:limit]
    return workflow, page, page[-1].version if len(found) > limit else None


async def version(
    store: Store, *, tenant_id: str, workflow_id: str, number: int
) -> tuple[Workflow, WorkflowVersion]:
    """The workflow and its version ``number`` (404 ``version_not_found``)."""
    workflow = await get(store, tenant_id=tenant_id, workflow_id=workflow_id)
    # The newest at or below ``number``; past the stores' largest integer, the newest.
    before = number + 1 if number < MAX_INT32 else None
    found = await store.list_workflow_versions(tenant_id, workflow_id, before=before, limit=1)
    if not found or found[0].version != number:
        raise VersionNotFound(f"Workflow {workflow_id} has no version {number}")
    return workflow, found[0]


async def restore(
    store: Store,
    cache: WorkflowCache,
    *,
    tenant_id: str,
    workflow_id: str,
    number: int,
    if_match: IfMatch | None = None,
) -> Workflow:
    """Save version ``number``'s trigger and steps as the workflow's definition: a new
    version (none when it is the current one's), checked as any edit is (a credential it
    used may be gone since: 422), with the edit's compare-and-set and ``If-Match``. The
    name, activation and error workflow stay as they are: settings, not versioned."""
    _, old = await version(store, tenant_id=tenant_id, workflow_id=workflow_id, number=number)
    data = WorkflowPatch.model_construct(trigger=old.trigger, steps=old.steps)
    return await update(
        store, cache, tenant_id=tenant_id, workflow_id=workflow_id, data=data, if_match=if_match
    )


async def delete(
    store: Store,
    cache: WorkflowCache,
    *,
    tenant_id: str,
    workflow_id: str,
    if_match: IfMatch | None = None,
) -> None:
    """Delete the workflow; with ``if_match``, only the state it names (else 412), checked
    by the store's delete itself, so an edit saved meanwhile is never deleted unseen.
    Refused (409) while another workflow names it as its error workflow (their failures
    would alert nobody) or has a step that runs it (those steps would fail)."""
    others = [wf for wf in await store.list_workflows(tenant_id) if wf.id != workflow_id]
    alerted = [wf for wf in others if wf.error_workflow_id == workflow_id]
    if alerted:
        raise WorkflowInUse(
            f"Workflow is the error workflow of {named(alerted)}: change those first",
            details={"workflows": [{"id": wf.id, "name": wf.name} for wf in alerted]},
        )
    starting = [wf for wf in others if runs_workflow(wf, workflow_id)]
    if starting:
        raise WorkflowInUse(
            f"Workflow is run by a step of {named(starting)}: change those first",
            details={"workflows": [{"id": wf.id, "name": wf.name} for wf in starting]},
        )
    if if_match is None or if_match.any:
        if not await store.delete_workflow(tenant_id, workflow_id):
            raise WorkflowNotFound("Workflow not found")
        cache.invalidate(workflow_id)
        return
    workflow = await get(store, tenant_id=tenant_id, workflow_id=workflow_id)
    if_match.check(workflow.etag, "workflow")
    if not await store.delete_workflow(tenant_id, workflow_id, base_updated_at=workflow.updated_at):
        # Deleted (404) or changed (412) since the read.
        current = await get(store, tenant_id=tenant_id, workflow_id=workflow_id)
        if_match.check(current.etag, "workflow")
        raise WorkflowEditConflict("The workflow changed while it was being deleted; try again")
    cache.invalidate(workflow_id)


async def delete_stopping(
    runtime: Runtime, *, tenant_id: str, workflow_id: str, if_match: IfMatch | None = None
) -> None:
    """``delete``, then cancel the workflow's unfinished executions (queued, a retry
    waiting, running: ``execution_service.cancel_pending``). Before, they went on
    delivering after the workflow was gone, retries included, and deleting it was no way
    to stop a workflow that floods a channel."""
    await delete(
        runtime.store,
        runtime.workflow_cache,
        tenant_id=tenant_id,
        workflow_id=workflow_id,
        if_match=if_match,
    )
    await execution_service.cancel_pending(
        runtime.store,
        runtime.cancel_bus,
        runtime.intake,
        tenant_id=tenant_id,
        workflow_id=workflow_id,
    )


async def dry_run(
    store: Store,
    cipher: CredentialCipher,
    http: HttpClient,
    endpoints: Endpoints,
    *,
    tenant_id: str,
    definition: WorkflowDefinition,
    trigger: TriggerData,
    simulate: bool,
    templates: TemplateRenderer | None = None,
    workflow_id: str = "",
) -> DryRunRead:
    """Run (or, simulating, only build) every step; nothing is persisted. Each dry run has
    an id of its own (``execution.id`` in templates): a remote that dedupes by it sees each
    as new."""
    await validate_definition(
        store, tenant_id=tenant_id, trigger=definition.trigger, steps=definition.steps
    )
    credential_ids = sorted({s.credential_id for s in definition.steps if s.credential_id})
    loaded = await credential_service.load_secrets(
        store, cipher, tenant_id=tenant_id, credential_ids=credential_ids
    )
    results: list[DryRunStep] = []

    async def on_step(
        step: StepRun, _final: ExecutionStatus | None, preview: dict[str, Any] | None
    ) -> None:
        results.append(
            DryRunStep(
                step_id=step.step_id,
                type=step.type,
                status="simulated" if simulate and step.status == "succeeded" else step.status,
                input=step.input,
                output=step.output,
                error=step.error,
                request=preview,
                duration_ms=round(step.duration_ms, 3),
            )
        )

    status = await run_steps(
        StepsRun(
            tenant_id=tenant_id,
            execution_id=new_id("dry"),
            workflow_id=workflow_id,
            created_at=utcnow(),
            definition=definition,
            trigger=trigger,
            secrets=loaded.by_id,
            unreadable=loaded.unreadable,
            http=http,
            endpoints=endpoints,
            simulate=simulate,
            templates=templates or TemplateRenderer(),
            # Its own tokens, but users' connections as stored: a renewal made here is kept.
            tokens=TokenCache(sessions=CredentialSessions(store, cipher)),
        ),
        on_step,
    )
    return DryRunRead(mode="simulate" if simulate else "run", status=status, steps=results)
