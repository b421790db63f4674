"""Discord messages through an execute-webhook URL (the URL is the secret)."""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import ConfigDict, Field, model_validator

from ipaas.credentials.models import CredentialType
from ipaas.engine.connectors.base import (
    Connector,
    ConnectorError,
    Params,
    RetryPolicy,
    StepContext,
    error_text,
    is_retryable_status,
    merge_query,
    response_body,
    retry_after,
    secret_value,
)

#: Discord's limits; past them it answers ``50035 Invalid Form Body``.
MAX_CONTENT_CHARS = 2000
MAX_EMBEDS = 10
MAX_USERNAME_CHARS = 80


class DiscordMessageParams(Params):
    # ``{{ trigger.body.id }}`` renders to the native value; a number is fine as text.
    model_config = ConfigDict(coerce_numbers_to_str=True)

    content: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS)
    embeds: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_EMBEDS)
    username: str | None = Field(default=None, min_length=1, max_length=MAX_USERNAME_CHARS)
    avatar_url: str | None = None
    tts: bool | None = None
    allowed_mentions: dict[str, Any] | None = None
    #: Post into this thread of the webhook's forum or text channel.
    thread_id: str | None = None
    #: Ask Discord to answer with the created message (``200``) instead of ``204``.
    wait: bool = False

    @model_validator(mode="after")
    def _has_content(self) -> DiscordMessageParams:
        if not self.content and not self.embeds:
            msg = "give content or embeds"
            raise ValueError(msg)
        return self


def _remote_error(response: httpx.Response) -> tuple[str | None, float | None]:
    """Discord's error message (with its field errors) and its JSON ``retry_after``."""
    body = response_body(response)
    if not isinstance(body, dict) or "message" not in body:
        return error_text(response) or None, None
    message = str(body["message"])
    if body.get("errors"):
        message += " " + json.dumps(body["errors"], separators=(",", ":"))
    seconds = body.get("retry_after")
    return message, float(seconds) if isinstance(seconds, int | float) else None


class DiscordMessage(Connector):
    type = "discord_message"
    Params = DiscordMessageParams
    credential_type = CredentialType.discord
    # Discord's webhook rate limits are tight (about 5 per 2 s) and come with Retry-After.
    retry = RetryPolicy(max_attempts=5, initial_delay_s=1.0, max_delay_s=60.0)

    def build(self, ctx: StepContext, params: DiscordMessageParams) -> httpx.Request:
        webhook_url = secret_value(ctx, "webhook_url")
        if webhook_url is None:
            msg = "the Discord credential has no webhook_url"
            raise ConnectorError(msg, retryable=False)
        payload = params.model_dump(exclude_none=True, exclude={"thread_id", "wait"})
        query: dict[str, str] = {}
        if params.wait:
            query["wait"] = "true"
        if params.thread_id:
            query["thread_id"] = params.thread_id
        return ctx.http.build_request("POST", merge_query(webhook_url, query), json=payload)

    def parse(self, response: httpx.Response) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            body = response_body(response) if response.content else None
            return {"status_code": status, "message": body}
        remote, seconds = _remote_error(response)
        raise ConnectorError(
            f"Discord webhook answered HTTP {status}",
            retryable=is_retryable_status(status),
            status_code=status,
            remote_error=remote,
            # The JSON value has sub-second precision; the header is rounded up.
            retry_after_s=seconds if seconds is not None else retry_after(response),
        )
