"""What a connector is: a ``Params`` model, the credential type it needs, and how it turns
rendered params into one outbound HTTP request and the response into a step output."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import httpx
from pydantic import BaseModel, ConfigDict

from ipaas.credentials.models import CredentialType
from ipaas.executions.models import ExecutionStatus
from ipaas.kit import jsontext
from ipaas.kit.egress import EgressRefused
from ipaas.kit.http import MAX_JSON_BYTES, MAX_RESPONSE_BYTES, HttpClient, describe_error
from ipaas.workflows.models import RetryConfig

if TYPE_CHECKING:
    from ipaas.engine.connectors.oauth2 import TokenCache

#: Characters of a remote error body kept in ``ConnectorError.remote_error``: enough for any
#: API's error message, small enough for an execution record and a log line.
MAX_ERROR_CHARS = 2048


class ConnectorError(Exception):
    """A step failed. ``retryable`` says whether trying again later could succeed: a timeout,
    a connection error, 408, 429 or 5xx; not another 4xx, nor invalid params."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status_code: int | None = None,
        remote_error: str | None = None,
        retry_after_s: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status_code = status_code
        self.remote_error = remote_error
        self.retry_after_s = retry_after_s
        #: A stable code for the step record (``timeout``, ``connection_error``...).
        self.code = code


#: ``NotCalledError`` codes: the step's call was not made (or, for a workflow it waits
#: for, made again at no cost: the start is idempotent).
CIRCUIT_OPEN = "circuit_open"
TEMPLATE_SHARE = "template_share"
QUEUE_FULL = "queue_full"
WAITING_FOR_WORKFLOW = "waiting_for_workflow"
NOT_CALLED = frozenset({CIRCUIT_OPEN, TEMPLATE_SHARE, QUEUE_FULL, WAITING_FOR_WORKFLOW})


class NotCalledError(ConnectorError):
    """The step's call was not made and may be at ``retry_at``: the wait costs no attempt
    (the next attempt takes this one's number)."""

    def __init__(self, message: str, *, retry_at: datetime, code: str) -> None:
        super().__init__(message, retryable=True, code=code)
        self.retry_at = retry_at


class CircuitOpenError(NotCalledError):
    """The destination's circuit is open: the call was not made. Try again at ``retry_at``."""

    def __init__(self, host: str, retry_at: datetime) -> None:
        super().__init__(
            f"circuit open for {host}: not called, next try at {retry_at.isoformat()}",
            retry_at=retry_at,
            code=CIRCUIT_OPEN,
        )
        self.host = host


class CircuitGate(Protocol):
    """The circuit breaker as a step sees it (bound to the step's tenant)."""

    async def before(self, host: str) -> None:
        """Raise ``CircuitOpenError`` when ``host`` must not be called now."""

    async def after(self, host: str, *, failed: bool) -> None:
        """Report a call's outcome; ``failed`` for a retryable-class failure only."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a connector's failed calls are retried unless a step says otherwise."""

    #: Calls in all, the first included.
    max_attempts: int = 3
    #: Backoff before the first retry; doubled per retry up to ``max_delay_s``, then a
    #: random part of it is taken (full jitter), so failed callers do not return in step.
    initial_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def overridden(self, config: RetryConfig | None) -> RetryPolicy:
        """This policy with the fields a step's ``retry`` sets."""
        if config is None:
            return self
        return replace(self, **{k: v for k, v in config if v is not None})


@dataclass(frozen=True, slots=True)
class Started:
    """An execution a ``run_workflow`` step started (or had started before: the start is
    idempotent per step and item)."""

    execution_id: str
    workflow_id: str
    #: ``queued``, ``running``... and, once it ended, its outcome.
    status: ExecutionStatus
    error: str | None
    #: Once it succeeded: each step's ``output`` and ``status`` (``results.step_results``).
    steps: dict[str, Any] | None = None
    #: Seconds since it was created.
    age_s: float | None = None


