"""Workflows: list, editor, webhook, activation, dry run and simulate, manual run, history."""

from __future__ import annotations

import difflib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from ipaas.api.deps import RuntimeDep
from ipaas.credentials import service as credential_service
from ipaas.engine.connectors import REGISTRY
from ipaas.errors import ValidationFailed
from ipaas.executions.models import ExecutionStatus, TriggerData
from ipaas.kit.preconditions import IfMatch, PreconditionFailed
from ipaas.web import forms
from ipaas.web.pages._common import Csrf, read_form, see_other
from ipaas.web.render import render
from ipaas.web.session import SessionPrincipal
from ipaas.web.workflow_form import WorkflowForm
from ipaas.webhooks import service as webhook_service
from ipaas.webhooks.endpoints import webhook_url
from ipaas.workflows import service as workflow_service
from ipaas.workflows.models import Workflow, WorkflowDefinition
from ipaas.workflows.schemas import VersionNumber, WorkflowPatch

router = APIRouter()
#: The workflows list's success rate is over this many latest executions per workflow.
RECENT_RUNS = 20
CONNECTOR_FIELDS = {kind: forms.fields_for(c.Params) for kind, c in REGISTRY.items()}


#: Workflows on one page of the list: each row also reads its recent runs.
PAGE = 50


