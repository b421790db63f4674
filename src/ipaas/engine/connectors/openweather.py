"""Current weather from OpenWeather (``/data/2.5/weather``) by city name or coordinates."""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import ConfigDict, Field, field_validator, model_validator

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

#: The ``lang`` codes OpenWeather documents (https://openweathermap.org/current#multi). It
#: answers any other code in English without a word, so a step asking for another is
#: refused instead.
LANGUAGES = frozenset(
    [
        "af",
        "al",
        "ar",
        "az",
        "be",
        "bg",
        "ca",
        "cz",
        "da",
        "de",
        "el",
        "en",
        "es",
        "eu",
        "fa",
        "fi",
        "fr",
        "gl",
        "he",
        "hi",
        "hr",
        "hu",
        "id",
        "is",
        "it",
        "ja",
        "kr",
        "ku",
        "la",
        "lt",
        "mk",
        "nl",
        "no",
        "pl",
        "pt",
        "pt_br",
        "ro",
        "ru",
        "se",
        "sk",
        "sl",
        "sp",
        "sq",
        "sr",
        "sv",
        "th",
        "tr",
        "ua",
        "uk",
        "vi",
        "zh_cn",
        "zh_tw",
        "zu",
    ]
)
#: Locale codes (as in ``cs-CZ`` or ``zh-Hant``) whose language OpenWeather names otherwise.
_LOCALE_CODES = {
    "cs": "cz",
    "ko": "kr",
    "lv": "la",
    "nb": "no",
    "nn": "no",
    "zh": "zh_cn",
    "zh_hans": "zh_cn",
    "zh_hant": "zh_tw",
    "zh_hk": "zh_tw",
    "zh_mo": "zh_tw",
}


def openweather_language(value: str) -> str | None:
    """OpenWeather's code for ``value``: one of its own (any case, ``-`` for ``_``), or a
    locale (``de-DE``, ``pt-BR``, ``zh-Hant-TW``, ``cs``) matched as RFC 4647's lookup
    does, dropping subtags from the end. Empty (a template that rendered nothing) is no
    language, the API's default; anything else is a ``ValueError``."""
    tag = value.strip().lower().replace("-", "_")
    if not tag:
        return None
    subtags = tag.split("_")
    for end in range(len(subtags), 0, -1):
        candidate = "_".join(subtags[:end])
        code = _LOCALE_CODES.get(candidate, candidate)
        if code in LANGUAGES:
            return code
    msg = (
        f"OpenWeather has no language {value!r} (it would answer in English); "
        f"use one of {', '.join(sorted(LANGUAGES))}, or a locale such as de-DE or pt-BR"
    )
    raise ValueError(msg)


class OpenWeatherParams(Params):
    # ``{{ trigger.body.id }}`` renders to the native value; a number is fine as text.
    model_config = ConfigDict(coerce_numbers_to_str=True)

    #: ``"London"``, ``"London,GB"`` or ``"Springfield,IL,US"``; or give ``lat`` and ``lon``.
    city: str | None = Field(default=None, min_length=1)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    #: Metric (°C, m/s) unless asked otherwise; the API's own default is Kelvin ("standard").
    units: Literal["standard", "metric", "imperial"] = "metric"
    #: Language of ``weather[].description`` (``"de"``, ``"fr"``, ``"pt-BR"``...).
    lang: str | None = None

    @field_validator("lang")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        return None if value is None else openweather_language(value)

    @model_validator(mode="after")
    def _one_location(self) -> OpenWeatherParams:
        has_coordinates = self.lat is not None or self.lon is not None
        if self.city is not None and has_coordinates:
            msg = "give city or lat and lon, not both"
            raise ValueError(msg)
        if self.city is None and (self.lat is None or self.lon is None):
            msg = "give city, or both lat and lon"
            raise ValueError(msg)
        return self


class OpenWeather(Connector):
    type = "openweather"
    Params = OpenWeatherParams
    credential_type = CredentialType.openweather
    # A read: safe to repeat, and stale weather soon stops being useful.
    retry = RetryPolicy(max_attempts=3, initial_delay_s=1.0, max_delay_s=30.0)

    def build(self, ctx: StepContext, params: OpenWeatherParams) -> httpx.Request:
        api_key = secret_value(ctx, "api_key")
        if api_key is None:
            msg = "the OpenWeather credential has no api_key"
            raise ConnectorError(msg, retryable=False)
        base_url = secret_value(ctx, "base_url") or ctx.endpoints.openweather_url
        query: dict[str, str | float] = (
            {"q": params.city}
            if params.city is not None
            else {"lat": params.lat or 0.0, "lon": params.lon or 0.0}
        )
        query["units"] = params.units
        if params.lang:
            query["lang"] = params.lang
        query["appid"] = api_key
        url = f"{base_url.rstrip('/')}/data/2.5/weather"
        return ctx.http.build_request("GET", merge_query(url, query))

    def parse(self, response: httpx.Response) -> Any:
        status = response.status_code
        body = response_body(response)
        if status == 200 and isinstance(body, dict):
            return body
        # Errors are ``{"cod": 401 | "404", "message": "..."}``.
        remote = body.get("message") if isinstance(body, dict) else None
        raise ConnectorError(
            f"OpenWeather answered HTTP {status}"
            if status != 200
            else "OpenWeather answered with an unexpected body",
            retryable=is_retryable_status(status),
            status_code=status,
            remote_error=str(remote) if remote is not None else (error_text(response) or None),
            retry_after_s=retry_after(response),
        )
