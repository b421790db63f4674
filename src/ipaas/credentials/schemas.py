from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator

from ipaas.credentials.models import CredentialType


class _Secret(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlackSecret(_Secret):
    webhook_url: AnyHttpUrl | None = None
    bot_token: str | None = Field(default=None, min_length=8)

    @model_validator(mode="after")
    def _one_of(self) -> SlackSecret:
        if (self.webhook_url is None) == (self.bot_token is None):
            msg = "give exactly one of webhook_url or bot_token"
            raise ValueError(msg)
        return self


class DiscordSecret(_Secret):
    webhook_url: AnyHttpUrl


class OpenWeatherSecret(_Secret):
    api_key: str = Field(min_length=1)
    base_url: AnyHttpUrl | None = None


class BasicAuth(_Secret):
    username: str
    password: str


class HttpSecret(_Secret):
    base_url: AnyHttpUrl | None = None
    headers: dict[str, str] | None = None
    bearer_token: str | None = None
    basic: BasicAuth | None = None


SECRET_MODELS: dict[CredentialType, type[_Secret]] = {
    CredentialType.slack: SlackSecret,
    CredentialType.discord: DiscordSecret,
    CredentialType.openweather: OpenWeatherSecret,
    CredentialType.http: HttpSecret,
}


class CredentialCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    type: CredentialType
    #: Write-only: validated against the type's shape, encrypted, never returned.
    secret: dict[str, Any]

    def __repr__(self) -> str:
        return f"CredentialCreate(name={self.name!r}, type={self.type.value!r}, secret='***')"


class CredentialRead(BaseModel):
    id: str
    name: str
    type: CredentialType
    created_at: datetime