class WorkflowStarter(Protocol):
    """Other workflows of the step's tenant, as a ``run_workflow`` step starts them."""

    async def start(self, workflow_id: str, body: Any, *, record: str) -> Started:
        """Start ``workflow_id`` with ``body`` as its trigger's, once per ``record`` (the
        step's, or one item's) of this execution: a later attempt gets the same one."""

    async def state(self, started: Started) -> Started:
        """``started`` as it is now (its steps' results once it succeeded)."""


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Base URLs of the hosted APIs, overridable so tests talk to local stand-ins."""

    slack_api_url: str = "https://slack.com/api"
    openweather_url: str = "https://api.openweathermap.org"


@dataclass(slots=True)
class StepContext:
    http: HttpClient
    #: The decrypted credential secret, or ``None`` when the step uses no credential.
    secret: dict[str, Any] | None
    endpoints: Endpoints = field(default_factory=Endpoints)
    tenant_id: str = ""
    execution_id: str = ""
    step_id: str = ""
    #: The credential the step uses (``""``: none), whose OAuth 2.0 connection is its own.
    credential_id: str = ""
    timeout_s: float | None = None
    #: The circuit breaker of the step's tenant; ``None`` in dry runs and unit tests.
    circuit: CircuitGate | None = None
    #: OAuth 2.0 access tokens of ``http`` credentials: the process's (``Runtime.tokens``),
    #: or one of its own (a dry run, a unit test).
    tokens: TokenCache = field(default_factory=lambda: _token_cache())
    #: Starts other workflows of the tenant; ``None`` in dry runs, which start nothing.
    workflows: WorkflowStarter | None = None


def _token_cache() -> TokenCache:
    from ipaas.engine.connectors.oauth2 import TokenCache  # it builds on this module

    return TokenCache()


class Params(BaseModel):
    """Base of every connector's params: unknown keys are an error, named in the 422."""

    model_config = ConfigDict(extra="forbid")


class Connector:
    #: The step ``type`` that selects this connector (``slack_message``...).
    type: ClassVar[str]
    # ``builtins.type``: in this class body ``type`` is the attribute above.
    Params: ClassVar[builtins.type[Params]]
    #: The credential type a step of this connector needs; ``None``: no credential.
    credential_type: ClassVar[CredentialType | None]
    #: Whether a step may omit its credential (``http_request`` may call a public URL).
    credential_optional: ClassVar[bool] = False
    #: How failed calls are retried; a step's ``retry`` overrides single fields.
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    #: Whether the step calls a remote (a simulated dry run shows the request instead).
    calls_out: ClassVar[bool] = True
    #: Whether a step may have a ``for_each`` (a filter or a delay may not).
    loops: ClassVar[bool] = True

    def halts(self, output: Any) -> bool:
        """Whether this step's ``output`` ends the execution here, as ``succeeded`` (a
        filter whose condition does not hold)."""
        return False

    def resumes_at(self, output: Any) -> datetime | None:
        """When the execution goes on after this step's ``output`` (a delay); ``None``:
        at once."""
        return None

    def preview(self, params: Any) -> dict[str, Any] | None:
        """What a simulated dry run shows instead of an HTTP request, for a step whose
        call is not one (``None``: the request ``build`` makes)."""
        return None

    def build(self, ctx: StepContext, params: Any) -> httpx.Request:
        """The exact request this step sends (shown as-is, masked, by a simulated dry run)."""
        raise NotImplementedError

    def parse(self, response: httpx.Response) -> Any:
        """The step output for a response, or ``ConnectorError`` for a failure."""
        raise NotImplementedError

    async def run(self, ctx: StepContext, params: Any) -> Any:
        request = self.build(ctx, params)
        gate, host = ctx.circuit, destination(request.url)
        if gate is not None:
            await gate.before(host)
        try:
            response = await send(ctx, request)
            result = self.parse(response)
        except ConnectorError as exc:
            if isinstance(exc.__cause__, EgressRefused):
                raise  # nothing was sent: the host's circuit learns nothing either way
            error = exc
        else:
            if gate is not None:
                await gate.after(host, failed=False)
            return result
        if gate is not None:
            # A 4xx or an unusable answer still shows the host is up: not a failure here.
            await gate.after(host, failed=error.retryable)
        raise error


