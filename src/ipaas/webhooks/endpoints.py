"""Public intake, as a plain Starlette route: the hottest path skips FastAPI's dependency and
serialization machinery (about 1.6x the requests/s here; docs/benchmarks.md). Errors still
go through the app's one exception handler; the OpenAPI entry is written out below."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ipaas.errors import IpaasError
from ipaas.observability import metrics, tracing
from ipaas.runtime import Runtime
from ipaas.webhooks import service as webhook_service

PATH = "/api/webhooks/{workflow_id}"


async def receive_webhook(request: Request) -> JSONResponse:
    started = time.perf_counter()
    with tracing.server_span("POST /api/webhooks/{workflow_id}", request.headers) as span:
        response = await _receive(request, started)
        if span is not None:
            span.set_attribute("http.response.status_code", response.status_code)
        return response


async def _receive(request: Request, started: float) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    try:
        accepted = await webhook_service.accept(
            runtime.store,
            runtime.queue,
            runtime.intake,
            workflow_id=request.path_params["workflow_id"],
            body=await request.body(),
            content_type=request.headers.get("content-type"),
            headers=request.headers,
            query=request.query_params,
        )
    except IpaasError as exc:
        metrics.webhook_refused(exc.code, exc.status_code, started)
        raise
    except Exception:
        metrics.webhook_refused("internal_error", 500, started)
        raise
    metrics.webhook_answered(started, duplicate=accepted.duplicate)
    content: dict[str, Any] = {
        "execution_id": accepted.execution_id,
        "status_url": f"/api/executions/{accepted.execution_id}",
    }
    if accepted.duplicate:
        content["duplicate"] = True
        return JSONResponse(content, status_code=200)
    return JSONResponse(content, status_code=202)


route = Route(PATH, receive_webhook, methods=["POST"])


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "integer"}}


_RETRY_AFTER = {"Retry-After": _header("Seconds to wait before sending again")}
_RATE_HEADERS = _RETRY_AFTER | {
    # draft-ietf-httpapi-ratelimit-headers-06
    "RateLimit-Limit": _header("Webhooks allowed per window (the tenant's burst)"),
    "RateLimit-Remaining": _header("Webhooks left in the current window"),
    "RateLimit-Reset": _header("Seconds until a webhook is allowed again"),
    "RateLimit-Policy": {
        "description": "The window: `<amount>;w=<seconds>`",
        "schema": {"type": "string"},
    },
}
_ACCEPTED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["execution_id", "status_url"],
    "properties": {
        "execution_id": {"type": "string"},
        "status_url": {"type": "string"},
        "duplicate": {"type": "boolean", "description": "Only on 200: always true"},
    },
}


OPENAPI_PATH: dict[str, Any] = {
    "post": {
        "tags": ["webhooks"],
        "summary": "Receive Webhook",
        "description": (
            "Public intake (the workflow id is the unguessable address). Any JSON, form or "
            "UTF-8 text body. 202 only once the execution is committed.\n\n"
            "When the trigger has `auth`, the raw body must be signed: Standard Webhooks "
            "(`webhook-id`, `webhook-timestamp` within 5 minutes, `webhook-signature`) or one "
            "HMAC-SHA256 header (e.g. `X-Hub-Signature-256: sha256=<hex>`); else 401.\n\n"
            "An `Idempotency-Key` or `webhook-id` header (or the trigger's "
            "`idempotency.body_path` / `idempotency.header`) makes a repeat within "
            "IPAAS_IDEMPOTENCY_WINDOW_S answer 200 with the first execution's id."
        ),
        "operationId": "receive_webhook",
        "parameters": [
            {"name": "workflow_id", "in": "path", "required": True, "schema": {"type": "string"}},
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "A repeat within the window answers 200 and creates nothing",
            },
        ],
        "requestBody": {
            "content": {
                "application/json": {"schema": {}},
                "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                "text/plain": {"schema": {"type": "string"}},
            }
        },
        "responses": {
            "200": {
                "description": "Duplicate: an earlier webhook with this idempotency key "
                "made this execution; nothing new was created",
                "content": {"application/json": {"schema": _ACCEPTED_SCHEMA}},
            },
            "202": {
                "description": "Accepted: the execution is committed and queued",
                "content": {"application/json": {"schema": _ACCEPTED_SCHEMA}},
            },
            "401": _error(
                "Signature missing (`signature_missing`), wrong (`signature_invalid`) or "
                "outside the 5-minute tolerance (`signature_expired`)"
            ),
            "404": _error("Unknown or inactive workflow"),
            "413": _error("Body larger than IPAAS_MAX_BODY_BYTES"),
            "415": _error("Multipart or non-UTF-8 raw body"),
            "422": _error("Body declared JSON but invalid"),
            "429": _error("Over the tenant's webhook rate (`rate_limited`)", _RATE_HEADERS),
            "503": _error(
                "Queue over IPAAS_QUEUE_MAX_DEPTH (`queue_full`), the tenant's queued limit "
                "(`tenant_queue_full`), or the database unavailable (`store_unavailable`)",
                _RETRY_AFTER,
            ),
        },
    }
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
        }
    },
}
