"""Running a definition's steps in order: render, validate, call, record (shared by real
executions and dry runs)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic import ValidationError

from ipaas.engine.cancellation import StopReason
from ipaas.engine.connectors import get_connector
from ipaas.engine.connectors.base import (
    TEMPLATE_SHARE,
    CircuitGate,
    Connector,
    ConnectorError,
    Endpoints,
    NotCalledError,
    StepContext,
    WorkflowStarter,
)
from ipaas.engine.connectors.filter import as_condition
from ipaas.engine.connectors.oauth2 import TokenCache
from ipaas.engine.retries import RetryRules
from ipaas.engine.templating import RenderShareSpent, TemplateRenderer, TemplateRenderError
from ipaas.executions.models import ExecutionStatus, StepRun, StepStatus, TriggerData
from ipaas.kit import jsontext
from ipaas.kit.clock import utcnow
from ipaas.kit.http import HttpClient
from ipaas.kit.secrets import Redactor, mask_headers, mask_url, secret_strings
from ipaas.kit.text import without_nul
from ipaas.observability import tracing
from ipaas.workflows.models import Step, WorkflowDefinition

#: Called after every step with the step run and, for the last one run, the execution's
#: terminal status (``None`` while more steps follow; ``queued`` when the step will be
#: retried, or the execution goes on after a delay, at its ``next_attempt_at``).
OnStep = Callable[[StepRun, ExecutionStatus | None, "dict[str, Any] | None"], Awaitable[None]]

#: The most items a ``for_each`` step runs: each is a call and a record, within the
#: execution's timeout.
MAX_LOOP_ITEMS = 100

#: What a user cancel or the execution timeout makes of the step in flight and the execution.
STOP_OUTCOMES = {
    StopReason.cancelled: (StepStatus.cancelled, ExecutionStatus.cancelled, "cancelled by user"),
    StopReason.timed_out: (StepStatus.timed_out, ExecutionStatus.timed_out, "execution timed out"),
}


@dataclass(slots=True)
class StepsRun:
    tenant_id: str
    execution_id: str
    definition: WorkflowDefinition
    trigger: TriggerData
    #: Decrypted secrets by credential id.
    secrets: Mapping[str, dict[str, Any]]
    http: HttpClient
    endpoints: Endpoints
    #: Steps already completed by an earlier attempt: their outputs are reused, not re-run.
    done: Mapping[str, StepRun] = field(default_factory=dict)
    #: The attempt number each step's next run records (1 when absent).
    attempts: Mapping[str, int] = field(default_factory=dict)
    #: ``None``: a failure is final and a delay does not wait (dry runs).
    retry: RetryRules | None = None
    circuit: CircuitGate | None = None
    simulate: bool = False
    #: Renders step configs: the render timeout, each tenant's share of render time.
    templates: TemplateRenderer = field(default_factory=TemplateRenderer)
    stop_reason: Callable[[], StopReason | None] = lambda: None
    #: Credentials that exist but no key of ``IPAAS_SECRET_KEY`` decrypts.
    unreadable: frozenset[str] = frozenset()
    #: The workflow run (empty: a dry run of a definition never saved).
    workflow_id: str = ""
    #: When the execution was created (a dry run: when it started).
    created_at: datetime | None = None
    #: OAuth 2.0 access tokens (``Runtime.tokens``; a dry run asks for its own).
    tokens: TokenCache = field(default_factory=TokenCache)
    #: Starts other workflows (``run_workflow``); ``None``: a dry run, which starts none.
    workflows: WorkflowStarter | None = None


def validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)
    )


def connector_message(exc: ConnectorError) -> str:
    parts = [exc.message]
    if exc.status_code is not None and str(exc.status_code) not in exc.message:
        parts.append(f"HTTP {exc.status_code}")
    if exc.remote_error and exc.remote_error not in exc.message:
        parts.append(f"remote: {exc.remote_error}")
    return " | ".join(parts)


def describe_request(request: httpx.Request, redactor: Redactor) -> dict[str, Any]:
    """A sent (or would-be-sent) request as a reader may see it: secrets masked."""
    content = request.content
    body: Any
    try:
        body = jsontext.loads(content) if content else None
    except jsontext.JsonError:
        body = content.decode("utf-8", "replace")
    return {
        "method": request.method,
        "url": mask_url(str(request.url), redactor),
        "headers": mask_headers(dict(request.headers.items())),
        "body": redactor(body),
    }


#: The step's credential exists, but this process cannot decrypt it.
CREDENTIAL_UNREADABLE = "credential_unreadable"


def _step_secret(step: Step, run: StepsRun) -> dict[str, Any] | None:
    if step.credential_id is None:
        return None
    secret = run.secrets.get(step.credential_id)
    if secret is not None:
        return secret
    if step.credential_id in run.unreadable:
        # The operator's to fix (the key), not the user's; retried like a network error,
        # so executions recover on their own if the right key is back within the retries
        # (a scaled-out worker with the wrong key hands them to the others that way too).
        msg = (
            f"credential {step.credential_id} cannot be decrypted with this server's "
            "IPAAS_SECRET_KEY (it was encrypted under another key)"
        )
        raise ConnectorError(msg, retryable=True, code=CREDENTIAL_UNREADABLE)
    msg = f"credential {step.credential_id} not found"
    raise ConnectorError(msg, retryable=False)


def execution_context(run: StepsRun) -> dict[str, Any]:
    """``execution`` as templates see it: the same in every attempt and retry of the
    execution, so ``{{ execution.id }}`` makes an idempotency key a remote can dedupe a
    repeated call by (the one repeat left: a crash inside a step's own call)."""
    created_at = run.created_at.isoformat().replace("+00:00", "Z") if run.created_at else None
    return {
        "id": run.execution_id,
        "workflow_id": run.workflow_id or None,
        "created_at": created_at,
    }


async def run_steps(run: StepsRun, on_step: OnStep) -> ExecutionStatus:
    """Run the steps not yet done; returns the execution's terminal status."""
    redactor = Redactor(s for secret in run.secrets.values() for s in secret_strings(secret))
    context: dict[str, Any] = {
        "trigger": run.trigger.model_dump(mode="json"),
        "steps": {},
        "execution": execution_context(run),
    }
    steps = run.definition.steps
    for position, step in enumerate(steps):
        last = position == len(steps) - 1
        previous = run.done.get(step.id)
        if previous is not None:  # done: a step's run, or a loop's ``when`` that skipped it
            context["steps"][step.id] = {"output": previous.output, "status": previous.status}
            continue
        if step.when is not None:
            recorded, final = await _when_record(
                run, step, position, context, redactor, on_step, last
            )
            if final is not None:
                return final
            if recorded:
                continue
        if step.for_each is not None:
            final = await _run_loop(run, step, position, context, redactor, on_step, last=last)
            if final is not None:
                return final
            continue
        step_run, final, preview = await _run_step(
            run, step, step.id, position, context, redactor, last=last
        )
        await on_step(step_run, final, preview)
        if final is not None:
            return final
        context["steps"][step.id] = {"output": step_run.output, "status": step_run.status}
    return ExecutionStatus.succeeded


def _render(run: StepsRun, value: dict[str, Any], context: dict[str, Any]) -> Any:
    """``value``'s templates rendered for the run's tenant; its share of render time spent
    is a call not made, tried again when the share is whole (``NotCalledError``)."""
    try:
        return run.templates.render(run.tenant_id, value, context)
    except RenderShareSpent as exc:
        retry_at = utcnow() + timedelta(seconds=exc.wait_s)
        raise NotCalledError(str(exc), retry_at=retry_at, code=TEMPLATE_SHARE) from exc


async def _when_record(
    run: StepsRun,
    step: Step,
    position: int,
    context: dict[str, Any],
    redactor: Redactor,
    on_step: OnStep,
    last: bool,
) -> tuple[bool, ExecutionStatus | None]:
    """A step's ``when``, read before the step (and before its loop): ``(False, None)`` when
    it holds and the step runs; else the record it made (``skipped``, or ``failed`` when it
    does not render to a boolean) has been passed to ``on_step``: ``(True, status)``, the
    execution's status when it ends there."""
    started_at = utcnow()
    value: Any = step.when
    failure: ConnectorError | None = None
    error: str | None = None
    try:
        if isinstance(step.when, str):
            value = _render(run, {"when": step.when}, context)["when"]
        if as_condition(value):
            return False, None
    except ConnectorError as exc:
        failure, error = exc, connector_message(exc)
    except (TemplateRenderError, ValueError) as exc:
        error = f"when: {exc}"
    status = StepStatus.skipped if error is None else StepStatus.failed
    final = await _step_record(
        run,
        step,
        position,
        started_at,
        status,
        {"when": value},
        error,
        failure,
        redactor,
        on_step,
        last,
    )
    context["steps"][step.id] = {"output": None, "status": status}
    return True, final


async def _step_record(
    run: StepsRun,
    step: Step,
    position: int,
    started_at: datetime,
    status: StepStatus,
    rendered: Any,
    error: str | None,
    failure: ConnectorError | None,
    redactor: Redactor,
    on_step: OnStep,
    last: bool,
) -> ExecutionStatus | None:
    """The record a step makes under its own id before any call of it (its ``when`` that
    skips it; a ``when`` or ``for_each`` that does not render), passed to ``on_step``; the
    execution's status if it ends there."""
    step_run, final = _recorded(
        run,
        step,
        step.id,
        position,
        started_at,
        status,
        rendered,
        None,
        error,
        failure,
        redactor,
        connector=get_connector(step.type),
        last=last,
    )
    await on_step(step_run, final, None)
    return final


def item_id(step_id: str, index: int) -> str:
    """The record of one item of a ``for_each`` step."""
    return f"{step_id}[{index}]"


def item_of(record: str) -> tuple[str, int] | None:
    """The step id and index of an item's record (``item_id``); ``None`` for a step's own."""
    step_id, bracket, index = record.partition("[")
    return (step_id, int(index.rstrip("]"))) if bracket else None


async def _run_loop(
    run: StepsRun,
    step: Step,
    position: int,
    context: dict[str, Any],
    redactor: Redactor,
    on_step: OnStep,
    *,
    last: bool,
) -> ExecutionStatus | None:
    """A ``for_each`` step: its call once per item, in order, each recorded on its own
    (``item_id``), so a later attempt runs only the items not done; later steps see the
    outputs as one list. The execution's status when it ends here, else ``None``."""
    started_at = utcnow()
    failure: ConnectorError | None = None
    error: str | None = None
    items: list[Any] = []
    try:
        items = loop_items(_render(run, {"for_each": step.for_each}, context)["for_each"])
    except ConnectorError as exc:
        failure, error = exc, connector_message(exc)
    except (TemplateRenderError, ValueError) as exc:
        error = f"{exc}"
    if error is not None:
        rendered = {"for_each": step.for_each}
        status = StepStatus.failed
        return await _step_record(
            run,
            step,
            position,
            started_at,
            status,
            rendered,
            error,
            failure,
            redactor,
            on_step,
            last,
        )
    outputs: dict[int, Any] = {}
    pending: list[tuple[int, Any]] = []
    for index, item in enumerate(items):
        previous = run.done.get(item_id(step.id, index))
        if previous is not None:
            outputs[index] = previous.output
        else:
            pending.append((index, item))
    at_once = step.concurrency or 1
    if at_once > 1 and len(pending) > 1 and not run.simulate:
        final = await _run_items_at_once(
            run, step, position, context, redactor, on_step, pending, at_once, outputs
        )
        if final is not None:
            return final
    else:
        for index, item in pending:
            scope = {**context, "item": item, "index": index}
            step_run, final, preview = await _run_step(
                run,
                step,
                item_id(step.id, index),
                position,
                scope,
                redactor,
                last=last and index == len(items) - 1,
            )
            await on_step(step_run, final, preview)
            if final is not None:
                return final
            outputs[index] = step_run.output
    context["steps"][step.id] = {
        "output": [outputs[i] for i in range(len(items))],
        "status": StepStatus.succeeded,
    }
    return None


#: Which outcome of items run at once ends the execution when several would: a stop
#: (cancel, timeout) before a failure before a retry's wait; among equals, the first item.
_ENDS_FIRST = {
    ExecutionStatus.cancelled: 0,
    ExecutionStatus.timed_out: 0,
    ExecutionStatus.failed: 1,
    ExecutionStatus.queued: 2,
}

_Ending = tuple[int, StepRun, ExecutionStatus, "dict[str, Any] | None"]


def _ends_first(one: _Ending, other: _Ending | None) -> bool:
    if other is None:
        return True
    return (_ENDS_FIRST.get(one[2], 1), one[0]) < (_ENDS_FIRST.get(other[2], 1), other[0])


async def _run_items_at_once(
    run: StepsRun,
    step: Step,
    position: int,
    context: dict[str, Any],
    redactor: Redactor,
    on_step: OnStep,
    pending: list[tuple[int, Any]],
    at_once: int,
    outputs: dict[int, Any],
) -> ExecutionStatus | None:
    """A ``for_each`` step's ``pending`` items with up to ``at_once`` calls in flight
    (``Step.concurrency``); their outputs go into ``outputs``. Each item is recorded when
    it ends, as one after another would be. When one ends the execution (a failure, a
    retry's wait), no item starts after it: those in flight end and are recorded, then the
    outcome that ends it first (``_ENDS_FIRST``) goes to ``on_step`` last, with the
    execution's status (returned). A cancel or the timeout stops the calls in flight: each
    is recorded as stopped, and the ``CancelledError`` goes on to the executor, as it does
    from one step."""
    waiting = iter(pending)
    running: dict[asyncio.Future[tuple[StepRun, ExecutionStatus | None, Any]], int] = {}
    ending: _Ending | None = None

    def start() -> None:
        for index, item in waiting:
            scope = {**context, "item": item, "index": index}
            record = item_id(step.id, index)
            call = _run_step(run, step, record, position, scope, redactor, last=False)
            running[asyncio.ensure_future(call)] = index
            if len(running) >= at_once:
                return

    start()
    try:
        while running:
            ended, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for call in sorted(ended, key=running.__getitem__):
                index = running.pop(call)
                step_run, final, preview = call.result()
                if final is not None:
                    candidate = (index, step_run, final, preview)
                    if not _ends_first(candidate, ending):
                        await on_step(step_run, None, preview)  # recorded; another ends it
                        continue
                    if ending is not None:
                        await on_step(ending[1], None, ending[3])
                    ending = candidate
                    continue
                await on_step(step_run, None, preview)
                outputs[index] = step_run.output
            if ending is None:
                start()
    except asyncio.CancelledError:
        if ending is not None:
            await on_step(ending[1], None, ending[3])
        for call in running:
            call.cancel()
        for outcome in await asyncio.gather(*running, return_exceptions=True):
            if not isinstance(outcome, BaseException):  # a stop, recorded (not a shutdown)
                await on_step(outcome[0], None, outcome[2])
        raise
    except BaseException:  # the store gone past the lease, a bug: no call is left behind
        for call in running:
            call.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise
    if ending is None:
        return None
    _, step_run, final, preview = ending
    await on_step(step_run, final, preview)
    return final


def loop_items(value: Any) -> list[Any]:
    """What a ``for_each`` rendered to, as the items to run: a list (of at most
    ``MAX_LOOP_ITEMS``); ``null`` (a payload field that is missing) is none."""
    if value is None:
        return []
    if not isinstance(value, list):
        shown = type(value).__name__ if not isinstance(value, str) else "text"
        msg = f"for_each must give a list, not {shown}; e.g. {{{{ trigger.body.items }}}}"
        raise ValueError(msg)
    if len(value) > MAX_LOOP_ITEMS:
        msg = f"for_each gave {len(value)} items; a step runs at most {MAX_LOOP_ITEMS}"
        raise ValueError(msg)
    return value


async def _run_step(
    run: StepsRun,
    step: Step,
    record: str,
    position: int,
    context: dict[str, Any],
    redactor: Redactor,
    *,
    last: bool,
) -> tuple[StepRun, ExecutionStatus | None, dict[str, Any] | None]:
    """One call of ``step`` (recorded as ``record``: its id, or one item's): the step run,
    the execution's status if it ends here, and the request a simulation would send."""
    started_at = utcnow()
    rendered: Any = None
    output: Any = None
    error: str | None = None
    preview: dict[str, Any] | None = None
    status = StepStatus.succeeded
    failure: ConnectorError | None = None
    stopped: ExecutionStatus | None = None
    connector = get_connector(step.type)
    try:
        if connector is None:
            msg = f"unknown step type {step.type!r}"
            raise ConnectorError(msg, retryable=False)
        rendered = _render(run, step.config, context)
        params = connector.Params.model_validate(rendered)
        ctx = StepContext(
            http=run.http,
            secret=_step_secret(step, run),
            endpoints=run.endpoints,
            tenant_id=run.tenant_id,
            execution_id=run.execution_id,
            step_id=record,
            credential_id=step.credential_id or "",
            timeout_s=step.timeout_s,
            circuit=run.circuit,
            tokens=run.tokens,
            workflows=run.workflows,
        )
        if run.simulate and connector.calls_out:
            preview = connector.preview(params) or describe_request(
                connector.build(ctx, params), redactor
            )
        else:
            with tracing.span("step", **{"ipaas.step_id": record, "ipaas.connector": step.type}):
                output = await connector.run(ctx, params)
    except ConnectorError as exc:
        status, error, failure = StepStatus.failed, connector_message(exc), exc
    except ValidationError as exc:
        status, error = StepStatus.failed, f"invalid params: {validation_message(exc)}"
    except (TemplateRenderError, ValueError) as exc:
        status, error = StepStatus.failed, f"{exc}"
    except asyncio.CancelledError:
        outcome = STOP_OUTCOMES.get(run.stop_reason() or StopReason.shutdown)
        if outcome is None:
            raise  # shutdown or lease lost: nothing of this attempt is recorded
        status, stopped, error = outcome
    step_run, final = _recorded(
        run,
        step,
        record,
        position,
        started_at,
        status,
        rendered,
        output,
        error,
        failure,
        redactor,
        connector=connector,
        last=last,
        stopped=stopped,
    )
    return step_run, final, preview


def _recorded(
    run: StepsRun,
    step: Step,
    record: str,
    position: int,
    started_at: datetime,
    status: StepStatus,
    rendered: Any,
    output: Any,
    error: str | None,
    failure: ConnectorError | None,
    redactor: Redactor,
    *,
    connector: Connector | None,
    last: bool,
    stopped: ExecutionStatus | None = None,
) -> tuple[StepRun, ExecutionStatus | None]:
    """The step run of one call and the execution's status if it ends there: failed (or
    queued, when the step's policy retries it), succeeded after the last call (or the last
    step skipped) or a filter that stops it, queued after a delay, ``stopped`` (cancelled,
    timed out)."""
    finished_at = utcnow()
    next_attempt_at = None
    final = stopped
    if status is StepStatus.failed:
        final = ExecutionStatus.failed
        if failure is not None and connector is not None and run.retry is not None:
            policy = connector.retry.overridden(step.retry)
            next_attempt_at = run.retry.next_attempt_at(record, policy, failure, finished_at)
            if next_attempt_at is not None:
                final = ExecutionStatus.queued
            elif failure.retryable and run.retry.attempts(record) > 1:
                error = f"{error} (gave up after {run.retry.attempts(record)} attempts)"
    elif status is StepStatus.skipped:
        final = ExecutionStatus.succeeded if last else None
    elif status is StepStatus.succeeded and (
        last or (connector is not None and connector.halts(output))
    ):
        # The last step, or a filter whose condition does not hold: the rest do not run.
        final = ExecutionStatus.succeeded
    elif status is StepStatus.succeeded and connector is not None and run.retry is not None:
        # A delay: the execution waits in the store, like a retry, and goes on from the
        # next step (a dry run, with no store to wait in, goes on at once).
        resumes_at = connector.resumes_at(output)
        if resumes_at is not None and resumes_at > finished_at:
            final, next_attempt_at = ExecutionStatus.queued, resumes_at
    step_run = StepRun(
        execution_id=run.execution_id,
        tenant_id=run.tenant_id,
        step_id=record,
        position=position,
        type=step.type,
        status=status,
        attempt=run.attempts.get(record, 1),
        input=redactor(rendered),
        output=redactor(output),
        # A remote's error text may hold U+0000, which PostgreSQL cannot store.
        error=without_nul(redactor.text(error)) if error else None,
        error_code=failure.code if failure is not None else None,
        status_code=failure.status_code if failure is not None else None,
        next_attempt_at=next_attempt_at,
        started_at=started_at,
        finished_at=finished_at,
    )
    return step_run, final