@router.get("/workflows")
async def workflows(
    request: Request,
    principal: SessionPrincipal,
    runtime: RuntimeDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    page, next_cursor = await workflow_service.list_page(
        runtime.store, tenant_id=principal.tenant_id, cursor=cursor or None, limit=PAGE
    )
    # One read for the page's workflows (it was one listing of whole executions each).
    recent_runs = await runtime.store.recent_runs(
        principal.tenant_id, [workflow.id for workflow in page], limit=RECENT_RUNS
    )
    rows = []
    for workflow in page:
        recent = recent_runs.get(workflow.id, [])
        finished = [e for e in recent if e.status.terminal]
        succeeded = sum(e.status is ExecutionStatus.succeeded for e in finished)
        rows.append(
            {
                "workflow": workflow,
                "last_run": recent[0] if recent else None,
                "success_rate": round(100 * succeeded / len(finished)) if finished else None,
                "sample": len(finished),
            }
        )
    context = {"rows": rows, "next_cursor": next_cursor, "first_page": not cursor}
    return render(request, "workflows.html", context)


async def _workflow_form_context(
    runtime: RuntimeDep, principal: SessionPrincipal
) -> dict[str, Any]:
    credentials = await credential_service.list_(runtime.store, tenant_id=principal.tenant_id)
    return {
        "connectors": CONNECTOR_FIELDS,
        "credential_types": {
            kind: c.credential_type.value if c.credential_type else None
            for kind, c in REGISTRY.items()
        },
        "credentials": credentials,
        # The workflows a failure can run (``error_workflow_id``), by id.
        "workflow_names": await workflow_service.names(
            runtime.store, tenant_id=principal.tenant_id
        ),
    }


FormContext = Annotated[dict[str, Any], Depends(_workflow_form_context)]


@router.get("/workflows/new")
async def new_workflow(request: Request, context: FormContext) -> HTMLResponse:
    form = WorkflowForm.blank()
    return render(request, "workflow_form.html", {**context, "form": form, "workflow": None})


@router.post("/workflows/new", dependencies=Csrf)
async def create_workflow(
    request: Request, principal: SessionPrincipal, runtime: RuntimeDep, context: FormContext
) -> Response:
    form = WorkflowForm.parse(await read_form(request), CONNECTOR_FIELDS)
    data = form.to_create()
    if data is not None:
        try:
            workflow = await workflow_service.create(
                runtime.store, tenant_id=principal.tenant_id, data=data
            )
        except ValidationFailed as exc:
            form.add_errors(forms.errors_by_field(exc.details), exc.message)
        else:
            return see_other(f"/workflows/{workflow.id}")
    context = {**context, "form": form, "workflow": None}
    return render(request, "workflow_form.html", context, 422)


@router.get("/workflows/{workflow_id}")
async def workflow_detail(
    workflow_id: str, request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> HTMLResponse:
    workflow = await workflow_service.get(
        runtime.store, tenant_id=principal.tenant_id, workflow_id=workflow_id
    )
    context = await _detail_context(
        request, runtime, workflow, '{"order": {"id": 1042, "total": 99.5}}'
    )
    return render(request, "workflow.html", context)


async def _detail_context(
    request: Request, runtime: RuntimeDep, workflow: Workflow, sample: str
) -> dict[str, Any]:
    """What the workflow page shows, before a dry run's result."""
    error_workflow = None
    if workflow.error_workflow_id is not None:
        error_workflow = await runtime.store.get_workflow(
            workflow.tenant_id, workflow.error_workflow_id
        )
    return {
        "workflow": workflow,
        "error_workflow": error_workflow,
        "webhook_url": webhook_url(request, workflow.id),
        "sample": sample,
        "result": None,
        "errors": {},
    }


@router.get("/workflows/{workflow_id}/edit")
async def edit_workflow(
    workflow_id: str,
    request: Request,
    principal: SessionPrincipal,
    runtime: RuntimeDep,
    context: FormContext,
) -> HTMLResponse:
    workflow = await workflow_service.get(
        runtime.store, tenant_id=principal.tenant_id, workflow_id=workflow_id
    )
    form = WorkflowForm.of(workflow, CONNECTOR_FIELDS)
    return render(request, "workflow_form.html", {**context, "form": form, "workflow": workflow})


@router.post("/workflows/{workflow_id}/edit", dependencies=Csrf)
async def update_workflow(
    workflow_id: str,
    request: Request,
    principal: SessionPrincipal,
    runtime: RuntimeDep,
    context: FormContext,
) -> Response:
    workflow = await workflow_service.get(
        runtime.store, tenant_id=principal.tenant_id, workflow_id=workflow_id
    )
    submitted = await read_form(request)
    form = WorkflowForm.parse(submitted, CONNECTOR_FIELDS, current=workflow)
    data = form.to_update()
    status = 422
    if data is not None:
        try:
            await workflow_service.update(
                runtime.store,
                runtime.workflow_cache,
                tenant_id=principal.tenant_id,
                workflow_id=workflow_id,
                data=data,
                # The state the page was opened on: saving over someone else's edit made
                # since then is refused below, not done silently.
                if_match=IfMatch.parse(submitted["base"]) if submitted.get("base") else None,
            )
        except ValidationFailed as exc:
            form.add_errors(forms.errors_by_field(exc.details), exc.message)
        except PreconditionFailed:
            status = 409
            form.message = (
                f"Someone else saved this workflow (now version {workflow.version}, "
                f"named {workflow.name!r}) after you opened this page. Your changes below "
                "are not saved. Save again to replace theirs with yours, or open the "
                "workflow in another tab to see what they changed."
            )
            form.values["base"] = workflow.etag  # a second save is a deliberate overwrite
        else:
            return see_other(f"/workflows/{workflow_id}")
    context = {**context, "form": form, "workflow": workflow}
    return render(request, "workflow_form.html", context, status)


@router.post("/workflows/{workflow_id}/active", dependencies=Csrf)
async def set_active(
    workflow_id: str, request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    form = await read_form(request)
    await workflow_service.update(
        runtime.store,
        runtime.workflow_cache,
        tenant_id=principal.tenant_id,
        workflow_id=workflow_id,
        data=WorkflowPatch(active=form.get("active") == "true"),
    )
    return see_other(f"/workflows/{workflow_id}")


@router.post("/workflows/{workflow_id}/delete", dependencies=Csrf)
async def delete_workflow(
    workflow_id: str, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    await workflow_service.delete_stopping(
        runtime, tenant_id=principal.tenant_id, workflow_id=workflow_id
    )
    return see_other("/workflows")


@router.post("/workflows/{workflow_id}/dry-run", dependencies=Csrf)
async def dry_run(
    workflow_id: str, request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> HTMLResponse:
    workflow = await workflow_service.get(
        runtime.store, tenant_id=principal.tenant_id, workflow_id=workflow_id
    )
    form = await read_form(request)
    sample = form.get("sample", "")
    context = await _detail_context(request, runtime, workflow, sample)
    try:
        body = json.loads(sample) if sample.strip() else None
    except ValueError as exc:
        context["errors"] = {"sample": f"not valid JSON: {exc}"}
        return render(request, "workflow.html", context, 422)
    try:
        context["result"] = await workflow_service.dry_run(
            runtime.store,
            runtime.cipher,
            runtime.http,
            runtime.endpoints,
            tenant_id=principal.tenant_id,
            definition=workflow.definition,
            trigger=TriggerData(body=body, content_type="application/json"),
            simulate=form.get("mode") == "simulate",
            templates=runtime.templates,
            workflow_id=workflow.id,
        )
    except ValidationFailed as exc:
        context["errors"] = {"sample": exc.message, **forms.errors_by_field(exc.details)}
        return render(request, "workflow.html", context, 422)
    return render(request, "workflow.html", context)


@router.post("/workflows/{workflow_id}/run", dependencies=Csrf)
async def run_workflow(
    workflow_id: str, request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    workflow = await workflow_service.get(
        runtime.store, tenant_id=principal.tenant_id, workflow_id=workflow_id
    )
    execution = await webhook_service.start_admitted(
        runtime.store,
        runtime.queue,
        runtime.intake,
        workflow_id=workflow.id,
        tenant_id=workflow.tenant_id,
        version=workflow.version,
        trigger=TriggerData(type="manual"),
    )
    return see_other(f"/executions/{execution.id}")


#: Versions on one page of a workflow's history.
VERSIONS_PAGE = 50


@router.get("/workflows/{workflow_id}/versions")
async def versions(
    workflow_id: str,
    request: Request,
    principal: SessionPrincipal,
    runtime: RuntimeDep,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    workflow, page, next_before = await workflow_service.versions(
        runtime.store,
        tenant_id=principal.tenant_id,
        workflow_id=workflow_id,
        before=before,
        limit=VERSIONS_PAGE,
    )
    context = {"workflow": workflow, "versions": page, "next_before": next_before}
    return render(request, "workflow_versions.html", context)


def _definition_lines(definition: WorkflowDefinition) -> list[str]:
    dumped = definition.model_dump(mode="json", exclude_none=True)
    return json.dumps(dumped, indent=2, ensure_ascii=False).splitlines()


def _diff(
    old: WorkflowDefinition, new: WorkflowDefinition, old_name: str, new_name: str
) -> list[str]:
    """A unified diff of two definitions' JSON, as the lines a page shows."""
    return list(
        difflib.unified_diff(
            _definition_lines(old), _definition_lines(new), old_name, new_name, lineterm=""
        )
    )


async def _version_context(
    runtime: RuntimeDep, principal: SessionPrincipal, workflow_id: str, number: int
) -> dict[str, Any]:
    workflow, saved = await workflow_service.version(
        runtime.store, tenant_id=principal.tenant_id, workflow_id=workflow_id, number=number
    )
    definition = WorkflowDefinition(trigger=saved.trigger, steps=saved.steps)
    return {
        "workflow": workflow,
        "saved": saved,
        "definition": definition.model_dump(mode="json", exclude_none=True),
        # What restoring it would change: from the current version to this one.
        "diff": _diff(
            workflow.definition,
            definition,
            f"version {workflow.version} (current)",
            f"version {saved.version}",
        ),
        "message": None,
    }


@router.get("/workflows/{workflow_id}/versions/{number}")
async def version(
    workflow_id: str,
    number: VersionNumber,
    request: Request,
    principal: SessionPrincipal,
    runtime: RuntimeDep,
) -> HTMLResponse:
    context = await _version_context(runtime, principal, workflow_id, number)
    return render(request, "workflow_version.html", context)


@router.post("/workflows/{workflow_id}/versions/{number}/restore", dependencies=Csrf)
async def restore_version(
    workflow_id: str,
    number: VersionNumber,
    request: Request,
    principal: SessionPrincipal,
    runtime: RuntimeDep,
) -> Response:
    submitted = await read_form(request)
    try:
        await workflow_service.restore(
            runtime.store,
            runtime.workflow_cache,
            tenant_id=principal.tenant_id,
            workflow_id=workflow_id,
            number=number,
            # The state the page showed the diff against: an edit saved since is not
            # replaced unseen.
            if_match=IfMatch.parse(submitted["base"]) if submitted.get("base") else None,
        )
    except PreconditionFailed:
        context = await _version_context(runtime, principal, workflow_id, number)
        context["message"] = (
            "The workflow was saved again after you opened this page; nothing was restored. "
            "The changes below are against what it is now: restore again if you still want "
            "this version."
        )
        return render(request, "workflow_version.html", context, 409)
    except ValidationFailed as exc:
        context = await _version_context(runtime, principal, workflow_id, number)
        problems = "; ".join(
            f"{'.'.join(str(part) for part in d['loc'][1:])}: {d['msg']}" for d in exc.details
        )
        context["message"] = f"This version can no longer be saved: {problems}"
        return render(request, "workflow_version.html", context, 422)
    return see_other(f"/workflows/{workflow_id}")
