"""Public intake: the event becomes a committed ``queued`` execution before anyone hears 202."""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import parse_qsl

import structlog

from ipaas.engine.queue import JobQueue
from ipaas.errors import NotFound, ServiceUnavailable, UnsupportedMediaType, ValidationFailed
from ipaas.executions.models import Execution, ExecutionStatus, TriggerData
from ipaas.kit.clock import utcnow
from ipaas.kit.ids import new_id
from ipaas.kit.secrets import mask_headers
from ipaas.stores.base import Store
from ipaas.webhooks.cache import WorkflowCache
from ipaas.workflows.models import TriggerType

_log = structlog.get_logger(__name__)

#: Headers that describe the transport, not the event: not worth storing per execution.
_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})
_RETRY_AFTER_S = "5"


class WorkflowNotFound(NotFound):
    code = "workflow_not_found"


def parse_body(body: bytes, content_type: str | None) -> object:
    """JSON and form bodies become objects; anything else is kept as text."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if not body:
        return None
    if media == "application/json" or media.endswith("+json"):
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ValidationFailed(f"Body is not valid JSON: {exc}", code="invalid_json") from exc
    if media == "application/x-www-form-urlencoded":
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError as exc:
            raise ValidationFailed("Form body is not UTF-8", code="invalid_form") from exc
    if media.startswith("multipart/"):
        raise UnsupportedMediaType(
            "multipart bodies are not accepted; send JSON, a form or raw text"
        )
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsupportedMediaType("Raw bodies must be UTF-8 text") from exc


def trigger_data(
    *,
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    method: str = "POST",
) -> TriggerData:
    return TriggerData(
        type="webhook",
        method=method,
        body=parse_body(body, content_type),
        headers=mask_headers({k: v for k, v in headers.items() if k not in _HOP_HEADERS}),
        query=dict(query),
        content_type=content_type,
    )


async def accept(
    store: Store,
    queue: JobQueue,
    cache: WorkflowCache,
    *,
    workflow_id: str,
    trigger: TriggerData,
    max_queue_depth: int | None,
) -> Execution:
    """Persist a webhook as a queued execution, then offer it to the workers."""
    workflow = await cache.get(workflow_id, store.get_workflow_for_intake)
    if workflow is None or not workflow.active or workflow.trigger.type is not TriggerType.webhook:
        raise WorkflowNotFound("Workflow not found or inactive")
    if max_queue_depth is not None and await store.count_queued() >= max_queue_depth:
        raise ServiceUnavailable(
            "Too much work queued; retry later",
            code="queue_full",
            headers={"Retry-After": _RETRY_AFTER_S},
        )
    return await start(
        store,
        queue,
        workflow_id=workflow.id,
        tenant_id=workflow.tenant_id,
        version=workflow.version,
        trigger=trigger,
    )


async def start(
    store: Store,
    queue: JobQueue,
    *,
    workflow_id: str,
    tenant_id: str,
    version: int,
    trigger: TriggerData,
    dedup_key: str | None = None,
    replay_of: str | None = None,
) -> Execution:
    """Commit a ``queued`` execution, then offer its id to the queue. With ``dedup_key``
    the store raises ``DuplicateError`` (nothing written, nothing enqueued) when that key
    already has an execution of this workflow."""
    execution = Execution(
        id=new_id("ex"),
        tenant_id=tenant_id,
        workflow_id=workflow_id,
        workflow_version=version,
        status=ExecutionStatus.queued,
        trigger=trigger,
        created_at=utcnow(),
        dedup_key=dedup_key,
        replay_of=replay_of,
    )
    await store.create_execution(execution)
    try:
        await queue.enqueue(execution.id)
    except Exception:  # committed already: a worker's store poll or the reaper picks it up
        _log.warning("enqueue_failed", execution_id=execution.id, exc_info=True)
    return execution
