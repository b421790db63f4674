from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter  # type: ignore[import-untyped]
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from ipaas.kit.inputs import Input
from ipaas.kit.numbers import json_int
from ipaas.kit.preconditions import entity_tag


class TriggerType(StrEnum):
    webhook = "webhook"
    manual = "manual"
    schedule = "schedule"


STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
#: A ``for_each`` step's id leaves room for ``[99]`` in the 64 characters a record's has.
MAX_LOOP_STEP_ID = 59
#: The most calls of one ``for_each`` step in flight at once (``Step.concurrency``): one
#: execution holds one worker slot, and this bounds what it may ask of a remote meanwhile.
MAX_LOOP_CONCURRENCY = 10
#: The step types of ``engine.connectors.REGISTRY``, for the API schema (the registry imports
#: this module; a test keeps the two equal). Validation itself asks the registry.
STEP_TYPES = (
    "delay",
    "discord_message",
    "filter",
    "http_request",
    "openweather",
    "run_workflow",
    "slack_message",
    "transform",
)


class Schedule(BaseModel):
    """The schedule of a ``schedule`` trigger: a standard 5-field cron expression (or an
    ``@hourly``-style alias) read in an IANA time zone."""

    #: Found by hand: a list of 20,000 minutes was a valid cron expression (75 ms to check,
    #: and as much again at each of the scheduler's computations); a time zone of 5,000
    #: characters was a 500 (the name is looked up as a file). Every minute and hour listed
    #: one by one takes 235 characters; IANA's longest zone name, 32.
    cron: str = Field(max_length=1000)
    timezone: str = Field(default="UTC", max_length=64)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        value = value.strip()
        # Five fields, as in crontab: croniter would also take a sixth (seconds) field.
        if not croniter.is_valid(value) or (not value.startswith("@") and len(value.split()) != 5):
            msg = "not a valid cron expression (5 fields: minute hour day month weekday)"
            raise ValueError(msg)
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            msg = "not a known IANA time zone (such as Europe/Berlin or UTC)"
            raise ValueError(msg) from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


#: Where ``SavedSchedule`` starts looking for a tick: a leap year, so ``0 0 29 2 *`` is found
#: at once. Whether a date exists does not depend on the time zone.
_FIRST_TICK_FROM = datetime(2000, 1, 1)


