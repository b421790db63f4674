"""OpenWeather current weather: ``GET /data/2.5/weather`` with ``q`` or ``lat`` + ``lon``.

Any non-empty ``appid`` is valid unless it contains ``invalid`` or ``bad`` (401);
``ratelimited`` / ``error500`` / ``unavailable`` in it force 429 / 500 / 503. Known cities
answer a fixed, realistic body; others ``404 city not found``. Coordinates answer the nearest
known city's weather at the given ``coord``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.standins.routing import magic_status, recorded, retry_after_header
from tests.standins.state import StandinState

INVALID_KEY_MESSAGE = (
    "Invalid API key. Please see https://openweathermap.org/faq#error401 for more info."
)
RATE_LIMIT_MESSAGE = (
    "Your account is temporary blocked due to exceeding of requests limitation of your "
    "subscription type. Please choose the proper subscription https://openweathermap.org/price"
)


@dataclass(frozen=True, slots=True)
class City:
    id: int
    name: str
    country: str
    lat: float
    lon: float
    timezone: int
    temp_c: float
    humidity: int
    pressure: int
    wind_ms: float
    wind_deg: int
    clouds: int
    weather: tuple[int, str, str, str]


CITIES = {
    "london": City(2643743, "London", "GB", 51.5085, -0.1257, 0, 14.2, 72, 1012, 4.12, 240, 75,
                   (803, "Clouds", "broken clouds", "04d")),
    "berlin": City(2950159, "Berlin", "DE", 52.5244, 13.4105, 3600, 17.5, 58, 1016, 3.6, 270, 20,
                   (801, "Clouds", "few clouds", "02d")),
    "paris": City(2988507, "Paris", "FR", 48.8534, 2.3488, 3600, 19.1, 55, 1018, 2.57, 200, 0,
                  (800, "Clear", "clear sky", "01d")),
    "new york": City(5128581, "New York", "US", 40.7143, -74.006, -14400, 22.4, 64, 1014, 5.14,
                     190, 40, (802, "Clouds", "scattered clouds", "03d")),
    "tokyo": City(1850147, "Tokyo", "JP", 35.6895, 139.6917, 32400, 26.3, 78, 1009, 3.09, 150,
                  90, (500, "Rain", "light rain", "10d")),
    "amsterdam": City(2759794, "Amsterdam", "NL", 52.374, 4.8897, 3600, 12.8, 81, 1008, 6.17,
                      230, 100, (804, "Clouds", "overcast clouds", "04d")),
}  # fmt: skip
#: ``weather[0].description`` in a few languages (``lang=``); others fall back to English.
_DESCRIPTIONS = {
    "de": {"broken clouds": "Überwiegend bewölkt", "clear sky": "Klarer Himmel",
           "light rain": "Leichter Regen", "few clouds": "Ein paar Wolken"},
    "fr": {"broken clouds": "nuageux", "clear sky": "ciel dégagé", "light rain": "légère pluie"},
}  # fmt: skip
_COUNTRY_ALIASES = {"uk": "gb"}


def _error(status: int, message: str, *, numeric_cod: bool = False) -> JSONResponse:
    # OpenWeather's ``cod`` is a number for 401/429 but a string for 400/404.
    return JSONResponse({"cod": status if numeric_cod else str(status), "message": message}, status)


def _forced(request: Request, body: bytes, status: int, retry_after: float | None) -> Response:
    if status == 401:
        return _error(401, INVALID_KEY_MESSAGE, numeric_cod=True)
    if status == 404:
        return _error(404, "city not found")
    if status == 429:
        response = _error(429, RATE_LIMIT_MESSAGE, numeric_cod=True)
        response.headers.update(retry_after_header(retry_after))
        return response
    return _error(status, "Internal error", numeric_cod=True)


def _find(q: str) -> City | None:
    name, _, rest = q.partition(",")
    city = CITIES.get(name.strip().lower())
    country = rest.rpartition(",")[2].strip().lower()
    if city is None or (country and _COUNTRY_ALIASES.get(country, country) != city.country.lower()):
        return None
    return city


def _nearest(lat: float, lon: float) -> City:
    return min(CITIES.values(), key=lambda c: math.hypot(c.lat - lat, c.lon - lon))


def _temperature(celsius: float, units: str) -> float:
    if units == "metric":
        return round(celsius, 2)
    if units == "imperial":
        return round(celsius * 9 / 5 + 32, 2)
    return round(celsius + 273.15, 2)


def weather_body(
    city: City, *, units: str, lang: str, coord: tuple[float, float]
) -> dict[str, Any]:
    """The ``/data/2.5/weather`` body for ``city`` at ``coord`` (lat, lon)."""
    weather_id, main, description, icon = city.weather
    now = int(time.time())
    return {
        "coord": {"lon": coord[1], "lat": coord[0]},
        "weather": [
            {
                "id": weather_id,
                "main": main,
                "description": _DESCRIPTIONS.get(lang, {}).get(description, description),
                "icon": icon,
            }
        ],
        "base": "stations",
        "main": {
            "temp": _temperature(city.temp_c, units),
            "feels_like": _temperature(city.temp_c - 0.6, units),
            "temp_min": _temperature(city.temp_c - 1.1, units),
            "temp_max": _temperature(city.temp_c + 1.1, units),
            "pressure": city.pressure,
            "humidity": city.humidity,
            "sea_level": city.pressure,
            "grnd_level": city.pressure - 4,
        },
        "visibility": 10000,
        "wind": {
            "speed": round(city.wind_ms * 2.23694, 2) if units == "imperial" else city.wind_ms,
            "deg": city.wind_deg,
        },
        "clouds": {"all": city.clouds},
        "dt": now,
        "sys": {
            "type": 2,
            "id": 2000000 + city.id % 100000,
            "country": city.country,
            "sunrise": now - now % 86400 + 5 * 3600 - city.timezone,
            "sunset": now - now % 86400 + 19 * 3600 - city.timezone,
        },
        "timezone": city.timezone,
        "id": city.id,
        "name": city.name,
        "cod": 200,
    }


def _coordinate(value: str | None, limit: float) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and -limit <= number <= limit else None


def routes(state: StandinState) -> list[Route]:
    async def current(request: Request, body: bytes) -> Response:
        query = request.query_params
        appid = query.get("appid", "")
        forced = magic_status(appid)
        if forced is not None:
            return _forced(request, body, forced, None)
        if not appid or "invalid" in appid.lower() or "bad" in appid.lower():
            return _error(401, INVALID_KEY_MESSAGE, numeric_cod=True)
        units = query.get("units", "standard")
        lang = query.get("lang", "en")
        if query.get("q"):
            city = _find(query["q"])
            if city is None:
                return _error(404, "city not found")
            return JSONResponse(
                weather_body(city, units=units, lang=lang, coord=(city.lat, city.lon))
            )
        if "lat" not in query or "lon" not in query:
            return _error(400, "Nothing to geocode")
        lat, lon = _coordinate(query["lat"], 90), _coordinate(query["lon"], 180)
        if lat is None:
            return _error(400, "wrong latitude")
        if lon is None:
            return _error(400, "wrong longitude")
        return JSONResponse(
            weather_body(_nearest(lat, lon), units=units, lang=lang, coord=(lat, lon))
        )

    return [recorded(state, "openweather", "/data/2.5/weather", current, _forced, ["GET"])]
