"""API routes whose JSON bodies are parsed strictly (``kit.jsontext``).

FastAPI parses request bodies with ``json.loads``, which takes ``NaN``, ``Infinity`` and lone
surrogates: a step config holding a lone surrogate was a 500, and ``NaN`` was stored as
``null``. Every API router is an ``api_router``: its routes hand the endpoint a request whose
``json()`` refuses those, with FastAPI's own answer to a body that is not JSON (422
``json_invalid``; ``api/errors.py`` words it "Body is not valid JSON: <the parser's
reason>").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from ipaas.kit import jsontext


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = jsontext.loads(body)
            except jsontext.JsonError as exc:
                doc = body.decode("utf-8", "replace")
                raise json.JSONDecodeError(str(exc), doc, 0) from exc
        return self._json


class StrictJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict


def api_router(**kwargs: Any) -> APIRouter:
    """``APIRouter(**kwargs)`` with strict JSON bodies."""
    return APIRouter(route_class=StrictJsonRoute, **kwargs)