class SavedSchedule(Schedule):
    """A schedule as a workflow is saved with it (``check_trigger``): it must also fire.
    ``0 0 30 2 *`` (February 30) is valid cron that never does, and croniter fails on it
    with ``CroniterBadDateError`` when asked for a tick. Checked on save only: the search
    costs ~0.3 ms (2-3 ms for a date that does not exist), and the scheduler reads every
    stored schedule again. Its keys are the trigger's own, so other keys are refused there
    (``"tz"`` for ``timezone`` ran the schedule in UTC)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("cron")
    @classmethod
    def _fires(cls, value: str) -> str:
        try:
            croniter(value, _FIRST_TICK_FROM).get_next(datetime)
        except CroniterError:
            msg = (
                "never fires: no month in it has that day "
                "(such as 30 2 for February 30); check the day and month fields"
            )
            raise ValueError(msg) from None
        return value


class WebhookAuthScheme(StrEnum):
    #: ``webhook-id``/``webhook-timestamp``/``webhook-signature`` (standardwebhooks.com).
    standard_webhooks = "standard_webhooks"
    #: One header holding the HMAC-SHA256 of the raw body (GitHub, Shopify, ...).
    hmac_sha256 = "hmac_sha256"
    #: ``Stripe-Signature: t=...,v1=...``: the HMAC-SHA256 of ``{t}.{body}``.
    stripe = "stripe"
    #: ``X-Slack-Signature: v0=...`` with ``X-Slack-Request-Timestamp``: the HMAC-SHA256 of
    #: ``v0:{timestamp}:{body}``; Slack's ``url_verification`` is answered with its challenge.
    slack = "slack"
    #: Zoom's ``x-zm-signature``/``x-zm-request-timestamp``, signed as Slack's are; its
    #: ``endpoint.url_validation`` is answered with the token it asks to be hashed.
    zoom = "zoom"
    #: ``X-Twilio-Signature``: the HMAC-SHA1 of the URL Twilio called followed by the sorted
    #: form fields (or, for a JSON body, of the URL whose ``bodySHA256`` is the body's hash),
    #: keyed with the account's auth token.
    twilio = "twilio"
    #: ``x-square-hmacsha256-signature``: the base64 HMAC-SHA256 of the notification URL
    #: followed by the body, keyed with the subscription's signature key.
    square = "square"
    #: A header holding the secret itself (GitLab's ``X-Gitlab-Token``, the default; any
    #: sender that sends a shared token, ``Authorization: Bearer ...`` with ``prefix``).
    token = "token"  # noqa: S105 - a scheme's name, not a password
    #: Microsoft Graph's change notifications: each one's ``clientState`` is the secret
    #: given when the subscription was created.
    microsoft_graph = "microsoft_graph"
    #: HubSpot's v3: ``X-HubSpot-Signature-v3``, the base64 HMAC-SHA256 of the method, the
    #: URL, the body and ``X-HubSpot-Request-Timestamp``, keyed with the app's client secret.
    hubspot = "hubspot"
    #: ``X-Zendesk-Webhook-Signature``: the base64 HMAC-SHA256 of
    #: ``X-Zendesk-Webhook-Signature-Timestamp`` followed by the body.
    zendesk = "zendesk"


#: An HTTP header name (RFC 9110 token).
HEADER_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$"
#: ``event.id``, ``data.items.0.id``: object keys and list indexes joined by dots.
BODY_PATH_PATTERN = r"^[^.\s]{1,100}(\.[^.\s]{1,100}){0,15}$"
HMAC_DEFAULTS = {"header": "X-Hub-Signature-256", "prefix": "sha256=", "encoding": "hex"}
TOKEN_DEFAULTS = {"header": "X-Gitlab-Token", "prefix": ""}
#: Calendly signs as Stripe does, under ``Calendly-Webhook-Signature``.
STRIPE_DEFAULTS = {"header": "Stripe-Signature"}


class WebhookAuth(BaseModel):
    """How a webhook trigger authenticates its caller. The secret is a ``webhook_secret``
    credential of the tenant (``secret`` and, while rotating, ``previous_secret``)."""

    model_config = ConfigDict(extra="forbid")

    scheme: WebhookAuthScheme
    credential_id: str = Field(min_length=1, max_length=64)
    #: ``hmac_sha256``: the header, the text before the signature, hex or base64;
    #: ``token``: the header and the text before the token; ``stripe``: the header.
    header: str | None = Field(default=None, pattern=HEADER_PATTERN)
    prefix: str | None = Field(default=None, max_length=32)
    encoding: Literal["hex", "base64"] | None = None

    @model_validator(mode="after")
    def _scheme_fields(self) -> WebhookAuth:
        defaults = _SCHEME_FIELDS.get(self.scheme, {})
        given = [name for name in HMAC_DEFAULTS if getattr(self, name) is not None]
        wrong = [name for name in given if name not in defaults]
        if wrong:
            schemes = [s.value for s, fields in _SCHEME_FIELDS.items() if wrong[0] in fields]
            named = (
                schemes[0] if len(schemes) == 1 else f"{', '.join(schemes[:-1])} and {schemes[-1]}"
            )
            msg = f"{', '.join(wrong)}: only for the {named} scheme"
            msg += "s" if len(schemes) > 1 else ""
            raise ValueError(msg)
        for name, default in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, default)
        return self


#: The fields a scheme takes beside ``credential_id``, with their defaults.
_SCHEME_FIELDS = {
    WebhookAuthScheme.hmac_sha256: HMAC_DEFAULTS,
    WebhookAuthScheme.token: TOKEN_DEFAULTS,
    WebhookAuthScheme.stripe: STRIPE_DEFAULTS,
}


class IdempotencySource(BaseModel):
    """Where a webhook's idempotency key is, besides the ``Idempotency-Key`` and
    ``webhook-id`` headers: a provider's event id in the body, or another header."""

    model_config = ConfigDict(extra="forbid")

    body_path: str | None = Field(default=None, pattern=BODY_PATH_PATTERN)
    header: str | None = Field(default=None, pattern=HEADER_PATTERN)

    @model_validator(mode="after")
    def _one_source(self) -> IdempotencySource:
        if (self.body_path is None) == (self.header is None):
            msg = "give exactly one of body_path or header"
            raise ValueError(msg)
        return self


