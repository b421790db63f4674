from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse

from ipaas.api.deps import RuntimeDep
from ipaas.webhooks import service as webhook_service

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


@router.post(
    "/{workflow_id}",
    status_code=status.HTTP_202_ACCEPTED,
    responses={202: {"description": "Accepted: the execution is committed and queued"}},
)
async def receive_webhook(workflow_id: str, request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Public intake (the workflow id is the unguessable address). Any JSON, form or text body."""
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
        workflow_id=workflow_id,
        trigger=trigger,
        max_queue_depth=runtime.settings.queue_max_depth,
    )
    return JSONResponse(
        {"execution_id": execution.id, "status_url": f"/api/executions/{execution.id}"},
        status_code=status.HTTP_202_ACCEPTED,
    )
