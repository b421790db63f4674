"""Runs one claimed execution to a terminal state, checkpointing every step."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog

from ipaas.credentials import service as credential_service
from ipaas.engine.cancellation import StopReason
from ipaas.engine.connectors.base import NOT_CALLED
from ipaas.engine.retries import RetryRules
from ipaas.engine.steps import STOP_OUTCOMES, StepsRun, run_steps
from ipaas.engine.subworkflows import Starter
from ipaas.errors import StoreUnavailable
from ipaas.executions.models import Execution, ExecutionStatus, StepRun, StepStatus
from ipaas.kit.cache import TtlCache
from ipaas.kit.clock import utcnow
from ipaas.observability import metrics
from ipaas.runtime import Runtime
from ipaas.workflows.models import WorkflowDefinition

_log = structlog.get_logger(__name__)

T = TypeVar("T")

#: A resumed execution's records that are not run again.
_DONE = (StepStatus.succeeded, StepStatus.skipped)

_STOP_FINAL = {reason: (status, error) for reason, (_, status, error) in STOP_OUTCOMES.items()}


async def _uncancellable(coro: Coroutine[Any, Any, T] | asyncio.Future[T]) -> T:
    """Let a store write finish even if the execution is cancelled meanwhile, so a step that
    happened is never left half-recorded."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


#: First and longest pause between attempts of a store write during a database outage.
OUTAGE_RETRY_FIRST_S = 0.1
OUTAGE_RETRY_MAX_S = 2.0

#: How long a worker reuses the decrypted secrets of a set of credentials.
SECRETS_TTL_S = 2.0

_NO_SECRETS = credential_service.Secrets({})

#: Workflow versions are immutable, so a process may keep the ones it ran.
DEFINITION_CACHE_SIZE = 1024


