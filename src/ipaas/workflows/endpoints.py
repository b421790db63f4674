from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request, Response, status

from ipaas.api.deps import CurrentPrincipal, RuntimeDep, StoreDep
from ipaas.api.errors import AUTHENTICATED, QUEUES_WORK, WITH_BODY, Error, responses
from ipaas.api.routing import api_router
from ipaas.executions.models import TriggerSample
from ipaas.executions.schemas import ExecutionRead
from ipaas.kit.numbers import MAX_INT32
from ipaas.kit.preconditions import IF_MATCH_PATTERN, IfMatch
from ipaas.webhooks import service as webhook_service
from ipaas.webhooks.endpoints import webhook_url
from ipaas.workflows import service as workflow_service
from ipaas.workflows.models import TriggerType, Workflow, WorkflowDefinition, WorkflowVersion
from ipaas.workflows.schemas import (
    DryRunCreate,
    DryRunOptions,
    DryRunRead,
    VersionNumber,
    WorkflowCreate,
    WorkflowPatch,
    WorkflowRead,
    WorkflowUpdate,
    WorkflowVersionRead,
)

router = api_router(prefix="/workflows", tags=["workflows"], responses=AUTHENTICATED)
_BY_ID = responses(404, 422)
_BY_ID_WITH_BODY = responses(404) | WITH_BODY
_ETAG: dict[str, Any] = {
    "ETag": {
        "description": "This saved state's entity tag; send it back in `If-Match` to edit "
        "or delete only that state",
        "schema": {"type": "string"},
    }
}
_PRECONDITION: dict[int | str, dict[str, Any]] = {
    412: {
        "description": "`If-Match` names a state the workflow is no longer in "
        "(`precondition_failed`; `details.etag` is the current one)",
        "model": Error,
    }
}
_CHANGED: dict[int | str, dict[str, Any]] = {200: {"headers": _ETAG}}
_EDIT = (
    WITH_BODY
    | responses(
        400,
        404,
        409,
        s400="Malformed JSON body, or malformed `If-Match` (`invalid_if_match`)",
        s409="Changed by too many other requests at once; try again",
    )
    | _PRECONDITION
    | _CHANGED
)
_DELETE = (
    responses(
        400,
        404,
        409,
        422,
        s400="Malformed `If-Match` (`invalid_if_match`)",
        s409="Another workflow runs this one on failure or from a `run_workflow` step "
        "(`workflow_in_use`, `details` names them), or changed by other requests meanwhile",
    )
    | _PRECONDITION
)

#: ``If-Match`` on PUT, PATCH and DELETE (RFC 9110, 13.1.1), documented here and read by
#: ``_if_match``: a header parameter would be ``string | null`` in the schema, and a
#: malformed one would get the validator's 422 quoting the expression instead of a 400
#: that says what to send.
_IF_MATCH_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": "If-Match",
            "in": "header",
            "required": False,
            "description": "The `ETag` of the state this change was made from (or `*`); "
            "412 if the workflow has changed since",
            "schema": {"type": "string", "pattern": IF_MATCH_PATTERN},
        }
    ]
}


def _if_match(request: Request) -> IfMatch | None:
    return IfMatch.parse(request.headers.get("if-match"))


def _tagged(response: Response, workflow: Workflow) -> Workflow:
    response.headers["ETag"] = workflow.etag
    return workflow


def _read(request: Request, workflow: Workflow) -> WorkflowRead:
    # Built from the stored workflow's own models (pydantic-core takes model instances as
    # they are): a dump and a validation of every step took half of GET /api/workflows
    # (~0.45 s for 5,000); model_construct, in pure Python, took ~25 us a workflow.
    return WorkflowRead.model_validate(
        {
            "id": workflow.id,
            "name": workflow.name,
            "active": workflow.active,
            "version": workflow.version,
            "trigger": workflow.trigger,
            "steps": workflow.steps,
            "error_workflow_id": workflow.error_workflow_id,
            "webhook_url": (
                webhook_url(request, workflow.id)
                if workflow.trigger.type is TriggerType.webhook
                else None
            ),
            "created_at": workflow.created_at,
            "updated_at": workflow.updated_at,
        }
    )


@router.post(
    "", status_code=status.HTTP_201_CREATED, responses=WITH_BODY | {201: {"headers": _ETAG}}
)
async def create_workflow(
    body: WorkflowCreate,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    store: StoreDep,
) -> WorkflowRead:
    workflow = await workflow_service.create(store, tenant_id=principal.tenant_id, data=body)
    return _read(request, _tagged(response, workflow))


