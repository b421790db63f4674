"""A webhook answered with its execution's result (a trigger's ``response.wait_s``): the
intake waits for the execution it just committed, then renders ``response.body`` over the
steps' outputs (n8n's Respond to Webhook; a Slack slash command answered with what its
steps found, within Slack's 3 s).

The execution runs as any other (a worker claims it from the queue); the intake only reads
the store until it is terminal, so the same code waits in one process and in a scaled-out
API process whose workers run elsewhere. Waiting costs the request's connection and a read
of the execution's row every few tens of milliseconds, nothing on the path of webhooks
whose trigger does not wait.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ipaas.engine.steps import item_of
from ipaas.engine.templating import RenderShareSpent, TemplateRenderError
from ipaas.errors import IpaasError, StoreUnavailable
from ipaas.executions.models import ExecutionStatus, StepRun

if TYPE_CHECKING:  # the runtime imports the webhooks, not the other way round
    from ipaas.runtime import Runtime
    from ipaas.workflows.models import WebhookResponse

#: The first pause between two reads of the execution, and the longest: most executions
#: of a few steps end within tens of milliseconds, a slow remote's in seconds.
FIRST_POLL_S = 0.01
MAX_POLL_S = 0.1

_JSON = "application/json"
_TEXT_PLAIN = "text/plain; charset=utf-8"


class ExecutionFailed(IpaasError):
    status_code = 502
    code = "execution_failed"


@dataclass(frozen=True, slots=True)
class Result:
    text: str
    media_type: str


async def waited(
    runtime: Runtime, tenant_id: str, execution_id: str, response: WebhookResponse
) -> Result | None:
    """``response`` rendered over the execution once it succeeded; ``None`` when it is not
    terminal within ``response.wait_s``, when ``IPAAS_WEBHOOK_MAX_WAITING`` answers wait
    already (so that senders that wait cannot hold the server's connections and memory
    without bound), or when the database stops answering meanwhile (the caller answers 202:
    the execution is committed, and a 503 would have the sender send it again). A failed,
    timed out or cancelled execution, or a body that does not render, raises
    ``ExecutionFailed``."""
    global _waiting
    if _waiting >= runtime.settings.webhook_max_waiting:
        return None
    _waiting += 1
    try:
        return await _waited(runtime, tenant_id, execution_id, response)
    except StoreUnavailable:
        return None
    finally:
        _waiting -= 1


#: Answers waiting now in this process (``IPAAS_WEBHOOK_MAX_WAITING``).
_waiting = 0


async def _waited(
    runtime: Runtime, tenant_id: str, execution_id: str, response: WebhookResponse
) -> Result | None:
    assert response.wait_s is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + response.wait_s
    pause = FIRST_POLL_S
    while True:
        execution = await runtime.store.get_execution(tenant_id, execution_id)
        if execution is None:  # deleted with its workflow meanwhile
            return None
        if execution.status.terminal:
            break
        left = deadline - loop.time()
        if left <= 0:
            return None
        await asyncio.sleep(min(pause, left))  # the last read comes at the deadline
        pause = min(pause * 2, MAX_POLL_S)
    details = {"execution_id": execution_id, "status": execution.status.value}
    if execution.status is not ExecutionStatus.succeeded:
        msg = f"the workflow's execution {execution.status.value}: {execution.error}"
        raise ExecutionFailed(msg, details=details)
    if response.body is None:
        return Result("", _TEXT_PLAIN)
    context = {
        "trigger": execution.trigger.model_dump(mode="json"),
        "steps": step_results(await runtime.store.list_step_runs(tenant_id, execution_id)),
        "execution": {"id": execution_id, "workflow_id": execution.workflow_id},
    }
    try:
        value = runtime.templates.render(tenant_id, {"body": response.body}, context)["body"]
    except (TemplateRenderError, RenderShareSpent) as exc:
        raise ExecutionFailed(
            f"the response's body did not render: {exc}", details=details
        ) from exc
    if isinstance(value, str):
        return Result(value, response.content_type or _TEXT_PLAIN)
    # One expression that gives an object, a list, a number: its JSON.
    return Result(orjson.dumps(value).decode(), response.content_type or _JSON)


def step_results(runs: list[StepRun]) -> dict[str, dict[str, Any]]:
    """``steps`` as templates read them after a run: each step's ``output`` and ``status``
    (its last attempt's); a loop's outputs as the list of its items'."""
    results: dict[str, dict[str, Any]] = {}
    loops: dict[str, dict[int, Any]] = {}
    for run in runs:  # by position, start and attempt: a later attempt wins
        item = item_of(run.step_id)
        if item is not None:
            base, index = item
            loops.setdefault(base, {})[index] = run.output
            results[base] = {"output": None, "status": run.status.value}
        else:
            results[run.step_id] = {"output": run.output, "status": run.status.value}
    for base, items in loops.items():
        results[base]["output"] = [items[i] for i in sorted(items)]
    return results
