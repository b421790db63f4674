"""Testing a credential against its service, without sending a message or changing data:
a wrong or revoked secret shows when it is saved rather than at the first execution.

- ``slack``, ``bot_token``: ``auth.test`` (Slack's own check of a token).
- ``slack``, ``webhook_url``: a POST of ``{}``. Slack posts nothing without text and
  answers ``400 no_text`` (or ``invalid_payload``) from a webhook it knows; an unknown,
  revoked or archived one answers ``404 no_service``, ``403 invalid_token`` or ``410
  channel_is_archived`` before it looks at the message.
- ``discord``: ``GET`` of the webhook URL (Discord's "Get Webhook with Token"): the
  webhook's name and channel, or ``Unknown Webhook``.
- ``openweather``: the current weather at 0,0 (one call of the key's quota).
- ``http`` with ``oauth2``: a token, asked for (client credentials) or renewed as steps do
  (a connected account: the stored one while it is fresh).
- Any other (``http`` without ``oauth2``: a call is tested by a dry run of its step;
  ``webhook_secret``, which only verifies) has nothing to test: 409.

Every call goes through the steps' shared HTTP client (the egress guard, a timeout), and
what the service answered is shown with the credential's secrets masked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from ipaas.credentials import service as credential_service
from ipaas.credentials.models import CredentialType
from ipaas.credentials.schemas import CredentialTestRead
from ipaas.engine.connectors.base import (
    ConnectorError,
    StepContext,
    error_text,
    response_body,
    send,
)
from ipaas.engine.connectors.oauth2 import Grant, request_token
from ipaas.engine.connectors.openweather import OpenWeather, OpenWeatherParams
from ipaas.errors import Conflict
from ipaas.kit.secrets import Redactor, secret_strings

if TYPE_CHECKING:
    from ipaas.runtime import Runtime

#: A test's time to answer (a step's default is longer: a test is someone waiting).
TEST_TIMEOUT_S = 10.0
#: What Slack answers a webhook it knows when the message has no text.
_SLACK_NO_MESSAGE = frozenset({"no_text", "invalid_payload", "missing_text_or_fallback"})


class NothingToTest(Conflict):
    code = "nothing_to_test"


Check = Callable[[StepContext, dict[str, Any]], Awaitable[tuple[bool, str]]]


async def check_credential(
    runtime: Runtime, *, tenant_id: str, credential_id: str
) -> CredentialTestRead:
    """Test the credential (see the module docstring): whether it works, and what the
    service said."""
    credential = await credential_service.get(
        runtime.store, tenant_id=tenant_id, credential_id=credential_id
    )
    secret = credential_service.readable_secret(runtime.cipher, credential)
    check = _check_for(credential.type, secret)
    ctx = StepContext(
        http=runtime.http,
        secret=secret,
        endpoints=runtime.endpoints,
        tenant_id=tenant_id,
        credential_id=credential_id,
        timeout_s=TEST_TIMEOUT_S,
        tokens=runtime.tokens,
    )
    redactor = Redactor(secret_strings(secret))
    try:
        ok, said = await check(ctx, secret)
    except ConnectorError as exc:
        remote = f": {exc.remote_error}" if exc.remote_error else ""
        ok, said = False, f"{exc.message}{remote}"
    return CredentialTestRead(ok=ok, message=redactor.text(said))


def _check_for(kind: CredentialType, secret: Mapping[str, Any]) -> Check:
    if kind is CredentialType.slack:
        return _slack_token if secret.get("bot_token") else _slack_webhook
    if kind is CredentialType.discord:
        return _discord
    if kind is CredentialType.openweather:
        return _openweather
    if kind is CredentialType.http and secret.get("oauth2"):
        return _oauth2
    if kind is CredentialType.http:
        msg = "An http credential without oauth2 is tested by a call: dry-run a step using it"
        raise NothingToTest(msg)
    raise NothingToTest(f"A {kind.value} credential calls nothing that can be tested")


def _answered(service: str, response: httpx.Response) -> str:
    """What the service said: its JSON error's ``message`` (Discord, OpenWeather) or
    ``error``, else its body."""
    body = response_body(response)
    said = body.get("message") or body.get("error") if isinstance(body, dict) else None
    text = said if isinstance(said, str) else error_text(response)
    return f"{service} answered HTTP {response.status_code}" + (f": {text}" if text else "")


async def _slack_token(ctx: StepContext, secret: dict[str, Any]) -> tuple[bool, str]:
    url = f"{ctx.endpoints.slack_api_url.rstrip('/')}/auth.test"
    headers = {"authorization": f"Bearer {secret['bot_token']}"}
    response = await send(ctx, ctx.http.build_request("POST", url, headers=headers))
    body = response_body(response)
    if response.status_code != 200 or not isinstance(body, dict):
        return False, _answered("Slack auth.test", response)
    if not body.get("ok"):
        return False, f"Slack auth.test: {body.get('error') or 'not ok'}"
    return True, f"Slack knows the token: team {body.get('team')}, user {body.get('user')}"


async def _slack_webhook(ctx: StepContext, secret: dict[str, Any]) -> tuple[bool, str]:
    request = ctx.http.build_request(
        "POST",
        str(secret["webhook_url"]),
        content=b"{}",
        headers={"content-type": "application/json; charset=utf-8"},
    )
    response = await send(ctx, request)
    said = response.text.strip()
    if response.status_code == 400 and said in _SLACK_NO_MESSAGE:
        return True, f"Slack knows the webhook (it refused an empty message: {said}; none sent)"
    return False, _answered("Slack", response)


async def _discord(ctx: StepContext, secret: dict[str, Any]) -> tuple[bool, str]:
    url = str(secret["webhook_url"]).split("?", 1)[0]
    response = await send(ctx, ctx.http.build_request("GET", url))
    body = response_body(response)
    if response.status_code != 200 or not isinstance(body, dict):
        return False, _answered("Discord", response)
    return True, (
        f"Discord knows the webhook: {body.get('name')!r} in channel {body.get('channel_id')}"
    )


async def _openweather(ctx: StepContext, secret: dict[str, Any]) -> tuple[bool, str]:
    # The connector's own request (its URL, its key), for the weather at 0,0.
    params = OpenWeatherParams.model_validate({"lat": 0, "lon": 0})
    response = await send(ctx, OpenWeather().build(ctx, params))
    if response.status_code != 200:
        return False, _answered("OpenWeather", response)
    return True, "OpenWeather took the API key"


async def _oauth2(ctx: StepContext, secret: dict[str, Any]) -> tuple[bool, str]:
    grant = Grant.of(secret, (ctx.tenant_id, ctx.credential_id))
    assert grant is not None
    if grant.credential is None:
        _, lifetime = await request_token(grant, ctx)
        return True, f"The token endpoint gave a token for {lifetime:.0f} s"
    await ctx.tokens.token(grant, ctx)
    return True, "The account is connected: a token was got or is still fresh"