#: The largest page of ``GET /api/workflows?limit=``, and the page a lone ``cursor`` gets.
MAX_PAGE = 500
DEFAULT_PAGE = 100

_LIST = responses(400, 422, s400="Invalid `cursor`") | {
    200: {
        "headers": {
            "Link": {
                "description": 'With `limit`: the next page, `<url>; rel="next"` (RFC 8288); '
                "absent on the last page",
                "schema": {"type": "string"},
            }
        }
    }
}


@router.get("", responses=_LIST)
async def list_workflows(
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    store: StoreDep,
    limit: Annotated[
        int | None,
        Query(ge=1, le=MAX_PAGE, description="Pages of this many; without it, every workflow"),
    ] = None,
    cursor: Annotated[
        str | None, Query(description="The next page's cursor, from the `Link` header")
    ] = None,
) -> list[WorkflowRead]:
    """Newest first. Without ``limit``, all of them (as before pages existed); with it, one
    page, and a ``Link: <...>; rel="next"`` header while more follow."""
    if limit is None and cursor is None:
        workflows = await workflow_service.list_(store, tenant_id=principal.tenant_id)
        return [_read(request, w) for w in workflows]
    page_size = limit or DEFAULT_PAGE
    workflows, next_cursor = await workflow_service.list_page(
        store, tenant_id=principal.tenant_id, cursor=cursor, limit=page_size
    )
    if next_cursor is not None:
        url = request.url.include_query_params(limit=page_size, cursor=next_cursor)
        response.headers["Link"] = f'<{url}>; rel="next"'
    return [_read(request, w) for w in workflows]


@router.post("/dry-run", responses=WITH_BODY)
async def dry_run(
    body: DryRunCreate, principal: CurrentPrincipal, runtime: RuntimeDep
) -> DryRunRead:
    """Run a workflow that is not saved (``mode: simulate`` sends nothing); persists nothing."""
    return await workflow_service.dry_run(
        runtime.store,
        runtime.cipher,
        runtime.http,
        runtime.endpoints,
        tenant_id=principal.tenant_id,
        definition=WorkflowDefinition(trigger=body.trigger, steps=body.steps),
        trigger=body.trigger_sample,
        simulate=body.mode == "simulate",
        templates=runtime.templates,
    )


@router.get("/{workflow_id}", responses=_BY_ID | _CHANGED)
async def get_workflow(
    workflow_id: str,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    store: StoreDep,
) -> WorkflowRead:
    workflow = await workflow_service.get(
        store, tenant_id=principal.tenant_id, workflow_id=workflow_id
    )
    return _read(request, _tagged(response, workflow))


@router.put("/{workflow_id}", responses=_EDIT, openapi_extra=_IF_MATCH_DOC)
async def replace_workflow(
    workflow_id: str,
    body: WorkflowUpdate,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    runtime: RuntimeDep,
) -> WorkflowRead:
    workflow = await workflow_service.update(
        runtime.store,
        runtime.workflow_cache,
        tenant_id=principal.tenant_id,
        workflow_id=workflow_id,
        data=body,
        if_match=_if_match(request),
    )
    return _read(request, _tagged(response, workflow))


@router.patch("/{workflow_id}", responses=_EDIT, openapi_extra=_IF_MATCH_DOC)
async def patch_workflow(
    workflow_id: str,
    body: WorkflowPatch,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    runtime: RuntimeDep,
) -> WorkflowRead:
    """Partial update; ``{"active": false}`` deactivates."""
    workflow = await workflow_service.update(
        runtime.store,
        runtime.workflow_cache,
        tenant_id=principal.tenant_id,
        workflow_id=workflow_id,
        data=body,
        if_match=_if_match(request),
    )
    return _read(request, _tagged(response, workflow))


@router.delete(
    "/{workflow_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_DELETE,
    openapi_extra=_IF_MATCH_DOC,
)
async def delete_workflow(
    workflow_id: str,
    request: Request,
    principal: CurrentPrincipal,
    runtime: RuntimeDep,
) -> None:
    await workflow_service.delete_stopping(
        runtime,
        tenant_id=principal.tenant_id,
        workflow_id=workflow_id,
        if_match=_if_match(request),
    )


#: The largest page of ``GET /api/workflows/{id}/versions?limit=``, and its default.
MAX_VERSIONS_PAGE = 500
DEFAULT_VERSIONS_PAGE = 50

_VERSIONS = responses(404, 422) | {
    200: {
        "headers": {
            "Link": {
                "description": 'The next (older) page, `<url>; rel="next"` (RFC 8288); absent '
                "on the last page",
                "schema": {"type": "string"},
            }
        }
    }
}


