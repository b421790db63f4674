from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ipaas.engine.connectors import REGISTRY, ConnectorError, Endpoints, StepContext
from ipaas.engine.connectors.openweather import OpenWeather, OpenWeatherParams
from ipaas.kit.http import HttpClient
from tests.standins.openweather import INVALID_KEY_MESSAGE
from tests.standins.server import StandinServer

connector = OpenWeather()


def make_ctx(
    http: HttpClient, standin: StandinServer, api_key: str = "good-key-123", **secret: Any
) -> StepContext:
    return StepContext(
        http=http,
        secret={"api_key": api_key, **secret},
        endpoints=Endpoints(openweather_url=standin.openweather_url),
    )


async def run_error(ctx: StepContext, **params: Any) -> ConnectorError:
    with pytest.raises(ConnectorError) as info:
        await connector.run(ctx, OpenWeatherParams.model_validate(params))
    return info.value


def test_registered() -> None:
    assert isinstance(REGISTRY["openweather"], OpenWeather)
    assert OpenWeather.credential_type == "openweather"


class TestParams:
    def test_city_with_metric_default(self) -> None:
        params = OpenWeatherParams.model_validate({"city": "London,GB"})
        assert (params.city, params.units, params.lang) == ("London,GB", "metric", None)

    def test_rendered_coordinates_are_coerced(self) -> None:
        params = OpenWeatherParams.model_validate({"lat": "52.52", "lon": "13.405"})
        assert (params.lat, params.lon) == (52.52, 13.405)

    @pytest.mark.parametrize(
        ("config", "message"),
        [
            ({}, "give city, or both lat and lon"),
            ({"lat": 52.5}, "give city, or both lat and lon"),
            ({"city": "Berlin", "lat": 52.5, "lon": 13.4}, "not both"),
            ({"lat": 91, "lon": 0}, "less than or equal to 90"),
            ({"lat": 0, "lon": -181}, "greater than or equal to -180"),
            ({"city": "Berlin", "units": "kelvin"}, "'standard', 'metric' or 'imperial'"),
            ({"city": ""}, "at least 1 character"),
            # OpenWeather answers these in English without a word; they were sent as given.
            ({"city": "Berlin", "lang": "german"}, "no language 'german'"),
            ({"city": "Berlin", "lang": "xx-XX"}, "such as de-DE or pt-BR"),
        ],
    )
    def test_invalid(self, config: dict[str, Any], message: str) -> None:
        with pytest.raises(ValidationError, match=message):
            OpenWeatherParams.model_validate(config)

    @pytest.mark.parametrize(
        ("lang", "sent"),
        [
            ("de", "de"),
            ("FR", "fr"),
            ("de-DE", "de"),
            ("en-US", "en"),
            ("pt-BR", "pt_br"),
            ("pt_BR", "pt_br"),
            ("pt-PT", "pt"),
            ("zh-TW", "zh_tw"),
            ("zh-Hant-HK", "zh_tw"),
            ("zh", "zh_cn"),
            # ISO 639-1 codes OpenWeather names otherwise.
            ("cs-CZ", "cz"),
            ("ko", "kr"),
            ("lv", "la"),
            ("nb-NO", "no"),
            # A template that rendered nothing: the API's default language.
            ("", None),
        ],
    )
    def test_a_language_or_locale_is_openweathers_code(self, lang: str, sent: str | None) -> None:
        params = OpenWeatherParams.model_validate({"city": "Berlin", "lang": lang})
        assert params.lang == sent


class TestBuild:
    def test_city(self, http_client: HttpClient, standin: StandinServer) -> None:
        request = connector.build(
            make_ctx(http_client, standin), OpenWeatherParams.model_validate({"city": "London"})
        )
        assert request.method == "GET"
        assert str(request.url) == (
            f"{standin.url}/data/2.5/weather?q=London&units=metric&appid=good-key-123"
        )
        assert request.content == b""

    def test_coordinates_and_base_url_from_credential(self, http_client: HttpClient) -> None:
        ctx = StepContext(
            http=http_client, secret={"api_key": "k1", "base_url": "https://owm.example.com/"}
        )
        params = OpenWeatherParams.model_validate(
            {"lat": 52.52, "lon": 13.405, "units": "imperial", "lang": "de"}
        )
        request = connector.build(ctx, params)
        assert str(request.url) == (
            "https://owm.example.com/data/2.5/weather"
            "?lat=52.52&lon=13.405&units=imperial&lang=de&appid=k1"
        )

    def test_credential_without_key(self, http_client: HttpClient) -> None:
        params = OpenWeatherParams.model_validate({"city": "London"})
        with pytest.raises(ConnectorError, match="no api_key"):
            connector.build(StepContext(http=http_client, secret={}), params)


class TestRun:
    async def test_city(self, http_client: HttpClient, clean_standin: StandinServer) -> None:
        output = await connector.run(
            make_ctx(http_client, clean_standin),
            OpenWeatherParams.model_validate({"city": "London"}),
        )
        assert output["name"] == "London"
        assert output["main"]["temp"] == 14.2
        assert output["weather"][0]["description"] == "broken clouds"
        assert output["coord"] == {"lon": -0.1257, "lat": 51.5085}
        (received,) = clean_standin.requests(kind="openweather")
        assert received["query"] == "q=London&units=metric&appid=good-key-123"

    async def test_coordinates_imperial_german(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        params = OpenWeatherParams.model_validate(
            {"lat": "52.52", "lon": "13.4", "units": "imperial", "lang": "de"}
        )
        output = await connector.run(make_ctx(http_client, clean_standin), params)
        assert output["name"] == "Berlin"
        assert output["coord"] == {"lat": 52.52, "lon": 13.4}
        assert output["main"]["temp"] == 63.5  # 17.5 °C
        assert output["weather"][0]["description"] == "Ein paar Wolken"

    async def test_base_url_from_credential(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        ctx = StepContext(
            http=http_client, secret={"api_key": "good-key-123", "base_url": clean_standin.url}
        )
        output = await connector.run(ctx, OpenWeatherParams.model_validate({"city": "Paris"}))
        assert output["sys"]["country"] == "FR"

    async def test_invalid_key_is_final(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        error = await run_error(make_ctx(http_client, clean_standin, "invalid-key"), city="London")
        assert (error.retryable, error.status_code) == (False, 401)
        assert error.remote_error == INVALID_KEY_MESSAGE

    async def test_unknown_city_is_final(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        error = await run_error(make_ctx(http_client, clean_standin), city="Atlantis")
        assert (error.retryable, error.status_code) == (False, 404)
        assert error.remote_error == "city not found"

    async def test_rate_limited_is_retryable(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        error = await run_error(make_ctx(http_client, clean_standin, "ratelimited"), city="London")
        assert (error.retryable, error.status_code, error.retry_after_s) == (True, 429, 1.0)
        assert error.remote_error is not None
        assert "exceeding of requests limitation" in error.remote_error

    async def test_server_error_is_retryable(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        clean_standin.add_fault("/data/2.5/weather", status=502)
        error = await run_error(make_ctx(http_client, clean_standin), city="London")
        assert (error.retryable, error.status_code) == (True, 502)
