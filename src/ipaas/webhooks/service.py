"""Public intake: the event becomes a committed ``queued`` execution before anyone hears 202."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import structlog
from pydantic import ValidationError
from starlette.datastructures import Headers

from ipaas.credentials import service as credential_service
from ipaas.credentials.crypto import UndecryptableSecret
from ipaas.credentials.models import CredentialType
from ipaas.engine.queue import JobQueue
from ipaas.errors import Forbidden, NotFound, ServiceUnavailable, ValidationFailed
from ipaas.executions.models import Execution, ExecutionStatus, TriggerData
from ipaas.kit.clock import utcnow
from ipaas.kit.ids import new_id
from ipaas.kit.secrets import MASK, mask_headers
from ipaas.observability import tracing
from ipaas.stores.base import Store
from ipaas.webhooks.bodies import decode_content, parse_body
from ipaas.webhooks.cache import IntakeWorkflow
from ipaas.webhooks.checks import Challenge, post_check
from ipaas.webhooks.fields import header_values, query_values
from ipaas.webhooks.idempotency import dedup_key
from ipaas.webhooks.intake import Intake
from ipaas.webhooks.ratelimit import rate_for
from ipaas.webhooks.signatures import SignatureRejected, handshake, scrubbed, verify
from ipaas.workflows.models import (
    TriggerType,
    WebhookAuthScheme,
    WebhookOptions,
    WebhookResponse,
)

_log = structlog.get_logger(__name__)

_RETRY_AFTER_S = "5"
#: Meta's challenges are numbers of about ten digits; this leaves room, and no more.
_MAX_CHALLENGE_CHARS = 256


class WorkflowNotFound(NotFound):
    code = "workflow_not_found"


def trigger_data(
    *,
    body: bytes,
    content_type: str | None,
    headers: Headers,
    query_string: bytes,
    method: str = "POST",
    secret_header: str | None = None,
) -> TriggerData:
    """``secret_header``: the workflow's own signature or token header (``auth.header``),
    masked as the known ones are."""
    values = mask_headers(header_values(headers.items()))
    if secret_header is not None and secret_header.lower() in values:
        values[secret_header.lower()] = MASK
    return TriggerData(
        type="webhook",
        method=method,
        body=parse_body(body, content_type),
        headers=values,
        query=query_values(query_string),
        content_type=content_type,
    )


@dataclass(frozen=True, slots=True)
class Accepted:
    execution_id: str
    #: An earlier webhook with the same idempotency key made ``execution_id``.
    duplicate: bool = False
    #: The signature scheme it passed: some senders want an answer of their own.
    scheme: WebhookAuthScheme | None = None
    #: The trigger's own answer, when it has one.
    response: WebhookResponse | None = None
    #: The workflow's tenant (an answer that waits for the execution reads it).
    tenant_id: str = ""


async def accept(
    store: Store,
    queue: JobQueue,
    intake: Intake,
    *,
    workflow_id: str,
    body: bytes,
    content_type: str | None,
    headers: Headers,
    query_string: bytes,
    url: Callable[[], str] | None = None,
) -> Accepted | Challenge:
    """Verify, rate-limit and deduplicate a webhook, then persist it as a queued execution
    and offer it to the workers. Every refusal raises before anything is written. A signed
    check of the URL (Slack's, Zoom's) is answered (``Challenge``) and makes no execution.

    ``headers`` are the request's, every line of them (Starlette's ``Headers``, which look
    names up case-insensitively); ``query_string`` is the raw one (``trigger.query``:
    ``webhooks/fields.py``); ``url`` gives the URL the sender called (Twilio signs it)."""
    target = await intake.workflows.get(workflow_id, partial(_load_workflow, store))
    if target is None:
        raise WorkflowNotFound("Workflow not found or inactive")
    workflow, options = target.workflow, target.options
    # The request's log lines (its access line too) name the tenant from here on.
    structlog.contextvars.bind_contextvars(tenant_id=workflow.tenant_id)
    if target.misconfigured:
        raise SignatureRejected(
            "This workflow's webhook options are invalid; save it again", code="auth_misconfigured"
        )
    encoding = headers.get("content-encoding")
    if encoding:
        body = decode_content(body, encoding, intake.settings.max_body_bytes)
    # Unsigned (Microsoft Graph's, Event Grid's): answered whatever the workflow's auth.
    check = post_check(query_string, headers, body)
    if check is not None:
        return check
    if options.auth is not None:
        secrets = await intake.secrets.get(
            (workflow.tenant_id, options.auth.credential_id), partial(_load_secrets, store, intake)
        )
        # The bytes as the sender wrote and signed them: before parsing, after gzip.
        verify(options.auth, secrets, body, headers, url=url)
        answer = handshake(options.auth, secrets, body, content_type, headers)
        if answer is not None:
            return Challenge(answer=answer)
    await _check_limits(store, intake, workflow.tenant_id)
    trigger = trigger_data(
        body=body,
        content_type=content_type,
        headers=headers,
        query_string=query_string,
        secret_header=options.auth.header if options.auth is not None else None,
    )
    if options.auth is not None:
        trigger.body = scrubbed(options.auth, trigger.body)
    key = dedup_key(options.idempotency, headers, trigger.body)
    with tracing.span("enqueue") as span:
        execution, first_id = await _start(
            store,
            queue,
            workflow_id=workflow.id,
            tenant_id=workflow.tenant_id,
            version=workflow.version,
            trigger=trigger,
            dedup_key=key,
            window_s=intake.settings.idempotency_window_s,
        )
        if span is not None:
            span.set_attribute(tracing.EXECUTION_ID, first_id or execution.id)
    scheme = options.auth.scheme if options.auth is not None else None
    if first_id is not None:
        return Accepted(
            first_id,
            duplicate=True,
            scheme=scheme,
            response=options.response,
            tenant_id=workflow.tenant_id,
        )
    intake.depth.added(workflow.tenant_id)
    return Accepted(
        execution.id, scheme=scheme, response=options.response, tenant_id=workflow.tenant_id
    )


async def _load_workflow(store: Store, workflow_id: str) -> IntakeWorkflow | None:
    workflow = await store.get_workflow_for_intake(workflow_id)
    if workflow is None or not workflow.active or workflow.trigger.type is not TriggerType.webhook:
        return None
    try:
        options = workflow.trigger.webhook
    except ValidationError:
        _log.error("webhook_options_invalid", workflow_id=workflow_id)
        return IntakeWorkflow(workflow, WebhookOptions(), misconfigured=True)
    return IntakeWorkflow(workflow, options)


async def active_webhook(store: Store, intake: Intake, workflow_id: str) -> None:
    """``WorkflowNotFound`` (404) unless ``workflow_id`` is an active webhook workflow."""
    target = await intake.workflows.get(workflow_id, partial(_load_workflow, store))
    if target is None:
        raise WorkflowNotFound("Workflow not found or inactive")
    structlog.contextvars.bind_contextvars(tenant_id=target.workflow.tenant_id)


async def confirm_subscription(
    store: Store, intake: Intake, *, workflow_id: str, query: Mapping[str, object]
) -> str:
    """Meta's subscription check (WhatsApp, Messenger, Instagram: "Getting started with
    webhooks"): ``GET ?hub.mode=subscribe&hub.verify_token=...&hub.challenge=...``, to be
    answered with the challenge when the token is the one the user chose, which the
    workflow's signing credential holds as ``verify_token``. Meta then signs each event
    with ``X-Hub-Signature-256``, which ``hmac_sha256``'s defaults check. Nothing is
    stored; a wrong or unset token is a 403."""
    target = await intake.workflows.get(workflow_id, partial(_load_workflow, store))
    if target is None:
        raise WorkflowNotFound("Workflow not found or inactive")
    workflow, auth = target.workflow, target.options.auth
    structlog.contextvars.bind_contextvars(tenant_id=workflow.tenant_id)
    if query.get("hub.mode") != "subscribe":
        raise ValidationFailed(
            "hub.mode must be subscribe (Meta's subscription check)", code="invalid_subscription"
        )
    token = None
    if auth is not None and not target.misconfigured:
        token = await intake.verify_tokens.get(
            (workflow.tenant_id, auth.credential_id), partial(_load_verify_token, store, intake)
        )
    if token is None:
        raise Forbidden(
            "This workflow takes no subscription check: give its signing credential a verify_token",
            code="verify_token_not_set",
        )
    given = query.get("hub.verify_token")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
        raise Forbidden("hub.verify_token is not this workflow's", code="verify_token_mismatch")
    challenge = query.get("hub.challenge")
    if not isinstance(challenge, str) or not 0 < len(challenge) <= _MAX_CHALLENGE_CHARS:
        raise ValidationFailed(
            f"hub.challenge must be given once, at most {_MAX_CHALLENGE_CHARS} characters",
            code="invalid_subscription",
        )
    return challenge


async def _load_verify_token(store: Store, intake: Intake, key: tuple[str, str]) -> str | None:
    secret = await _secret_of(store, intake, key)
    token = secret.get("verify_token") if secret is not None else None
    return token if isinstance(token, str) and token else None


async def _load_secrets(store: Store, intake: Intake, key: tuple[str, str]) -> tuple[str, ...]:
    secret = await _secret_of(store, intake, key)
    if secret is None:
        return ()
    return tuple(s for s in (secret.get("secret"), secret.get("previous_secret")) if s)


async def _secret_of(store: Store, intake: Intake, key: tuple[str, str]) -> dict[str, Any] | None:
    """The decrypted secret of a ``webhook_secret`` credential (``None``: no such one)."""
    tenant_id, credential_id = key
    credential = await store.get_credential(tenant_id, credential_id)
    if credential is None or credential.type is not CredentialType.webhook_secret:
        return None
    try:
        return intake.cipher.decrypt(credential.secret_ciphertext)
    except UndecryptableSecret as exc:
        # The server's key is wrong, not the sender's request: they retry later (the
        # operator's fix, a restart with the right key, then lets the webhook in).
        credential_service.log_undecryptable(tenant_id, [credential_id])
        raise ServiceUnavailable(
            "This workflow's signing secret cannot be read; retry later",
            code="signing_secret_unreadable",
            headers={"Retry-After": _RETRY_AFTER_S},
        ) from exc


async def _check_limits(store: Store, intake: Intake, tenant_id: str) -> None:
    """The tenant's rate (429), then the global and the tenant's queue depth (503)."""
    tenant = await intake.tenants.get(tenant_id, store.get_tenant)
    limits = intake.limits_for(tenant)
    if limits.rate_limit is not None:
        await intake.limiter.hit(tenant_id, rate_for(limits.rate_limit, limits.rate_burst))
    await _room(store, intake, tenant_id, limits.max_queued)


async def queue_room(store: Store, intake: Intake, tenant_id: str) -> int | None:
    """How many more executions ``tenant_id`` may queue now (``None``: no cap set), under
    ``IPAAS_QUEUE_MAX_DEPTH`` and the tenant's ``max_queued``, as for a webhook; 503 with
    ``Retry-After`` (``queue_full``, ``tenant_queue_full``) when none. For work the API
    queues besides webhooks: manual runs, retries, replays."""
    tenant = await intake.tenants.get(tenant_id, store.get_tenant)
    return await _room(store, intake, tenant_id, intake.limits_for(tenant).max_queued)


async def _room(store: Store, intake: Intake, tenant_id: str, max_queued: int | None) -> int | None:
    room: int | None = None
    limits = (
        (intake.settings.queue_max_depth, None, "queue_full", "Too much work queued"),
        (max_queued, tenant_id, "tenant_queue_full", "This tenant has too much work queued"),
    )
    for cap, counted, code, message in limits:
        if cap is None:
            continue
        left = cap - await intake.depth.count(store, counted)
        if left <= 0:
            raise ServiceUnavailable(
                f"{message}; retry later", code=code, headers={"Retry-After": _RETRY_AFTER_S}
            )
        room = left if room is None else min(room, left)
    return room


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
    execution = new_execution(workflow_id, tenant_id, version, trigger, dedup_key, replay_of)
    await store.create_execution(execution)
    await enqueue(queue, execution.id)
    return execution


async def start_admitted(
    store: Store,
    queue: JobQueue,
    intake: Intake,
    *,
    workflow_id: str,
    tenant_id: str,
    version: int,
    trigger: TriggerData,
    replay_of: str | None = None,
) -> Execution:
    """``start`` for work the API queues besides webhooks (a manual run, a replay): only
    where the queue has room (``queue_room``: else 503, as for a webhook)."""
    await queue_room(store, intake, tenant_id)
    execution = await start(
        store,
        queue,
        workflow_id=workflow_id,
        tenant_id=tenant_id,
        version=version,
        trigger=trigger,
        replay_of=replay_of,
    )
    intake.depth.added(tenant_id)
    return execution


async def _start(
    store: Store,
    queue: JobQueue,
    *,
    workflow_id: str,
    tenant_id: str,
    version: int,
    trigger: TriggerData,
    dedup_key: str | None,
    window_s: float,
) -> tuple[Execution, str | None]:
    """``start`` for a webhook: with an idempotency key, an execution of the workflow
    that holds the key and is younger than ``window_s`` wins, and its id comes back
    second (nothing written, nothing enqueued)."""
    if dedup_key is None:
        return await start(
            store,
            queue,
            workflow_id=workflow_id,
            tenant_id=tenant_id,
            version=version,
            trigger=trigger,
        ), None
    execution = new_execution(workflow_id, tenant_id, version, trigger, dedup_key)
    expired_before = execution.created_at - timedelta(seconds=window_s)
    first_id = await store.create_execution_once(execution, expired_before=expired_before)
    if first_id is None:
        await enqueue(queue, execution.id)
    return execution, first_id


def new_execution(
    workflow_id: str,
    tenant_id: str,
    version: int,
    trigger: TriggerData,
    dedup_key: str | None,
    replay_of: str | None = None,
) -> Execution:
    return Execution(
        id=new_id("ex"),
        tenant_id=tenant_id,
        workflow_id=workflow_id,
        workflow_version=version,
        status=ExecutionStatus.queued,
        trigger=trigger,
        created_at=utcnow(),
        dedup_key=dedup_key,
        replay_of=replay_of,
        # The worker's spans continue from here, in whatever process (None: tracing off).
        trace_context=tracing.current_traceparent(),
    )


async def enqueue(queue: JobQueue, execution_id: str) -> None:
    try:
        await queue.enqueue(execution_id)
    except Exception as exc:  # committed already: a worker's store poll or the reaper takes it
        _log.warning("enqueue_failed", execution_id=execution_id, error=repr(exc))
