"""Public intake, as a plain Starlette route: the hottest path skips FastAPI's dependency and
serialization machinery (about 1.6x the requests/s here; docs/benchmarks.md). Errors still
go through the app's one exception handler; the OpenAPI entry is written out below."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ipaas.runtime import Runtime
from ipaas.webhooks import service as webhook_service

PATH = "/api/webhooks/{workflow_id}"


async def receive_webhook(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    trigger = webhook_service.trigger_data(
        body=await request.body(),
        content_type=request.headers.get("content-type"),
        headers=request.headers,
        query=request.query_params,
    )
    execution = await webhook_service.accept(
        runtime.store,
        runtime.queue,
        runtime.workflow_cache,
        workflow_id=request.path_params["workflow_id"],
        trigger=trigger,
        max_queue_depth=runtime.settings.queue_max_depth,
    )
    return JSONResponse(
        {"execution_id": execution.id, "status_url": f"/api/executions/{execution.id}"},
        status_code=202,
    )


route = Route(PATH, receive_webhook, methods=["POST"])


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


OPENAPI_PATH: dict[str, Any] = {
    "post": {
        "tags": ["webhooks"],
        "summary": "Receive Webhook",
        "description": (
            "Public intake (the workflow id is the unguessable address). Any JSON, form or "
            "UTF-8 text body. 202 only once the execution is committed."
        ),
        "operationId": "receive_webhook",
        "parameters": [
            {"name": "workflow_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "requestBody": {
            "content": {
                "application/json": {"schema": {}},
                "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                "text/plain": {"schema": {"type": "string"}},
            }
        },
        "responses": {
            "202": {
                "description": "Accepted: the execution is committed and queued",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["execution_id", "status_url"],
                            "properties": {
                                "execution_id": {"type": "string"},
                                "status_url": {"type": "string"},
                            },
                        }
                    }
                },
            },
            "404": _error("Unknown or inactive workflow"),
            "413": _error("Body larger than IPAAS_MAX_BODY_BYTES"),
            "415": _error("Multipart or non-UTF-8 raw body"),
            "422": _error("Body declared JSON but invalid"),
            "503": _error("Queue over IPAAS_QUEUE_MAX_DEPTH (with Retry-After)"),
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
