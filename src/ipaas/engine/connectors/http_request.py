"""Any HTTP API: method, URL (or a path under the credential's ``base_url``), headers, query,
and a JSON, form or raw body; auth and default headers come from an optional credential."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from functools import partial
from typing import Annotated, Any, Literal

import httpx
from pydantic import (
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ipaas.credentials.models import CredentialType
from ipaas.engine.connectors.base import (
    Connector,
    ConnectorError,
    Params,
    RetryPolicy,
    StepContext,
    body_cut,
    error_text,
    is_retryable_status,
    merge_query,
    response_body,
    retry_after,
    secret_value,
)
from ipaas.engine.connectors.oauth2 import Grant
from ipaas.engine.connectors.signing import message_id, sign
from ipaas.kit.http import ascii_headers, check_header_lines
from ipaas.kit.secrets import MASK, Redactor, basic_token

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_SCALAR_TYPES = (str, int, float, bool)
_SCALAR_SCHEMA = {"type": ["string", "number", "boolean"]}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return "an object" if isinstance(value, dict) else "a list" if isinstance(value, list) else ""


def _scalar(value: Any, *, lists: bool = False) -> Any:
    """``value`` when it can go in a query string or a form: a string, number or boolean (or,
    where ``lists``, a list of them: the name repeated). One error naming what it is:
    pydantic's union named each of the four types it is not, as four errors."""
    if isinstance(value, _SCALAR_TYPES):
        return value
    if lists and isinstance(value, list):
        for item in value:
            if not isinstance(item, _SCALAR_TYPES):
                raise PydanticCustomError(
                    "scalar_type",
                    "a list of strings, numbers or booleans, not one holding {kind}",
                    {"kind": _kind(item)},
                )
        return value
    also = " or a list of them" if lists else ""
    raise PydanticCustomError(
        "scalar_type",
        "a string, number or boolean{also}, not {kind}",
        {"also": also, "kind": _kind(value)},
    )


#: A form field's value.
Scalar = Annotated[
    str | int | float | bool, PlainValidator(_scalar), WithJsonSchema(_SCALAR_SCHEMA)
]
#: A query parameter's value: a list repeats the name (``?tag=a&tag=b``).
QueryValue = Annotated[
    str | int | float | bool | list[str | int | float | bool],
    PlainValidator(partial(_scalar, lists=True)),
    WithJsonSchema({"anyOf": [_SCALAR_SCHEMA, {"type": "array", "items": _SCALAR_SCHEMA}]}),
]
StatusCode = Annotated[int, Field(ge=100, le=599)]

#: Content type of a raw ``body`` given without ``content_type``.
DEFAULT_RAW_CONTENT_TYPE = "text/plain; charset=utf-8"

