"""Discord messages through an execute-webhook URL (the URL is the secret)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

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
from ipaas.engine.templating import is_template

#: Discord's limits; past them it answers ``50035 Invalid Form Body``.
MAX_CONTENT_CHARS = 2000
MAX_EMBEDS = 10
MAX_USERNAME_CHARS = 80
#: Characters of every embed's title, description, field names and values, footer text and
#: author name, together.
MAX_EMBED_CHARS = 6000


class _EmbedPart(BaseModel):
    """Discord's embed object as its docs have it, for webhooks (no ``video`` or
    ``provider``): a misspelled key (``descripton``, ``colour``) was sent, and the message
    went without it; a wrong type or length was Discord's 400 at every run."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class EmbedFooter(_EmbedPart):
    text: str = Field(min_length=1, max_length=2048)
    icon_url: str | None = None


class EmbedMedia(_EmbedPart):
    url: str = Field(min_length=1)


class EmbedAuthor(_EmbedPart):
    name: str = Field(min_length=1, max_length=256)
    url: str | None = None
    icon_url: str | None = None


class EmbedField(_EmbedPart):
    name: str = Field(min_length=1, max_length=256)
    value: str = Field(min_length=1, max_length=1024)
    inline: bool | None = None


def _iso8601(value: str) -> str:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        msg = "an ISO 8601 date-time, e.g. 2026-12-01T12:00:00Z"
        raise ValueError(msg) from None
    return value


class Embed(_EmbedPart):
    title: str | None = Field(default=None, max_length=256)
    type: Literal["rich"] | None = None
    description: str | None = Field(default=None, max_length=4096)
    url: str | None = None
    timestamp: Annotated[str, AfterValidator(_iso8601)] | None = None
    #: The bar's colour, as an integer (``0x5865F2`` is 5793266).
    color: int | None = Field(default=None, ge=0, le=0xFFFFFF, strict=True)
    footer: EmbedFooter | None = None
    image: EmbedMedia | None = None
    thumbnail: EmbedMedia | None = None
    author: EmbedAuthor | None = None
    fields: list[EmbedField] | None = Field(default=None, max_length=25)

    def chars(self) -> int:
        """What counts against ``MAX_EMBED_CHARS``; a template's text counts once rendered."""
        texts = [self.title, self.description]
        texts += [self.footer.text if self.footer else None]
        texts += [self.author.name if self.author else None]
        for field in self.fields or ():
            texts += [field.name, field.value]
        return sum(len(text) for text in texts if text and not is_template(text))


#: A thread's (a forum post's) name.
MAX_THREAD_NAME_CHARS = 100
#: Tags on one forum post.
MAX_APPLIED_TAGS = 5
#: The message flags a webhook may set: SUPPRESS_EMBEDS and SUPPRESS_NOTIFICATIONS.
WEBHOOK_FLAGS = (1 << 2) | (1 << 12)


def _snowflake(value: str) -> str:
    if not (value.isascii() and value.isdigit() and len(value) <= 20):
        msg = "a Discord id: digits only (a forum tag's id, from Copy ID)"
        raise ValueError(msg)
    return value


#: What Discord refuses in a webhook's name, anywhere in it and in any case (its Create
#: Webhook docs; its 400 says ``Username cannot contain "discord"``), and as the whole name.
_NOT_IN_USERNAME = ("discord", "clyde")
_NOT_A_USERNAME = frozenset({"everyone", "here"})


def _username(value: str) -> str:
    folded = value.lower()
    for word in _NOT_IN_USERNAME:
        if word in folded:
            msg = f'Discord refuses a username with "{word}" in it'
            raise ValueError(msg)
    if folded.strip() in _NOT_A_USERNAME:
        msg = f'Discord refuses the username "{value.strip()}"'
        raise ValueError(msg)
    return value


class DiscordMessageParams(Params):
    # ``{{ trigger.body.id }}`` renders to the native value; a number is fine as text.
    model_config = ConfigDict(coerce_numbers_to_str=True)

    content: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS)
    embeds: list[Embed] | None = Field(default=None, max_length=MAX_EMBEDS)
    #: The webhook's name for this message; Discord answers 400 at every run to one with
    #: "discord" or "clyde" in it, or "everyone" or "here" as the whole of it.
    username: (
        Annotated[
            str, Field(min_length=1, max_length=MAX_USERNAME_CHARS), AfterValidator(_username)
        ]
        | None
    ) = None
    avatar_url: str | None = None
    tts: bool | None = None
    allowed_mentions: dict[str, Any] | None = None
    #: Post into this thread of the webhook's forum or text channel.
    thread_id: str | None = None
    #: Start a new post of this name in the webhook's forum (or media) channel, where each
    #: message needs this or ``thread_id``; Discord refuses it in other channels.
    thread_name: str | None = Field(default=None, min_length=1, max_length=MAX_THREAD_NAME_CHARS)
    #: Ids of the forum's tags for the post ``thread_name`` starts.
    applied_tags: list[Annotated[str, AfterValidator(_snowflake)]] | None = Field(
        default=None, max_length=MAX_APPLIED_TAGS
    )
    #: Message flags: 4 (SUPPRESS_EMBEDS, no link previews), 4096 (SUPPRESS_NOTIFICATIONS,
    #: a silent message) or both (4100); Discord takes no other for a webhook.
    flags: int | None = Field(default=None, strict=True)
    #: Ask Discord to answer with the created message (``200``) instead of ``204``.
    wait: bool = False

    @field_validator("flags")
    @classmethod
    def _webhook_flags(cls, value: int | None) -> int | None:
        if value is not None and (value < 0 or value & ~WEBHOOK_FLAGS):
            msg = (
                "a webhook message takes flags 4 (SUPPRESS_EMBEDS), 4096 "
                "(SUPPRESS_NOTIFICATIONS) or 4100 (both), or none"
            )
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _has_content(self) -> DiscordMessageParams:
        if not self.content and not self.embeds:
            msg = "give content or embeds"
            raise ValueError(msg)
        if self.thread_id and self.thread_name:
            msg = "give thread_id (post into a thread) or thread_name (start one), not both"
            raise ValueError(msg)
        if self.applied_tags and not self.thread_name:
            msg = "applied_tags tag the forum post that thread_name starts; give thread_name"
            raise ValueError(msg)
        chars = sum(embed.chars() for embed in self.embeds or ())
        if chars > MAX_EMBED_CHARS:
            msg = (
                f"the embeds' titles, descriptions, fields, footers and authors hold {chars} "
                f"characters; Discord takes at most {MAX_EMBED_CHARS} together"
            )
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