class Executor:
    """Runs claimed executions for one worker.

    ``on_settled(execution_id)`` is called once an execution's outcome is decided and only
    writing it remains (finish, or defer to a retry): the worker may then start another in
    its place while the write is under way. ``on_claimed(finished_id, execution)`` gets an
    execution a finish claimed in the finished one's place, before ``on_settled`` for it.
    ``on_waiting(next_attempt_at)`` hears of each execution it handed back to wait (a retry,
    a delay), once the store holds it.
    """

    def __init__(
        self,
        runtime: Runtime,
        owner: str,
        on_settled: Callable[[str], None] | None = None,
        on_claimed: Callable[[str, Execution], None] | None = None,
        on_waiting: Callable[[datetime], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.owner = owner
        self._on_settled = on_settled or (lambda _: None)
        self._on_waiting = on_waiting or (lambda _: None)
        #: Takes an execution the finish of another claimed in its place (where the store
        #: can: ``Store.finish_and_claim_next``); ``None``: finishes claim nothing.
        self._on_claimed = on_claimed
        #: Off while the worker stops: a finish then claims nothing more.
        self.claim_on_finish = on_claimed is not None
        self._definitions: OrderedDict[tuple[str, str, int], WorkflowDefinition] = OrderedDict()
        #: Credentials change rarely (a new secret, a deletion): a worker keeps the decrypted
        #: secrets of a step set briefly instead of reading them per execution. A replaced
        #: secret or a deleted credential stays in use here for at most the TTL.
        #: Keyed by tenant, credential ids and ``Runtime.credential_changes``.
        self._secrets: TtlCache[tuple[str, tuple[str, ...], int], credential_service.Secrets] = (
            TtlCache(SECRETS_TTL_S)
        )
        #: Executions whose outcome is decided and being written (finish, or defer to a
        #: retry), until ``execute`` returns: the write ends their lease, so a renewal that
        #: misses one has not lost it (``Worker._renew``).
        self.settling: set[str] = set()

    @property
    def finishes_claim(self) -> bool:
        """A finish claims the tenant's next execution in its place (``on_claimed``; where
        the store does not apply writes in order: ``Store.finish_and_claim_next``)."""
        return (
            self._on_claimed is not None
            and self.claim_on_finish
            and not self.runtime.store.writes_in_order
        )

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

    async def _outlasting(self, write: Callable[[], Awaitable[T]], execution_id: str) -> T:
        """Run a store write, waiting out a database outage for up to one lease: a step that
        happened is then recorded when the database returns, not repeated by another worker.
        Past the lease the row is the reaper's anyway, and ``StoreUnavailable`` is raised."""
        deadline = time.monotonic() + self.runtime.settings.lease_s
        pause = OUTAGE_RETRY_FIRST_S
        while True:
            try:
                return await write()
            except StoreUnavailable:
                if time.monotonic() + pause > deadline:
                    raise
                if pause == OUTAGE_RETRY_FIRST_S:
                    _log.warning("store_write_waiting", execution_id=execution_id)
            await asyncio.sleep(pause)
            pause = min(pause * 2, OUTAGE_RETRY_MAX_S)

    def _settling_write(
        self, write: Callable[[], Awaitable[bool]], execution_id: str
    ) -> asyncio.Task[bool]:
        """Start the write of an execution's outcome, and tell the worker its slot is free:
        at once where the store applies writes in order (the write's task takes its first
        step, which hands the write over, before ``on_settled`` runs, so the next claim is
        applied after it); else once the write is done, since a claim running beside it
        would still count this execution against its tenant's cap."""
        self.settling.add(execution_id)
        task = asyncio.ensure_future(self._outlasting(write, execution_id))
        if self.runtime.store.writes_in_order:
            asyncio.get_running_loop().call_soon(self._on_settled, execution_id)
        else:
            task.add_done_callback(lambda _: self._on_settled(execution_id))
        return task

    async def execute(self, execution: Execution) -> ExecutionStatus | None:
        """Run ``execution`` (claimed by ``owner``); the status it ended in, or ``None`` when
        it was handed back (shutdown) or taken over (lease lost)."""
        try:
            return await self._execute(execution)
        finally:
            self.settling.discard(execution.id)

    async def _execute(self, execution: Execution) -> ExecutionStatus | None:
        store = self.runtime.store
        finished = False

        async def settle(write: Callable[[], Awaitable[bool]]) -> bool:
            """The write that ends this run (a finish or a deferral): ``finished`` from now
            on, unless it raises (a value the database refused); then the last resort below
            ends the execution without the step, rather than leave it running for good."""
            nonlocal finished
            finished = True
            try:
                return await _uncancellable(self._settling_write(write, execution.id))
            except Exception:
                finished = False
                raise

        async def finish(status: ExecutionStatus, error: str | None, step: StepRun | None) -> None:
            finished_at = utcnow()

            async def write_finish() -> bool:
                on_claimed = self._on_claimed
                if step is None or on_claimed is None or not self.finishes_claim:
                    return await store.finish_execution(
                        execution.id,
                        owner=self.owner,
                        status=status,
                        error=error,
                        finished_at=finished_at,
                        step=step,
                    )
                # The tenant's next execution takes this one's slot in the same write
                # (when no other tenant waits): no claim round trip between them.
                settings = self.runtime.settings
                written, claimed = await store.finish_and_claim_next(
                    execution.id,
                    owner=self.owner,
                    status=status,
                    error=error,
                    finished_at=finished_at,
                    step=step,
                    lease_until=finished_at + timedelta(seconds=settings.lease_s),
                    timeout_s=settings.execution_timeout_s,
                )
                if claimed is not None:
                    on_claimed(execution.id, claimed)
                return written

            if await settle(write_finish):  # else another worker owns it now and counts it
                metrics.execution_finished(status, execution.started_at, finished_at)

        async def on_step(
            step: StepRun, final: ExecutionStatus | None, _preview: dict[str, Any] | None
        ) -> None:
            if step.error_code not in NOT_CALLED:
                # A wait (a circuit open, a workflow not ended yet...) is no attempt: the
                # step metrics count attempts, ``ipaas_queue_waiting`` the waits.
                metrics.step_finished(
                    step.type,
                    step.status.value,
                    (step.finished_at - step.started_at).total_seconds(),
                    retried=final is ExecutionStatus.queued and step.status is StepStatus.failed,
                )
            if final is None:
                await _uncancellable(
                    self._outlasting(lambda: store.record_step(step), execution.id)
                )
            elif final is ExecutionStatus.queued:
                # A retry, or a delay, waits in the store; this worker's slot is free
                # meanwhile.
                next_attempt_at = step.next_attempt_at
                assert next_attempt_at is not None
                deferred_at = utcnow()
                deadline_at = None
                if step.status is StepStatus.succeeded and execution.deadline_at is not None:
                    # A delay's wait does not count against the execution's timeout.
                    deadline_at = execution.deadline_at + (next_attempt_at - deferred_at)
                deferred = await settle(
                    lambda: store.defer_execution(
                        execution.id,
                        owner=self.owner,
                        next_attempt_at=next_attempt_at,
                        step=step,
                        now=deferred_at,
                        deadline_at=deadline_at,
                    )
                )
                if deferred:
                    self._on_waiting(next_attempt_at)
            else:
                await finish(
                    final, step.error if final is not ExecutionStatus.succeeded else None, step
                )

        # Passed to each line rather than bound: binding builds a logger per execution.
        ids = {"execution_id": execution.id, "tenant_id": execution.tenant_id}
        try:
            run = await self._prepare(execution)
            if run is None:
                await finish(ExecutionStatus.failed, "workflow version not found", None)
                return ExecutionStatus.failed
            status = await run_steps(run, on_step)
            if not finished:
                await finish(status, None, None)
            if status is ExecutionStatus.queued:
                _log.info("execution_deferred", attempt=execution.attempt, **ids)
            else:
                _log.info(
                    "execution_finished", status=status.value, attempt=execution.attempt, **ids
                )
            return status
        except asyncio.CancelledError:
            reason = self.runtime.cancels.reason(execution.id)
            if reason in _STOP_FINAL and not finished:
                status, error = _STOP_FINAL[reason]
                await finish(status, error, None)
            _log.info("execution_stopped", reason=reason.value if reason else None, **ids)
            if reason in _STOP_FINAL:
                return _STOP_FINAL[reason][0]
            if reason is StopReason.shutdown and not finished:
                await store.release_execution(execution.id, owner=self.owner)
            return None
        except StoreUnavailable:
            # Nothing can be recorded: the lease runs out and the reaper hands the execution
            # to a worker once the database is back (completed steps are not repeated).
            _log.warning("execution_abandoned", reason="store_unavailable", **ids)
            return None
        except Exception as exc:  # a bug or an unreadable credential must not strand the row
            _log.exception("execution_crashed", **ids)
            if not finished:
                await finish(ExecutionStatus.failed, f"internal error: {type(exc).__name__}", None)
            return ExecutionStatus.failed

    async def _load_secrets(
        self, key: tuple[str, tuple[str, ...], int]
    ) -> credential_service.Secrets:
        tenant_id, credential_ids, _ = key
        return await credential_service.load_secrets(
            self.runtime.store,
            self.runtime.cipher,
            tenant_id=tenant_id,
            credential_ids=credential_ids,
        )

    async def _prepare(self, execution: Execution) -> StepsRun | None:
        store = self.runtime.store
        definition = await self._definition(execution)
        if definition is None:
            return None
        done: dict[str, StepRun] = {}
        made: Counter[str] = Counter()
        attempts: dict[str, int] = {}
        if execution.attempt > 1:
            # Resumed (a retry, a manual retry, a crash): completed steps are not repeated.
            for s in await store.list_step_runs(execution.tenant_id, execution.id):
                if s.status in _DONE:
                    done[s.step_id] = s
                    continue
                if s.error_code in NOT_CALLED:
                    continue  # the call was not made; the next attempt takes its number
                attempts[s.step_id] = max(attempts.get(s.step_id, 1), s.attempt + 1)
                # Attempts before a manual retry (which resets ``started_at``) do not count.
                if s.status is StepStatus.failed and (
                    execution.started_at is None or s.started_at >= execution.started_at
                ):
                    made[s.step_id] += 1
        credential_ids = sorted({s.credential_id for s in definition.steps if s.credential_id})
        secrets = _NO_SECRETS
        if credential_ids:
            key = (execution.tenant_id, tuple(credential_ids), self.runtime.credential_changes)
            secrets = await self._secrets.get(key, self._load_secrets)
        cancels = self.runtime.cancels
        return StepsRun(
            tenant_id=execution.tenant_id,
            execution_id=execution.id,
            workflow_id=execution.workflow_id,
            created_at=execution.created_at,
            definition=definition,
            trigger=execution.trigger,
            secrets=secrets.by_id,
            unreadable=secrets.unreadable,
            http=self.runtime.http,
            endpoints=self.runtime.endpoints,
            done=done,
            attempts=attempts,
            retry=RetryRules(
                made=made,
                deadline_at=execution.deadline_at,
                max_retry_after_s=self.runtime.settings.retry_after_max_s,
            ),
            circuit=self.runtime.breaker.gate(execution.tenant_id),
            stop_reason=lambda: cancels.reason(execution.id),
            templates=self.runtime.templates,
            tokens=self.runtime.tokens,
            workflows=Starter(self.runtime, execution),
        )