#: Request extension (ignored by the transport) holding the step's ``expected_status``.
_EXPECTED_STATUS = "ipaas_expected_status"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def check_http_url(url: str) -> httpx.URL:
    """``url`` parsed, or ``ValueError`` unless it is an absolute http(s) URL with a host."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        msg = f"invalid URL: {exc}"
        raise ValueError(msg) from exc
    if not parsed.scheme:
        msg = "url must be absolute (http:// or https://); use path for a path under base_url"
        raise ValueError(msg)
    if parsed.scheme not in ("http", "https"):
        msg = f"url scheme must be http or https, not {parsed.scheme!r}"
        raise ValueError(msg)
    if not parsed.host:
        msg = "url has no host"
        raise ValueError(msg)
    return parsed


class HttpRequestParams(Params):
    # ``{{ trigger.body.id }}`` renders to the native value; a number is fine as text.
    model_config = ConfigDict(coerce_numbers_to_str=True)

    method: Method = "GET"
    #: An absolute http(s) URL; or give ``path``.
    url: str | None = None
    #: Joined to the credential's ``base_url``.
    path: str | None = None
    headers: dict[str, str] | None = None
    query: dict[str, QueryValue] | None = None
    #: At most one body: ``json`` (any JSON value), ``form`` (urlencoded) or raw ``body``.
    json_: Any = Field(default=None, alias="json")
    form: dict[str, Scalar] | None = None
    body: str | None = None
    #: Content type of the raw ``body`` (default ``text/plain; charset=utf-8``).
    content_type: str | None = None
    #: Statuses that count as success; default: any 2xx.
    expected_status: list[StatusCode] | None = Field(default=None, min_length=1)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None:
            check_http_url(value)
        return value

    @field_validator("headers")
    @classmethod
    def _one_line(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_header_lines(value)

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None and _SCHEME.match(value):
            msg = "path is joined to the credential's base_url; give a full URL as url"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> HttpRequestParams:
        if (self.url is None) == (self.path is None):
            msg = "give exactly one of url or path"
            raise ValueError(msg)
        kinds = [
            name
            for name, value in (("json", self.json_), ("form", self.form), ("body", self.body))
            if value is not None
        ]
        if len(kinds) > 1:
            msg = f"give at most one body (json, form or body), not {' and '.join(kinds)}"
            raise ValueError(msg)
        if self.content_type is not None and self.body is None:
            msg = "content_type applies to a raw body; json and form set their own"
            raise ValueError(msg)
        return self


#: Where an OAuth 2.0 credential's token goes in a request that was only built, not sent
#: (a simulated dry run shows it, masked): none is asked for until the call is made.
_TOKEN_NOT_ASKED = "Bearer " + MASK


def _auth_header(secret: dict[str, Any]) -> str | None:
    bearer = secret.get("bearer_token")
    basic = secret.get("basic")
    if bearer and basic:
        msg = "the HTTP credential has both bearer_token and basic; keep one"
        raise ConnectorError(msg, retryable=False)
    if bearer:
        return f"Bearer {bearer}"
    if isinstance(basic, dict):
        return f"Basic {basic_token(basic.get('username'), basic.get('password'))}"
    if secret.get("oauth2"):
        return _TOKEN_NOT_ASKED
    return None


class HttpRequest(Connector):
    type = "http_request"
    Params = HttpRequestParams
    credential_type = CredentialType.http
    credential_optional = True
    # Any method, so possibly not idempotent: few retries by default; steps may ask for more.
    retry = RetryPolicy(max_attempts=3, initial_delay_s=1.0, max_delay_s=60.0)

    def build(self, ctx: StepContext, params: HttpRequestParams) -> httpx.Request:
        secret = ctx.secret or {}
        if params.path is not None:
            base_url = secret_value(ctx, "base_url")
            if base_url is None:
                msg = "path needs a credential with a base_url; or give a full url"
                raise ConnectorError(msg, retryable=False)
            url = f"{base_url.rstrip('/')}/{params.path.lstrip('/')}"
        else:
            url = params.url or ""
        check_http_url(url)

        # Step headers win over the credential's defaults, so one call can override them.
        headers = ascii_headers(secret.get("headers"))
        authorization = _auth_header(secret)
        if authorization is not None:
            headers["authorization"] = authorization
        headers.update(params.headers or {})

        content: bytes | None = None
        if params.body is not None:
            content = params.body.encode()
            if params.content_type is not None:
                headers["content-type"] = params.content_type
            elif "content-type" not in headers:
                headers["content-type"] = DEFAULT_RAW_CONTENT_TYPE
        # The credential's query first: a step's parameter of the same name replaces it.
        url = merge_query(merge_query(url, secret.get("query")), params.query)
        request = ctx.http.build_request(
            params.method,
            url,
            headers=headers,
            json=params.json_,
            data=params.form,
            content=content,
        )
        signing = secret.get("signing")
        if signing:
            sign(
                request,
                signing,
                message_id=message_id(ctx.execution_id, ctx.step_id),
                now=time.time(),
            )
        if params.expected_status:
            # parse() sees only the response; the request carries what counts as success.
            request.extensions[_EXPECTED_STATUS] = tuple(params.expected_status)
        return request

    async def run(self, ctx: StepContext, params: HttpRequestParams) -> Any:
        grant = Grant.of(ctx.secret, (ctx.tenant_id, ctx.credential_id))
        if grant is None:
            return await super().run(ctx, params)
        token, asked_now = await ctx.tokens.token(grant, ctx)
        # The token is no secret of the credential's, which the step's record masks: a
        # remote that echoes the request's headers would show it there.
        redactor = Redactor([token])
        try:
            try:
                return redactor(await super().run(_with_token(ctx, token), params))
            except ConnectorError as exc:
                if exc.status_code != 401 or asked_now:
                    raise
            # Refused with a token from the cache (revoked, or expired by the server's
            # clock): once more with a new one.
            ctx.tokens.forget(grant, token)
            renewed, _ = await ctx.tokens.token(grant, ctx)
            redactor = Redactor([token, renewed])
            return redactor(await super().run(_with_token(ctx, renewed), params))
        except ConnectorError as exc:
            exc.message = redactor.text(exc.message)
            exc.args = (exc.message,)
            if exc.remote_error is not None:
                exc.remote_error = redactor.text(exc.remote_error)
            raise

    def parse(self, response: httpx.Response) -> Any:
        status = response.status_code
        body = response_body(response)
        output = {
            "status_code": status,
            "headers": dict(response.headers.items()),
            "body": body,
            **body_cut(response, body),
        }
        expected = self._expected(response)
        if status in expected if expected else 200 <= status < 300:
            return output
        wanted = ", ".join(map(str, expected)) if expected else "2xx"
        raise ConnectorError(
            f"{response.request.method} answered HTTP {status} (expected {wanted})",
            retryable=is_retryable_status(status),
            status_code=status,
            remote_error=error_text(response) or None,
            retry_after_s=retry_after(response),
        )

    def _expected(self, response: httpx.Response) -> tuple[int, ...] | None:
        expected = response.request.extensions.get(_EXPECTED_STATUS)
        return tuple(expected) if expected else None


def _with_token(ctx: StepContext, token: str) -> StepContext:
    """``ctx`` whose credential carries ``token`` as its bearer token, for this call only."""
    return replace(ctx, secret={**(ctx.secret or {}), "bearer_token": token})