async def send(ctx: StepContext, request: httpx.Request) -> httpx.Response:
    """``request`` sent on the step's HTTP client within its timeout; no answer at all is a
    ``ConnectorError``: a timeout or a connection error (may pass), or a destination the
    egress policy refuses (will not: the step's config must change)."""
    try:
        return await ctx.http.send(request, timeout_s=ctx.timeout_s)
    except EgressRefused as exc:
        msg = f"{exc.code}: {exc}; IPAAS_EGRESS_ALLOW lists exceptions"
        raise ConnectorError(msg, retryable=False, code=exc.code) from exc
    except httpx.TimeoutException as exc:
        msg = f"request timed out: {describe_error(exc)}"
        raise ConnectorError(msg, retryable=True, code="timeout") from exc
    except httpx.HTTPError as exc:
        raise ConnectorError(describe_error(exc), retryable=True, code="connection_error") from exc


def response_text(response: httpx.Response) -> str:
    """The remote body as text, cut to ``MAX_RESPONSE_BYTES``."""
    charset = _charset(response.headers.get("content-type", ""))
    try:
        return response.content[:MAX_RESPONSE_BYTES].decode(charset, "replace")
    except LookupError:  # a charset Python does not know
        return response.content[:MAX_RESPONSE_BYTES].decode("utf-8", "replace")


def _charset(content_type: str) -> str:
    """The ``charset`` parameter of a Content-Type, else UTF-8 (httpx's ``encoding`` parses
    the header with the email package: a few percent of a Slack step's CPU in a profile)."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"') or "utf-8"
    return "utf-8"


def response_body(response: httpx.Response) -> Any:
    """The parsed JSON body when the remote says it is JSON and it is at most
    ``MAX_JSON_BYTES``, else the text (cut to ``MAX_RESPONSE_BYTES``)."""
    if "json" in response.headers.get("content-type", "") and (
        len(response.content) <= MAX_JSON_BYTES
    ):
        # Strict: a remote's NaN or lone surrogate would make the step's record unstorable
        # (``kit.jsontext``); such a body is kept as text instead.
        try:
            return jsontext.loads(response.content)
        except jsontext.JsonError:
            pass
    return response_text(response)


def body_cut(response: httpx.Response, body: Any) -> dict[str, Any]:
    """``body_truncated`` and ``body_bytes`` for an output whose ``body`` is the text of a
    response longer than ``MAX_RESPONSE_BYTES``; nothing otherwise."""
    if isinstance(body, str) and len(response.content) > MAX_RESPONSE_BYTES:
        return {"body_truncated": True, "body_bytes": len(response.content)}
    return {}


def error_text(response: httpx.Response) -> str:
    """The remote body as text for ``ConnectorError.remote_error``: stripped, cut short."""
    text = response_text(response).strip()
    if len(text) > MAX_ERROR_CHARS:
        return text[:MAX_ERROR_CHARS] + "..."
    return text


def merge_query(url: str, params: Mapping[str, Any] | None) -> str:
    """``url`` with ``params`` added to its query; httpx's ``params=`` would replace it."""
    if not params:
        return url
    return str(httpx.URL(url).copy_merge_params(dict(params)))


def secret_value(ctx: StepContext, key: str) -> str | None:
    """One string entry of the step's credential; ``None`` when the step has none or lacks it."""
    if ctx.secret is None:
        return None
    value = ctx.secret.get(key)
    return str(value) if value not in (None, "") else None


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def is_retryable_status(status_code: int) -> bool:
    """408 (request timeout), 429 (rate limited) and 5xx may pass; other 4xx will not."""
    return status_code in (408, 429) or status_code >= 500


def destination(url: httpx.URL) -> str:
    """The circuit breaker's key for a URL: ``host``, or ``host:port`` for another port."""
    return f"{url.host}:{url.port}" if url.port is not None else url.host