#: Statuses of a ``response.redirect`` (RFC 9110, 15.4): 303 sends a browser's POST on as a
#: GET, which a form's thank-you page wants; 307 and 308 repeat the POST.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: The longest ``response.body``: an answer, not a page to serve.
MAX_RESPONSE_BODY = 64 * 1024
#: The longest a webhook's answer may wait for its execution (Slack gives a slash command
#: 3 s; a sender's own timeout is usually 10-30 s).
MAX_RESPONSE_WAIT_S = 30.0


class WebhookResponse(BaseModel):
    """What an accepted webhook is answered instead of ``202`` and its JSON (a repeat with
    the same idempotency key too): a text of the user's (Slack shows a slash command's to
    the user who typed it), or a redirect (an HTML form posted straight to the URL sends
    the browser to a thank-you page). Without ``wait_s``, static: it goes out before any
    step runs. The execution's id is in the ``X-Execution-Id`` header.

    With ``wait_s`` the answer waits for the execution, up to that long, and ``body`` is a
    template over its steps (``steps.<id>.output``) and ``execution``: a succeeded one is
    answered so; a failed one with 502 ``execution_failed``; one still running then with
    the usual 202 and its id (``webhooks/results.py``)."""

    model_config = ConfigDict(extra="forbid")

    status: int | None = Field(default=None, ge=200, le=308)
    wait_s: float | None = Field(default=None, gt=0, le=MAX_RESPONSE_WAIT_S)
    body: str | None = Field(default=None, max_length=MAX_RESPONSE_BODY)
    content_type: str | None = Field(default=None, min_length=1, max_length=200)
    redirect: str | None = Field(default=None, min_length=1, max_length=2048)

    @field_validator("content_type")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and (not value.isascii() or not value.isprintable()):
            msg = "content_type must be one line of ASCII text, e.g. text/html; charset=utf-8"
            raise ValueError(msg)
        return value

    @field_validator("redirect")
    @classmethod
    def _web_address(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.isascii() or not value.isprintable() or " " in value:
            msg = "redirect must be a URL without spaces or line breaks (percent-encode them)"
            raise ValueError(msg)
        scheme, _, rest = value.partition("://")
        if scheme.lower() not in ("http", "https") or not rest.split("/", 1)[0]:
            msg = "redirect must be an absolute http:// or https:// URL"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _coherent(self) -> WebhookResponse:
        if self.status is None and self.body is None and self.redirect is None:
            msg = "give a status, a body or a redirect"
            raise ValueError(msg)
        if self.redirect is not None and self.wait_s is not None:
            msg = "a redirect does not wait: give wait_s with a body"
            raise ValueError(msg)
        if self.redirect is not None:
            if self.body is not None:
                msg = "a redirect has no body: give one or the other"
                raise ValueError(msg)
            if self.status is not None and self.status not in REDIRECT_STATUSES:
                msg = f"a redirect's status is one of {sorted(REDIRECT_STATUSES)}"
                raise ValueError(msg)
        elif self.status is not None and not 200 <= self.status <= 299:
            msg = "status is 2xx (or, with a redirect, 301, 302, 303, 307 or 308)"
            raise ValueError(msg)
        if self.status in (204, 205) and self.body:
            msg = f"a {self.status} answer has no body"
            raise ValueError(msg)
        if self.content_type is not None and self.body is None:
            msg = "content_type is the body's: give a body"
            raise ValueError(msg)
        return self

    @property
    def status_code(self) -> int:
        if self.status is not None:
            return self.status
        return 303 if self.redirect is not None else 200


class WebhookOptions(BaseModel):
    """The options of a ``webhook`` trigger (other keys of the trigger are ignored here)."""

    auth: WebhookAuth | None = None
    idempotency: IdempotencySource | None = None
    response: WebhookResponse | None = None


class SavedWebhookOptions(WebhookOptions):
    """A webhook trigger's options as a workflow is saved with them (``check_trigger``):
    other keys are refused (a misspelled ``auth`` took unsigned webhooks). Stored
    triggers are read with ``WebhookOptions``, which ignores them."""

    model_config = ConfigDict(extra="forbid")


class _NoOptions(Input):
    """A ``manual`` trigger's options: none."""


class Trigger(BaseModel):
    """What starts a workflow. Other keys are kept as given (a webhook's ``auth`` and
    ``idempotency``, a schedule's ``cron`` and ``timezone``); the API checks them with
    ``check_trigger``."""

    model_config = ConfigDict(extra="allow")

    type: TriggerType = TriggerType.webhook

    @property
    def schedule(self) -> Schedule:
        """The schedule of a ``schedule`` trigger; raises ``ValidationError`` if invalid."""
        return Schedule.model_validate(self.model_extra or {})

    @property
    def webhook(self) -> WebhookOptions:
        """The options of a ``webhook`` trigger; raises ``ValidationError`` if invalid."""
        return WebhookOptions.model_validate(self.model_extra or {})


#: The keys a trigger of each type has beside ``type`` (``check_trigger`` refuses others).
TRIGGER_KEYS: dict[TriggerType, frozenset[str]] = {
    TriggerType.webhook: frozenset(WebhookOptions.model_fields),
    TriggerType.schedule: frozenset(Schedule.model_fields),
    TriggerType.manual: frozenset(),
}


def check_trigger(trigger: Trigger) -> Trigger:
    """API-side validation: a ``schedule`` trigger needs a valid ``cron`` and ``timezone``
    (errors are located at ``trigger.cron`` / ``trigger.timezone``); the default time zone
    is written into the trigger so responses show it; a key its type does not have is
    refused. Stored triggers are not re-checked on load (a zone that disappears from
    tzdata must not break listing)."""
    extra = trigger.model_extra if trigger.model_extra is not None else {}
    # A ValidationError here carries the field's location; a key the trigger's type does
    # not have is ``extra_forbidden`` at ``trigger.<key>``.
    if trigger.type is TriggerType.schedule:
        schedule = SavedSchedule.model_validate(extra)
        extra.update(cron=schedule.cron, timezone=schedule.timezone)
    elif trigger.type is TriggerType.webhook:
        if "secret" in extra:
            # A secret in the workflow JSON would be stored and shown in plain text.
            msg = "secret: store it as a webhook_secret credential and set auth.credential_id"
            raise ValueError(msg)
        options = SavedWebhookOptions.model_validate(extra)
        for name in ("auth", "idempotency", "response"):
            value = getattr(options, name)
            if value is not None:
                extra[name] = value.model_dump(exclude_none=True)
    else:
        _NoOptions.model_validate(extra)
    return trigger


class RetryConfig(BaseModel):
    """A step's retry settings; a field left out keeps the connector's default
    (``Connector.retry``). ``max_attempts`` counts the first call: 1 means no retry."""

    model_config = ConfigDict(extra="forbid")

    # Numbers as JSON Schema reads them (here and in ``Step``; ``kit/numbers.py``).
    max_attempts: int | None = Field(default=None, ge=1, le=20)
    #: The backoff before the first retry; it doubles per retry, capped by ``max_delay_s``.
    initial_delay_s: float | None = Field(default=None, ge=0, le=3600, strict=True)
    max_delay_s: float | None = Field(default=None, ge=0, le=86400, strict=True)

    _json_int = field_validator("max_attempts", mode="before")(json_int)

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if (
            self.initial_delay_s is not None
            and self.max_delay_s is not None
            and self.max_delay_s < self.initial_delay_s
        ):
            msg = "max_delay_s must not be less than initial_delay_s"
            raise ValueError(msg)
        return self


class Step(Input):
    """One step of a workflow. Unknown fields are refused (``Input``: ``"timeout"`` for
    ``timeout_s`` was dropped unseen); a stored step was written from this model, so it
    holds only these fields, and a field removed later needs a migration of the rows."""

    id: str = Field(pattern=STEP_ID_PATTERN)
    type: str = Field(json_schema_extra={"enum": list(STEP_TYPES)})
    name: str | None = None
    credential_id: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0, le=3600, strict=True)
    retry: RetryConfig | None = None
    #: Run the step once per item of this list (usually one expression, such as
    #: ``{{ trigger.body.items }}``): its config sees ``item`` and ``index``, each item is
    #: recorded as ``<id>[<index>]``, and later steps see the outputs as a list.
    for_each: str | list[Any] | None = None
    #: A ``for_each`` step's calls in flight at once (unset: 1, one item after another).
    #: Each item is still recorded on its own, and later steps see the outputs in the
    #: items' order.
    concurrency: int | None = Field(default=None, ge=1, le=MAX_LOOP_CONCURRENCY, strict=True)
    #: Run the step only when this holds (usually one expression, such as
    #: ``{{ trigger.body.amount > 100 }}``; read as a filter's condition): otherwise it is
    #: recorded ``skipped`` and the next step runs. Two steps with opposite conditions
    #: make an if/else.
    when: str | StrictBool | None = None


