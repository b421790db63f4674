"""The console's pages. Each handler parses a form, calls the same service function as the
matching API route, and renders a template; errors go back next to the field at fault."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from ipaas.api.deps import RuntimeDep
from ipaas.credentials import service as credential_service
from ipaas.credentials.schemas import SECRET_MODELS, CredentialCreate
from ipaas.engine.connectors import REGISTRY
from ipaas.errors import BadRequest, Conflict, Unauthorized, ValidationFailed
from ipaas.executions import service as execution_service
from ipaas.executions import stats
from ipaas.executions.models import ExecutionStatus, TriggerData
from ipaas.executions.schemas import ExecutionRead, StepRunRead
from ipaas.kit.clock import utcnow
from ipaas.tenants import service as tenant_service
from ipaas.tenants.schemas import SignupCreate
from ipaas.web import charts, forms
from ipaas.web.render import render
from ipaas.web.session import (
    CsrfChecked,
    SessionPrincipal,
    clear_session,
    set_session,
)
from ipaas.web.workflow_form import WorkflowForm
from ipaas.webhooks import service as webhook_service
from ipaas.workflows import service as workflow_service
from ipaas.workflows.schemas import WorkflowPatch

router = APIRouter(include_in_schema=False)
#: The workflows list's success rate is over this many latest executions per workflow.
RECENT_RUNS = 20
Csrf = [CsrfChecked]

CONNECTOR_FIELDS = {kind: forms.fields_for(c.Params) for kind, c in REGISTRY.items()}
SECRET_FIELDS = {kind.value: forms.fields_for(model) for kind, model in SECRET_MODELS.items()}


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def _form(request: Request) -> dict[str, str]:
    data = await request.form()
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _validation_errors(exc: ValidationError) -> dict[str, str]:
    return forms.errors_by_field(exc.errors(include_input=False, include_url=False))


# -- sign up, log in, log out ------------------------------------------------------------------
@router.get("/signup")
async def signup_page(request: Request) -> HTMLResponse:
    return render(request, "signup.html", {"values": {}, "errors": {}})


@router.post("/signup", dependencies=Csrf)
async def signup(request: Request, runtime: RuntimeDep) -> Response:
    form = await _form(request)
    values = {k: form.get(k, "") for k in ("email", "tenant_name")}
    try:
        body = SignupCreate(
            email=form.get("email", ""),
            password=form.get("password", ""),
            tenant_name=form.get("tenant_name", ""),
        )
        _, token = await tenant_service.signup(
            runtime.store,
            email=body.email,
            password=body.password,
            tenant_name=body.tenant_name,
            token_ttl_s=runtime.settings.token_ttl_s,
        )
    except ValidationError as exc:
        errors = _validation_errors(exc)
        return render(request, "signup.html", {"values": values, "errors": errors}, 422)
    except Conflict as exc:
        errors = {"email": exc.message}
        return render(request, "signup.html", {"values": values, "errors": errors}, 409)
    response = _see_other("/")
    set_session(request, response, token, runtime.settings.token_ttl_s)
    return response


@router.get("/login")
async def login_page(request: Request, expired: bool = False) -> HTMLResponse:
    notice = "Your session has expired or was ended. Please log in again." if expired else ""
    return render(request, "login.html", {"values": {}, "errors": {}, "notice": notice})


@router.post("/login", dependencies=Csrf)
async def login(request: Request, runtime: RuntimeDep) -> Response:
    form = await _form(request)
    email = form.get("email", "")
    try:
        token = await tenant_service.login(
            runtime.store,
            email=email,
            password=form.get("password", ""),
            token_ttl_s=runtime.settings.token_ttl_s,
        )
    except Unauthorized as exc:
        context = {"values": {"email": email}, "errors": {"form": exc.message}, "notice": ""}
        return render(request, "login.html", context, 401)
    response = _see_other("/")
    set_session(request, response, token, runtime.settings.token_ttl_s)
    return response


@router.post("/logout", dependencies=Csrf)
async def logout(request: Request, principal: SessionPrincipal, runtime: RuntimeDep) -> Response:
    await tenant_service.revoke_token(
        runtime.store, tenant_id=principal.tenant_id, token_id=principal.token_id
    )
    response = _see_other("/login")
    clear_session(request, response)
    return response


# -- dashboard ---------------------------------------------------------------------------------
async def _dashboard(runtime: RuntimeDep, principal: SessionPrincipal) -> dict[str, Any]:
    summary = await stats.summarize(runtime.store, tenant_id=principal.tenant_id, now=utcnow())
    workflows = await workflow_service.list_(runtime.store, tenant_id=principal.tenant_id)
    return {
        "summary": summary,
        "chart": charts.per_minute(summary),
        "names": {w.id: w.name for w in workflows},
    }


DashboardDep = Annotated[dict[str, Any], Depends(_dashboard)]


@router.get("/")
async def dashboard(request: Request, context: DashboardDep) -> HTMLResponse:
    return render(request, "dashboard.html", context)


@router.get("/dashboard/live")
async def dashboard_live(request: Request, context: DashboardDep) -> HTMLResponse:
    return render(request, "_dashboard_body.html", context)


# -- workflows ---------------------------------------------------------------------------------
def webhook_url(request: Request, workflow_id: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/api/webhooks/{workflow_id}"


@router.get("/workflows")
async def workflows(
    request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> HTMLResponse:
    rows = []
    for workflow in await workflow_service.list_(runtime.store, tenant_id=principal.tenant_id):
        recent, _ = await execution_service.list_(
            runtime.store,
            tenant_id=principal.tenant_id,
            workflow_id=workflow.id,
            status=None,
            cursor=None,
            limit=RECENT_RUNS,
        )
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
    return render(request, "workflows.html", {"rows": rows})


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
    form = WorkflowForm.parse(await _form(request), CONNECTOR_FIELDS)
    data = form.to_create()
    if data is not None:
        try:
            workflow = await workflow_service.create(
                runtime.store, tenant_id=principal.tenant_id, data=data
            )
        except ValidationFailed as exc:
            form.add_errors(forms.errors_by_field(exc.details), exc.message)
        else:
            return _see_other(f"/workflows/{workflow.id}")
    context = {**context, "form": form, "workflow": None}
    return render(request, "workflow_form.html", context, 422)


@router.get("/workflows/{workflow_id}")
async def workflow_detail(
    workflow_id: str, request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> HTMLResponse:
    workflow = await workflow_service.get(
        runtime.store, tenant_id=principal.tenant_id, workflow_id=workflow_id
    )
    context = {
        "workflow": workflow,
        "webhook_url": webhook_url(request, workflow.id),
        "sample": '{"order": {"id": 1042, "total": 99.5}}',
        "result": None,
        "errors": {},
    }
    return render(request, "workflow.html", context)


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
    form = WorkflowForm.parse(await _form(request), CONNECTOR_FIELDS, current=workflow)
    data = form.to_update()
    if data is not None:
        try:
            await workflow_service.update(
                runtime.store,
                runtime.workflow_cache,
                tenant_id=principal.tenant_id,
                workflow_id=workflow_id,
                data=data,
            )
        except ValidationFailed as exc:
            form.add_errors(forms.errors_by_field(exc.details), exc.message)
        else:
            return _see_other(f"/workflows/{workflow_id}")
    context = {**context, "form": form, "workflow": workflow}
    return render(request, "workflow_form.html", context, 422)


@router.post("/workflows/{workflow_id}/active", dependencies=Csrf)
async def set_active(
    workflow_id: str, request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    form = await _form(request)
    await workflow_service.update(
        runtime.store,
        runtime.workflow_cache,
        tenant_id=principal.tenant_id,
        workflow_id=workflow_id,
        data=WorkflowPatch(active=form.get("active") == "true"),
    )
    return _see_other(f"/workflows/{workflow_id}")


@router.post("/workflows/{workflow_id}/delete", dependencies=Csrf)
async def delete_workflow(
    workflow_id: str, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    await workflow_service.delete(
        runtime.store,
        runtime.workflow_cache,
        tenant_id=principal.tenant_id,
        workflow_id=workflow_id,
    )
    return _see_other("/workflows")


@router.post("/workflows/{workflow_id}/dry-run", dependencies=Csrf)
async def dry_run(
    workflow_id: str, request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> HTMLResponse:
    workflow = await workflow_service.get(
        runtime.store, tenant_id=principal.tenant_id, workflow_id=workflow_id
    )
    form = await _form(request)
    sample = form.get("sample", "")
    context: dict[str, Any] = {
        "workflow": workflow,
        "webhook_url": webhook_url(request, workflow.id),
        "sample": sample,
        "result": None,
        "errors": {},
    }
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
            template_timeout_s=runtime.settings.template_timeout_s,
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
    execution = await webhook_service.start(
        runtime.store,
        runtime.queue,
        workflow_id=workflow.id,
        tenant_id=workflow.tenant_id,
        version=workflow.version,
        trigger=TriggerData(type="manual"),
    )
    return _see_other(f"/executions/{execution.id}")


# -- credentials -------------------------------------------------------------------------------
async def _credentials_page(
    request: Request,
    principal: SessionPrincipal,
    runtime: RuntimeDep,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    credentials = await credential_service.list_(runtime.store, tenant_id=principal.tenant_id)
    context = {
        "credentials": credentials,
        "secret_fields": SECRET_FIELDS,
        "values": values or {"type": "slack"},
        "errors": errors or {},
    }
    return render(request, "credentials.html", context, status)


@router.get("/credentials")
async def credentials(
    request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> HTMLResponse:
    return await _credentials_page(request, principal, runtime)


@router.post("/credentials", dependencies=Csrf)
async def create_credential(
    request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    form = await _form(request)
    kind = form.get("type", "")
    # Only the name and type are ever rendered back: a secret is never put in a page.
    values = {"name": form.get("name", ""), "type": kind}
    fields = SECRET_FIELDS.get(kind, [])
    secret, errors = forms.read(fields, form, f"secret.{kind}.")
    errors = {f"secret.{k}": v for k, v in errors.items()}
    if not errors:
        try:
            data = CredentialCreate(name=form.get("name", ""), type=kind, secret=secret)
            await credential_service.create(
                runtime.store, runtime.cipher, tenant_id=principal.tenant_id, data=data
            )
        except ValidationError as exc:
            errors = _validation_errors(exc)
        except ValidationFailed as exc:
            errors = forms.errors_by_field(exc.details) or {"form": exc.message}
        else:
            return _see_other("/credentials")
    return await _credentials_page(
        request, principal, runtime, values=values, errors=errors, status=422
    )


@router.post("/credentials/{credential_id}/delete", dependencies=Csrf)
async def delete_credential(
    credential_id: str, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    await credential_service.delete(
        runtime.store, tenant_id=principal.tenant_id, credential_id=credential_id
    )
    return _see_other("/credentials")


# -- executions --------------------------------------------------------------------------------
async def _executions(
    principal: SessionPrincipal,
    runtime: RuntimeDep,
    workflow_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str, Query(max_length=20)] = "",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    # The filter form sends ``status=`` for "any status".
    try:
        wanted = ExecutionStatus(status) if status else None
    except ValueError:
        allowed = ", ".join(s.value for s in ExecutionStatus)
        raise BadRequest(f"Unknown status {status!r}; one of {allowed}") from None
    items, next_cursor = await execution_service.list_(
        runtime.store,
        tenant_id=principal.tenant_id,
        workflow_id=workflow_id or None,
        status=wanted,
        cursor=cursor or None,
        limit=50,
    )
    workflows = await workflow_service.list_(runtime.store, tenant_id=principal.tenant_id)
    return {
        "executions": [ExecutionRead.of(e) for e in items],
        "next_cursor": next_cursor,
        "filters": {"workflow_id": workflow_id or "", "status": status},
        "statuses": list(ExecutionStatus),
        "workflows": workflows,
        "names": {w.id: w.name for w in workflows},
    }


ExecutionsDep = Annotated[dict[str, Any], Depends(_executions)]


@router.get("/executions")
async def executions(request: Request, context: ExecutionsDep) -> HTMLResponse:
    return render(request, "executions.html", context)


@router.get("/executions/rows")
async def execution_rows(request: Request, context: ExecutionsDep) -> HTMLResponse:
    return render(request, "_execution_rows.html", context)


async def _execution(
    execution_id: str, principal: SessionPrincipal, runtime: RuntimeDep
) -> dict[str, Any]:
    execution, steps = await execution_service.get(
        runtime.store, tenant_id=principal.tenant_id, execution_id=execution_id
    )
    workflow = await runtime.store.get_workflow(principal.tenant_id, execution.workflow_id)
    return {
        "execution": ExecutionRead.of(execution),
        "trigger": execution.trigger.model_dump(mode="json"),
        "steps": [StepRunRead.of(s) for s in steps],
        "workflow": workflow,
        "retryable": execution.status in execution_service.RESUMABLE,
    }


ExecutionDep = Annotated[dict[str, Any], Depends(_execution)]


@router.get("/executions/{execution_id}")
async def execution_detail(request: Request, context: ExecutionDep) -> HTMLResponse:
    return render(request, "execution.html", context)


@router.get("/executions/{execution_id}/live")
async def execution_live(request: Request, context: ExecutionDep) -> HTMLResponse:
    return render(request, "_execution_body.html", context)


@router.post("/executions/{execution_id}/cancel", dependencies=Csrf)
async def cancel_execution(
    execution_id: str, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    await execution_service.cancel(
        runtime.store, runtime.cancel_bus, tenant_id=principal.tenant_id, execution_id=execution_id
    )
    return _see_other(f"/executions/{execution_id}")


@router.post("/executions/{execution_id}/retry", dependencies=Csrf)
async def retry_execution(
    execution_id: str, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    await execution_service.retry(
        runtime.store, runtime.queue, tenant_id=principal.tenant_id, execution_id=execution_id
    )
    return _see_other(f"/executions/{execution_id}")


# -- API tokens --------------------------------------------------------------------------------
async def _tokens_page(
    request: Request,
    principal: SessionPrincipal,
    runtime: RuntimeDep,
    *,
    created: str | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    tokens = await tenant_service.list_tokens(runtime.store, tenant_id=principal.tenant_id)
    context = {
        "tokens": tokens,
        "current": principal.token_id,
        "created": created,
        "errors": errors or {},
    }
    return render(request, "tokens.html", context, status)


@router.get("/tokens")
async def tokens(
    request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> HTMLResponse:
    return await _tokens_page(request, principal, runtime)


@router.post("/tokens", dependencies=Csrf)
async def create_token(
    request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> HTMLResponse:
    form = await _form(request)
    name = form.get("name", "").strip()
    days = form.get("expires_in_days", "").strip()
    errors = {}
    if not name or len(name) > 200:
        errors["name"] = "give a name of 1 to 200 characters"
    if days and (not days.isdigit() or int(days) < 1):
        errors["expires_in_days"] = "a whole number of days, 1 or more (or empty: no expiry)"
    if errors:
        return await _tokens_page(request, principal, runtime, errors=errors, status=422)
    _, plaintext = await tenant_service.create_token(
        runtime.store,
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        name=name,
        ttl_s=int(days) * 86400 if days else None,
    )
    return await _tokens_page(request, principal, runtime, created=plaintext)


@router.post("/tokens/{token_id}/revoke", dependencies=Csrf)
async def revoke_token(
    token_id: str, request: Request, principal: SessionPrincipal, runtime: RuntimeDep
) -> Response:
    await tenant_service.revoke_token(
        runtime.store, tenant_id=principal.tenant_id, token_id=token_id
    )
    if token_id == principal.token_id:  # this very session: it has just ended
        response = _see_other("/login?expired=true")
        clear_session(request, response)
        return response
    return _see_other("/tokens")