def _version_read(workflow: Workflow, saved: WorkflowVersion) -> WorkflowVersionRead:
    return WorkflowVersionRead(
        version=saved.version,
        trigger=saved.trigger,
        steps=saved.steps,
        created_at=saved.created_at,
        current=saved.version == workflow.version,
    )


@router.get("/{workflow_id}/versions", responses=_VERSIONS)
async def list_versions(
    workflow_id: str,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=MAX_VERSIONS_PAGE)] = DEFAULT_VERSIONS_PAGE,
    before: Annotated[
        int | None,
        Query(ge=1, le=MAX_INT32, description="Versions older than this one (the next page)"),
    ] = None,
) -> list[WorkflowVersionRead]:
    """The workflow's saved versions, newest first: what each edit of its trigger or steps
    saved (executions name the version they ran). A page, and ``Link: <...>; rel="next"``
    while older ones follow."""
    workflow, page, next_before = await workflow_service.versions(
        store, tenant_id=principal.tenant_id, workflow_id=workflow_id, before=before, limit=limit
    )
    if next_before is not None:
        url = request.url.include_query_params(limit=limit, before=next_before)
        response.headers["Link"] = f'<{url}>; rel="next"'
    return [_version_read(workflow, saved) for saved in page]


@router.get("/{workflow_id}/versions/{version}", responses=_BY_ID)
async def get_version(
    workflow_id: str,
    version: VersionNumber,
    principal: CurrentPrincipal,
    store: StoreDep,
) -> WorkflowVersionRead:
    workflow, saved = await workflow_service.version(
        store, tenant_id=principal.tenant_id, workflow_id=workflow_id, number=version
    )
    return _version_read(workflow, saved)


@router.post(
    "/{workflow_id}/versions/{version}/restore",
    responses=responses(
        400,
        404,
        409,
        422,
        s400="Malformed `If-Match` (`invalid_if_match`)",
        s409="Changed by too many other requests at once; try again",
        s422="The version no longer passes the checks of an edit (a credential it used "
        "was deleted since, ...), each problem named by its path",
    )
    | _PRECONDITION
    | _CHANGED,
    openapi_extra=_IF_MATCH_DOC,
)
async def restore_version(
    workflow_id: str,
    version: VersionNumber,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    runtime: RuntimeDep,
) -> WorkflowRead:
    """Make version ``version``'s trigger and steps the workflow's again, as a new version
    (nothing changes when it is the current one). Name, activation and error workflow are
    kept. ``If-Match`` as for PUT."""
    workflow = await workflow_service.restore(
        runtime.store,
        runtime.workflow_cache,
        tenant_id=principal.tenant_id,
        workflow_id=workflow_id,
        number=version,
        if_match=_if_match(request),
    )
    return _read(request, _tagged(response, workflow))


@router.post("/{workflow_id}/dry-run", responses=_BY_ID_WITH_BODY)
async def dry_run_saved(
    workflow_id: str,
    principal: CurrentPrincipal,
    runtime: RuntimeDep,
    body: DryRunOptions | None = None,
) -> DryRunRead:
    options = body or DryRunOptions()
    workflow = await workflow_service.get(
        runtime.store, tenant_id=principal.tenant_id, workflow_id=workflow_id
    )
    return await workflow_service.dry_run(
        runtime.store,
        runtime.cipher,
        runtime.http,
        runtime.endpoints,
        tenant_id=principal.tenant_id,
        definition=workflow.definition,
        trigger=options.trigger_sample,
        simulate=options.mode == "simulate",
        templates=runtime.templates,
        workflow_id=workflow.id,
    )


@router.post(
    "/{workflow_id}/run",
    status_code=status.HTTP_202_ACCEPTED,
    responses=_BY_ID_WITH_BODY | QUEUES_WORK,
)
async def run_workflow(
    workflow_id: str,
    principal: CurrentPrincipal,
    runtime: RuntimeDep,
    body: TriggerSample | None = None,
) -> ExecutionRead:
    """Manual trigger: a real execution with ``body`` as its trigger data."""
    workflow = await workflow_service.get(
        runtime.store, tenant_id=principal.tenant_id, workflow_id=workflow_id
    )
    trigger = (body or TriggerSample()).model_copy(update={"type": "manual"})
    execution = await webhook_service.start_admitted(
        runtime.store,
        runtime.queue,
        runtime.intake,
        workflow_id=workflow.id,
        tenant_id=workflow.tenant_id,
        version=workflow.version,
        trigger=trigger,
    )
    return ExecutionRead.of(execution)
