"""API routes whose JSON bodies are parsed strictly (``kit.jsontext``), and which refuse
query parameters they do not read, and a body when they read none.

FastAPI parses request bodies with ``json.loads``, which takes ``NaN``, ``Infinity`` and lone
surrogates: a step config holding a lone surrogate was a 500, and ``NaN`` was stored as
``null``. Every API router is an ``api_router``: its routes hand the endpoint a request whose
``json()`` refuses those, with FastAPI's own answer to a body that is not JSON (422
``json_invalid``; ``api/errors.py`` words it "Body is not valid JSON: <the parser's
reason>").
"""

from __future__ import annotations

import json
import types
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, Union, get_args, get_origin

from fastapi import APIRouter, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel

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


def _query_names(dependant: Dependant) -> dict[str, bool]:
    """Every query parameter the route and its dependencies read (a parameter model's
    fields too), and whether it takes several values (a list)."""
    names: dict[str, bool] = {}
    stack = [dependant]
    while stack:
        current = stack.pop()
        for field in current.query_params:
            model = field.field_info.annotation
            if isinstance(model, type) and issubclass(model, BaseModel):
                for name, info in model.model_fields.items():
                    names[info.alias or name] = _takes_many(info.annotation)
            else:
                names[field.alias] = _takes_many(model)
        stack.extend(current.dependencies)
    return names


def _takes_many(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_takes_many(arg) for arg in get_args(annotation))
    return (origin or annotation) in (list, set, frozenset, tuple)


def unknown_query(request: Request, known: dict[str, bool]) -> RequestValidationError | None:
    """The error for query parameters the route does not read, as a parameter model with
    ``extra="forbid"`` words it, and for one given more than once that takes one value
    (found by hand: ``?status=queued&status=failed`` listed the failed ones only, as if
    the first were not there); ``None`` when there are none."""
    counts = Counter(name for name, _ in request.query_params.multi_items())
    errors: list[dict[str, Any]] = []
    for name, count in counts.items():
        if name not in known:
            errors.append(
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": "Extra inputs are not permitted",
                    "input": request.query_params[name],
                }
            )
        elif count > 1 and not known[name]:
            errors.append(
                {
                    "type": "repeated",
                    "loc": ("query", name),
                    "msg": f"Given {count} times: it takes one value",
                    "input": request.query_params.getlist(name),
                }
            )
    return RequestValidationError(errors) if errors else None


#: What a route that takes no body accepts as one: nothing, or an empty object or null,
#: which some clients send with every POST.
_NO_BODY = (b"", b"{}", b"null")


def unread_body(body: bytes) -> RequestValidationError | None:
    """The error for a body sent to a route that reads none; ``None`` for no body."""
    if body.strip() in _NO_BODY:
        return None
    return RequestValidationError(
        [
            {
                "type": "extra_forbidden",
                "loc": ("body",),
                "msg": "This request takes no body: send none (or {})",
                "input": None,
            }
        ]
    )


class StrictJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        # The API's routes refuse query parameters they do not read, as they refuse body
        # fields (``kit.inputs``): found by hand, ``GET /api/workflows?active=false`` listed
        # every workflow, active ones too, as if the filter existed, and a script deleting
        # what it listed would have deleted those.
        # (The route's path may not be its prefixed one here: FastAPI builds an included
        # route's handler from the route it includes.)
        known = _query_names(self.dependant)
        # And a route that reads no body refuses one: found by hand, a replay sent with new
        # trigger data (``{"trigger": {"body": ...}}``) replayed the old data, to Slack and
        # every other step, and said 201.
        takes_body = self.body_field is not None

        async def strict(request: Request) -> Response:
            if request.scope["path"].startswith("/api/"):
                if request.scope["query_string"]:
                    error = unknown_query(request, known)
                    if error is not None:
                        raise error
                if not takes_body and request.method not in ("GET", "HEAD"):
                    # The handler never reads it: what receive gives after it is the
                    # client's disconnect, as for a handler that read its body.
                    error = unread_body(await request.body())
                    if error is not None:
                        raise error
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict


def api_router(**kwargs: Any) -> APIRouter:
    """``APIRouter(**kwargs)`` with strict JSON bodies."""
    return APIRouter(route_class=StrictJsonRoute, **kwargs)
