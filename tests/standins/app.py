"""The stand-in ASGI app: every API on one server, plus ``/_standin/*`` to inspect and steer it.

- ``GET /_standin/requests[?kind=&path_prefix=]``: recorded requests, oldest first
  (``kind``: ``slack_webhook``, ``slack_api``, ``discord``, ``openweather``, ``echo``, ``slow``,
  ``oauth_token``, ``oauth_api``,
  ``unknown`` for any other path, answered 404);
- ``GET /_standin/stats``: counts, delivered messages and duplicate texts per service;
- ``POST /_standin/reset``: forget everything (requests, counts, faults, slow calls);
- ``POST /_standin/faults`` ``{"path_prefix", "status", "count", "retry_after", "delay_s"}``:
  fail (or delay) the next matching requests; ``GET`` lists them;
- ``GET /_standin/slow``: ``/slow`` calls with their start, disconnect and completion times;
- ``POST /_standin/oauth``: revoke the OAuth 2.0 stand-in's tokens, set their lifetime
  (``tests.standins.oauth``).
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.standins import discord, generic, oauth, openweather, slack
from tests.standins.state import Fault, StandinState


def _control_routes(state: StandinState) -> list[Route]:
    async def requests(request: Request) -> Response:
        query = request.query_params
        entries = state.requests(kind=query.get("kind"), path_prefix=query.get("path_prefix"))
        return JSONResponse(entries)

    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    async def reset(request: Request) -> Response:
        state.reset()
        return Response(status_code=204)

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            spec: Any = await request.json()
            try:
                state.add_fault(Fault(**spec))
            except TypeError as exc:
                return JSONResponse({"error": str(exc)}, 422)
            return JSONResponse(state.faults(), 201)
        return JSONResponse(state.faults())

    async def slow_calls(request: Request) -> Response:
        return JSONResponse(state.slow_calls())

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return [
        Route("/_standin/requests", requests, methods=["GET"]),
        Route("/_standin/stats", stats, methods=["GET"]),
        Route("/_standin/reset", reset, methods=["POST"]),
        Route("/_standin/faults", faults, methods=["GET", "POST"]),
        Route("/_standin/slow", slow_calls, methods=["GET"]),
        Route("/_standin/health", health, methods=["GET"]),
    ]


def create_app(state: StandinState | None = None) -> Starlette:
    """The stand-in app over ``state`` (a new one when not given: ``app.state.standin``)."""
    state = state if state is not None else StandinState()
    app = Starlette(
        routes=[
            *_control_routes(state),
            *slack.routes(state),
            *discord.routes(state),
            *openweather.routes(state),
            *oauth.routes(state),
            *generic.routes(state),
            generic.fallback_route(state),
        ]
    )
    app.state.standin = state
    return app