class WorkflowDefinition(BaseModel):
    """What a version of a workflow runs: its trigger and ordered steps."""

    trigger: Trigger
    steps: list[Step]


class WorkflowVersion(WorkflowDefinition):
    """One saved version of a workflow's definition, kept after later edits (executions
    that ran it, the history, a restore)."""

    version: int
    created_at: datetime


#: Workflows a conflict's message names (``credential_in_use``, ``workflow_in_use``); its
#: ``details`` lists them all.
NAMED_IN_MESSAGE = 3


def named(workflows: list[Workflow]) -> str:
    """``'Orders' (wf_1), 'Refunds' (wf_2) and 4 more``, for a conflict's message."""
    text = ", ".join(f"{wf.name!r} ({wf.id})" for wf in workflows[:NAMED_IN_MESSAGE])
    more = len(workflows) - NAMED_IN_MESSAGE
    return f"{text} and {more} more" if more > 0 else text


class Workflow(BaseModel):
    id: str
    tenant_id: str
    name: str
    active: bool
    version: int
    trigger: Trigger
    steps: list[Step]
    created_at: datetime
    updated_at: datetime
    #: The workflow run for each failure of this one (``failed`` or ``timed_out``), with the
    #: failure as its trigger body (``engine/alerts.py``). A setting of the workflow, not of
    #: a version: changing it makes no new version.
    error_workflow_id: str | None = None

    @property
    def definition(self) -> WorkflowDefinition:
        return WorkflowDefinition(trigger=self.trigger, steps=self.steps)

    @property
    def etag(self) -> str:
        """This saved state's entity tag (``ETag``; ``If-Match`` compares with it)."""
        return entity_tag(self.version, self.updated_at)

    @property
    def credential_ids(self) -> set[str]:
        """The credentials this version uses: its steps' and its webhook trigger's auth."""
        used = {step.credential_id for step in self.steps if step.credential_id}
        if self.trigger.type is TriggerType.webhook:
            try:
                auth = self.trigger.webhook.auth
            except ValidationError:  # stored before a check existed: intake refuses it
                auth = None
            if auth is not None:
                used.add(auth.credential_id)
        return used
