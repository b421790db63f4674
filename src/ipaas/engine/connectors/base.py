"""What a connector is: a ``Params`` model, the credential type it needs, and how it turns
rendered params into one outbound HTTP request and the response into a step output."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict

from ipaas.credentials.models import CredentialType
from ipaas.kit.egress import EgressRefused
from ipaas.kit.http import MAX_RESPONSE_BYTES, HttpClient, describe_error

#: Characters of a remote error body kept in ``ConnectorError.remote_error``: enough for any
#: API's error message, small enough for an execution record and a log line.
MAX_ERROR_CHARS = 2048


class ConnectorError(Exception):
    """A step failed. ``retryable`` says whether trying again later could succeed."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status_code: int | None = None,
        remote_error: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status_code = status_code
        self.remote_error = remote_error
        self.retry_after_s = retry_after_s


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
    timeout_s: float | None = None


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

    def build(self, ctx: StepContext, params: Any) -> httpx.Request:
        """The exact request this step sends (shown as-is, masked, by a simulated dry run)."""
        raise NotImplementedError

    def parse(self, response: httpx.Response) -> Any:
        """The step output for a response, or ``ConnectorError`` for a failure."""
        raise NotImplementedError

    async def run(self, ctx: StepContext, params: Any) -> Any:
        request = self.build(ctx, params)
        try:
            response = await ctx.http.send(request, timeout_s=ctx.timeout_s)
        except EgressRefused as exc:
            # The same destination is refused on every try: the step's config must change.
            msg = f"{exc.code}: {exc}; IPAAS_EGRESS_ALLOW lists exceptions"
            raise ConnectorError(msg, retryable=False) from exc
        except httpx.TimeoutException as exc:
            msg = f"request timed out: {describe_error(exc)}"
            raise ConnectorError(msg, retryable=True) from exc
        except httpx.HTTPError as exc:
            raise ConnectorError(describe_error(exc), retryable=True) from exc
        return self.parse(response)


def response_text(response: httpx.Response) -> str:
    """The remote body as text, cut to ``MAX_RESPONSE_BYTES``."""
    return response.content[:MAX_RESPONSE_BYTES].decode(response.encoding or "utf-8", "replace")


def response_body(response: httpx.Response) -> Any:
    """The parsed JSON body when the remote says it is JSON, else the text."""
    if "json" in response.headers.get("content-type", ""):
        try:
            return response.json()
        except ValueError:
            pass
    return response_text(response)


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
    return status_code == 429 or status_code >= 500
