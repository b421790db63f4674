"""OAuth 2.0's client credentials grant (RFC 6749, 4.4) for ``http`` credentials.

A credential's ``oauth2`` holds a token endpoint, a client id and secret, and optionally a
scope and an audience. Before a step's call, ``TokenCache.token`` gives an access token:
the one this process holds, until shortly before it expires, else a new one asked of the
token endpoint, one request at a time per grant however many steps want it at once (a
burst of executions makes one token request, not one each). The token goes out as
``Authorization: Bearer``; it is never stored, and is scrubbed from what the step records.

A call answered 401 with a token from the cache (the server may have revoked it, or its
clock runs ahead of ours) forgets it and is made once more with a new one
(``HttpRequest.run``).

The token request goes through the steps' shared HTTP client: the egress policy, the step's
timeout and cancellation apply to it as to the call itself. Its failures fail the step as
a call's would: a timeout, a connection error, 408, 429 or 5xx can pass (retried by the
step's policy); another 4xx (``invalid_client``, ``invalid_scope``...) will not, and the
endpoint's own error text is kept.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from ipaas.engine.connectors.base import (
    ConnectorError,
    StepContext,
    error_text,
    is_retryable_status,
    response_body,
    retry_after,
    send,
)
from ipaas.kit.http import check_header_token

#: A token's lifetime when the endpoint does not say (``expires_in`` is only RECOMMENDED).
DEFAULT_LIFETIME_S = 300.0
#: A token is renewed this long before it expires (half its lifetime, if that is shorter),
#: so a call does not set out with a token that expires on the way.
RENEW_BEFORE_S = 60.0
#: Grants whose tokens one process keeps; the oldest is dropped beyond it.
MAX_GRANTS = 1024
#: The step's error code for a token the endpoint did not give.
TOKEN_ERROR = "oauth2_token"  # noqa: S105 - an error code, not a password


@dataclass(frozen=True, slots=True)
class Grant:
    """One client's credentials at one token endpoint: the cache's key. A credential whose
    secret changes is another grant, so its next call asks for a new token at once."""

    token_url: str
    client_id: str
    client_secret: str
    scope: str | None = None
    audience: str | None = None
    client_auth: str = "basic"

    @classmethod
    def of(cls, secret: Mapping[str, Any] | None) -> Grant | None:
        """The grant of an ``http`` credential's secret, or ``None`` when it has none."""
        oauth2 = (secret or {}).get("oauth2")
        if not isinstance(oauth2, Mapping):
            return None
        return cls(
            token_url=str(oauth2["token_url"]),
            client_id=str(oauth2["client_id"]),
            client_secret=str(oauth2["client_secret"]),
            scope=oauth2.get("scope"),
            audience=oauth2.get("audience"),
            client_auth=oauth2.get("client_auth", "basic"),
        )

    def __repr__(self) -> str:  # the secret never reaches a log line or a traceback
        return f"Grant(token_url={self.token_url!r}, client_id={self.client_id!r})"


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    #: ``clock()`` after which the token is renewed before use.
    renew_at: float


class TokenCache:
    """The access tokens of this process's grants (see the module docstring)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[Grant, _Token] = {}
        self._asking: dict[Grant, asyncio.Task[_Token]] = {}

    async def token(self, grant: Grant, ctx: StepContext) -> tuple[str, bool]:
        """An access token for ``grant`` and whether it was asked for just now (``False``:
        from the cache). ``ConnectorError`` when the endpoint gives none."""
        held = self._tokens.get(grant)
        if held is not None and self._clock() < held.renew_at:
            return held.value, False
        task = self._asking.get(grant)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._ask(grant, ctx))
            self._asking[grant] = task
            task.add_done_callback(lambda done: self._asked(grant, done))
        # Shielded: a step cancelled while waiting does not cancel the others' request.
        return (await asyncio.shield(task)).value, True

    def _asked(self, grant: Grant, task: asyncio.Task[_Token]) -> None:
        self._asking.pop(grant, None)
        if not task.cancelled():
            task.exception()  # retrieved: every caller may have been cancelled meanwhile

    def forget(self, grant: Grant, value: str) -> None:
        """Drop ``value`` (refused by the API) unless a newer token replaced it already."""
        held = self._tokens.get(grant)
        if held is not None and held.value == value:
            del self._tokens[grant]

    async def _ask(self, grant: Grant, ctx: StepContext) -> _Token:
        asked_at = self._clock()
        value, lifetime = await request_token(grant, ctx)
        token = _Token(value, asked_at + lifetime - min(RENEW_BEFORE_S, lifetime / 2))
        self._tokens.pop(grant, None)
        self._tokens[grant] = token
        while len(self._tokens) > MAX_GRANTS:
            del self._tokens[next(iter(self._tokens))]
        return token


async def request_token(grant: Grant, ctx: StepContext) -> tuple[str, float]:
    """Ask the token endpoint for an access token: the token and its lifetime in seconds."""
    form = {"grant_type": "client_credentials"}
    if grant.scope is not None:
        form["scope"] = grant.scope
    if grant.audience is not None:
        form["audience"] = grant.audience
    headers = {"accept": "application/json"}
    if grant.client_auth == "body":
        form.update(client_id=grant.client_id, client_secret=grant.client_secret)
    else:
        # RFC 6749, 2.3.1: each form-urlencoded before they are joined.
        pair = f"{quote_plus(grant.client_id)}:{quote_plus(grant.client_secret)}"
        headers["authorization"] = f"Basic {base64.b64encode(pair.encode()).decode()}"
    request = ctx.http.build_request("POST", grant.token_url, headers=headers, data=form)
    response = await send(ctx, request)
    status = response.status_code
    if not 200 <= status < 300:
        raise ConnectorError(
            f"the OAuth 2.0 token endpoint answered HTTP {status}",
            retryable=is_retryable_status(status),
            status_code=status,
            remote_error=error_text(response) or None,
            retry_after_s=retry_after(response),
            code=TOKEN_ERROR,
        )
    body = response_body(response)
    value = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        msg = "the OAuth 2.0 token endpoint's answer holds no access_token"
        raise ConnectorError(msg, retryable=False, status_code=status, code=TOKEN_ERROR)
    try:
        check_header_token(value)
    except ValueError as exc:
        # It goes in a header: a line break would start another one.
        msg = f"the OAuth 2.0 token endpoint gave an access_token that {exc}"
        raise ConnectorError(msg, retryable=False, status_code=status, code=TOKEN_ERROR) from None
    kind = body.get("token_type", "Bearer")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        msg = f"the OAuth 2.0 token endpoint gave a token of type {kind!r}, not Bearer"
        raise ConnectorError(msg, retryable=False, status_code=status, code=TOKEN_ERROR)
    return value, _lifetime(body.get("expires_in"))


def _lifetime(expires_in: Any) -> float:
    """``expires_in`` in seconds (a number, or a numeric string as some servers send it);
    ``DEFAULT_LIFETIME_S`` when it is missing or makes no sense."""
    if isinstance(expires_in, bool):
        return DEFAULT_LIFETIME_S
    try:
        seconds = float(expires_in)
    except (TypeError, ValueError):
        return DEFAULT_LIFETIME_S
    return seconds if 0 < seconds < float("inf") else DEFAULT_LIFETIME_S
