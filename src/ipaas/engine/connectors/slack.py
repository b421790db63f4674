"""Slack messages through an incoming webhook (the URL is the secret) or, with a bot token,
through ``chat.postMessage``."""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import ConfigDict, Field, field_validator, model_validator
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

from ipaas.credentials.models import CredentialType
from ipaas.engine.connectors.base import (
    Connector,
    ConnectorError,
    Params,
    RetryPolicy,
    StepContext,
    error_text,
    is_retryable_status,
    response_body,
    response_text,
    retry_after,
    secret_value,
)

#: Slack answers ``invalid_blocks`` for a message with more blocks than this.
MAX_BLOCKS = 50
#: Slack answers ``msg_too_long`` past this many characters of ``text``.
MAX_TEXT_CHARS = 40_000
#: ``chat.postMessage`` errors caused by Slack's own trouble, not by the request: a later try
#: may succeed. Every other ``ok: false`` needs the user to change something.
TRANSIENT_API_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


def _block_error(index: int, raw: dict[str, Any], reason: str) -> ValueError:
    name = f"blocks[{index}]"
    if isinstance(raw.get("type"), str):
        name += f" ({raw['type']}"
        name += f" {raw['block_id']!r})" if isinstance(raw.get("block_id"), str) else ")"
    return ValueError(f"{name}: {reason}")


class SlackMessageParams(Params):
    # ``{{ trigger.body.id }}`` renders to the native value; a number is fine as text.
    model_config = ConfigDict(coerce_numbers_to_str=True)

    text: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    blocks: list[dict[str, Any]] | None = None
    attachments: list[dict[str, Any]] | None = None
    #: Required with a bot token; incoming webhooks post to the channel they were made for.
    channel: str | None = None
    username: str | None = None
    icon_emoji: str | None = None
    icon_url: str | None = None
    #: Reply in the thread of this message ``ts``.
    thread_ts: str | None = None
    unfurl_links: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _seed_alias(cls, data: Any) -> Any:
        # The seed's single-action configs call the text ``slack_message``.
        if not isinstance(data, dict) or "slack_message" not in data:
            return data
        data = dict(data)
        alias = data.pop("slack_message")
        if data.get("text") is None:
            data["text"] = alias
        elif alias is not None and alias != data["text"]:
            msg = "give text or its alias slack_message, not both"
            raise ValueError(msg)
        return data

    @field_validator("blocks")
    @classmethod
    def _valid_blocks(cls, blocks: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if blocks is None:
            return None
        if len(blocks) > MAX_BLOCKS:
            msg = f"a message has at most {MAX_BLOCKS} blocks, not {len(blocks)}"
            raise ValueError(msg)
        for index, raw in enumerate(blocks):
            try:
                block = Block.parse(raw)
                if block is None:
                    reason = "unknown block type" if "type" in raw else "missing block type"
                    raise _block_error(index, raw, reason)
                block.validate_json()
            except (SlackObjectFormationError, TypeError, KeyError, AttributeError) as exc:
                raise _block_error(index, raw, str(exc)) from exc
        return blocks

    @model_validator(mode="after")
    def _has_content(self) -> SlackMessageParams:
        if not self.text and not self.blocks and not self.attachments:
            msg = "give text (or slack_message), blocks or attachments"
            raise ValueError(msg)
        return self


def _json_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _api_error(response: httpx.Response) -> str:
    body = response_body(response)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return error_text(response)


class SlackMessage(Connector):
    type = "slack_message"
    Params = SlackMessageParams
    credential_type = CredentialType.slack
    # Slack rate-limits per channel and says when to come back (Retry-After): worth waiting.
    retry = RetryPolicy(max_attempts=5, initial_delay_s=1.0, max_delay_s=60.0)

    def build(self, ctx: StepContext, params: SlackMessageParams) -> httpx.Request:
        payload = params.model_dump(exclude_none=True)
        # Slack warns ``missing_charset`` about a JSON body without one.
        headers = {"content-type": "application/json; charset=utf-8"}
        bot_token = secret_value(ctx, "bot_token")
        if bot_token is not None:
            if not params.channel:
                msg = "posting with a Slack bot token needs a channel"
                raise ConnectorError(msg, retryable=False)
            url = f"{ctx.endpoints.slack_api_url.rstrip('/')}/chat.postMessage"
            headers["authorization"] = f"Bearer {bot_token}"
            return ctx.http.build_request("POST", url, content=_json_body(payload), headers=headers)
        webhook_url = secret_value(ctx, "webhook_url")
        if webhook_url is None:
            msg = "the Slack credential has neither a webhook_url nor a bot_token"
            raise ConnectorError(msg, retryable=False)
        return ctx.http.build_request(
            "POST", webhook_url, content=_json_body(payload), headers=headers
        )

    def parse(self, response: httpx.Response) -> Any:
        if response.request.url.path.endswith("/chat.postMessage"):
            return self._parse_api(response)
        status = response.status_code
        if 200 <= status < 300:
            return {"status_code": status, "response": response_text(response)}
        raise ConnectorError(
            f"Slack webhook answered HTTP {status}",
            retryable=is_retryable_status(status),
            status_code=status,
            remote_error=error_text(response) or None,
            retry_after_s=retry_after(response),
        )

    def _parse_api(self, response: httpx.Response) -> Any:
        status = response.status_code
        if status != 200:
            raise ConnectorError(
                f"Slack chat.postMessage answered HTTP {status}",
                retryable=is_retryable_status(status),
                status_code=status,
                remote_error=_api_error(response) or None,
                retry_after_s=retry_after(response),
            )
        body = response_body(response)
        if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
            raise ConnectorError(
                "Slack chat.postMessage answered with an unexpected body",
                retryable=False,
                status_code=status,
                remote_error=error_text(response) or None,
            )
        if not body["ok"]:
            error = str(body.get("error") or "unknown_error")
            raise ConnectorError(
                f"Slack chat.postMessage failed: {error}",
                retryable=error in TRANSIENT_API_ERRORS,
                status_code=status,
                remote_error=error,
                retry_after_s=retry_after(response),
            )
        return body
