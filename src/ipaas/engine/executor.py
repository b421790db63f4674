"""Runs one claimed execution to a terminal state, checkpointing every step."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

from ipaas.credentials import service as credential_service
from ipaas.engine.cancellation import StopReason
from ipaas.engine.steps import STOP_OUTCOMES, StepsRun, run_steps
from ipaas.executions.models import Execution, ExecutionStatus, StepRun, StepStatus
from ipaas.kit.clock import utcnow
from ipaas.runtime import Runtime
from ipaas.workflows.models import WorkflowDefinition

_log = structlog.get_logger(__name__)

T = TypeVar("T")

_STOP_FINAL = {reason: (status, error) for reason, (_, status, error) in STOP_OUTCOMES.items()}


async def _uncancellable(coro: Coroutine[Any, Any, T]) -> T:
    """Let a store write finish even if the execution is cancelled meanwhile, so a step that
    happened is never left half-recorded."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


#: Workflow versions are immutable, so a process may keep the ones it ran.
DEFINITION_CACHE_SIZE = 1024


class Executor:
    def __init__(self, runtime: Runtime, owner: str) -> None:
        self.runtime = runtime
        self.owner = owner
        self._definitions: OrderedDict[tuple[str, str, int], WorkflowDefinition] = OrderedDict()

    async def _definition(self, execution: Execution) -> WorkflowDefinition | None:
        key = (execution.tenant_id, execution.workflow_id, execution.workflow_version)
        definition = self._definitions.get(key)
        if definition is not None:
            self._definitions.move_to_end(key)
            return definition
        definition = await self.runtime.store.get_workflow_version(*key)
        if definition is not None:
            self._definitions[key] = definition
            if len(self._definitions) > DEFINITION_CACHE_SIZE:
                self._definitions.popitem(last=False)
        return definition

    async def execute(self, execution: Execution) -> ExecutionStatus | None:
        """Run ``execution`` (claimed by ``owner``); the status it ended in, or ``None`` when
        it was handed back (shutdown) or taken over (lease lost)."""
        store = self.runtime.store
        finished = False

        async def finish(status: ExecutionStatus, error: str | None, step: StepRun | None) -> None:
            nonlocal finished
            finished = True
            await _uncancellable(
                store.finish_execution(
                    execution.id,
                    owner=self.owner,
                    status=status,
                    error=error,
                    finished_at=utcnow(),
                    step=step,
                )
            )

        async def on_step(
            step: StepRun, final: ExecutionStatus | None, _preview: dict[str, Any] | None
        ) -> None:
            if final is None:
                await _uncancellable(store.record_step(step))
            else:
                await finish(
                    final, step.error if final is not ExecutionStatus.succeeded else None, step
                )

        log = _log.bind(execution_id=execution.id, tenant_id=execution.tenant_id)
        try:
            run = await self._prepare(execution)
            if run is None:
                await finish(ExecutionStatus.failed, "workflow version not found", None)
                return ExecutionStatus.failed
            status = await run_steps(run, on_step)
            if not finished:
                await finish(status, None, None)
            log.info("execution_finished", status=status.value, attempt=execution.attempt)
            return status
        except asyncio.CancelledError:
            reason = self.runtime.cancels.reason(execution.id)
            if reason in _STOP_FINAL and not finished:
                status, error = _STOP_FINAL[reason]
                await finish(status, error, None)
            log.info("execution_stopped", reason=reason.value if reason else None)
            if reason in _STOP_FINAL:
                return _STOP_FINAL[reason][0]
            if reason is StopReason.shutdown and not finished:
                await store.release_execution(execution.id, owner=self.owner)
            return None
        except Exception as exc:  # a bug or an unreadable credential must not strand the row
            log.exception("execution_crashed")
            if not finished:
                await finish(ExecutionStatus.failed, f"internal error: {type(exc).__name__}", None)
            return ExecutionStatus.failed

    async def _prepare(self, execution: Execution) -> StepsRun | None:
        store = self.runtime.store
        definition = await self._definition(execution)
        if definition is None:
            return None
        done: dict[str, StepRun] = {}
        if execution.attempt > 1:  # resumed after a crash: completed steps are not repeated
            done = {
                s.step_id: s
                for s in await store.list_step_runs(execution.tenant_id, execution.id)
                if s.status is StepStatus.succeeded
            }
        credential_ids = sorted({s.credential_id for s in definition.steps if s.credential_id})
        secrets: dict[str, dict[str, Any]] = {}
        if credential_ids:
            loaded = await credential_service.load_secrets(
                store,
                self.runtime.cipher,
                tenant_id=execution.tenant_id,
                credential_ids=credential_ids,
            )
            secrets = {cid: secret for cid, (_, secret) in loaded.items()}
        cancels = self.runtime.cancels
        return StepsRun(
            tenant_id=execution.tenant_id,
            execution_id=execution.id,
            definition=definition,
            trigger=execution.trigger,
            secrets=secrets,
            http=self.runtime.http,
            endpoints=self.runtime.endpoints,
            done=done,
            attempt=execution.attempt,
            stop_reason=lambda: cancels.reason(execution.id),
            template_timeout_s=self.runtime.settings.template_timeout_s,
        )
