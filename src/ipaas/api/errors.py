"""One place that turns every error into ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from ipaas.errors import IpaasError

_log = structlog.get_logger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: Any = None


class Error(BaseModel):
    """Every error: ``{"error": {"code", "message", "details"?}}``."""

    error: ErrorInfo


def _header(description: str, type_: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": type_}}


_RESPONSES: dict[int, dict[str, Any]] = {
    400: {"description": "A body that cannot be parsed, or a malformed parameter"},
    401: {
        "description": "Missing, invalid, expired or revoked bearer token",
        "headers": {"WWW-Authenticate": _header("`Bearer`")},
    },
    403: {"description": "Authenticated, but not allowed to do this"},
    404: {"description": "No such object in the caller's tenant (`*_not_found`)"},
    409: {"description": "The object is not in a state that allows this"},
    413: {"description": "Body larger than IPAAS_MAX_BODY_BYTES"},
    415: {"description": "A body of a media type this route does not take"},
    422: {"description": "Invalid request (`validation_error`; `details` names each field)"},
    429: {
        "description": "Too many requests at once; retry after the time given",
        "headers": {"Retry-After": _header("Seconds to wait", "integer")},
    },
    502: {"description": "A remote service this request calls did not answer as it should"},
    503: {
        "description": "The database is unavailable (`store_unavailable`); retry later",
        "headers": {"Retry-After": _header("Seconds to wait", "integer")},
    },
}


def responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, all with the ``Error`` body;
    ``descriptions`` (``s409="..."``) replaces a status's generic description."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry = {**_RESPONSES[status], "model": Error}
        if f"s{status}" in descriptions:
            entry["description"] = descriptions[f"s{status}"]
        documented[status] = entry
    return documented


#: Every route behind a bearer token (401) that reads the store (503).
AUTHENTICATED = responses(401, 503)
#: Every route that queues work besides webhooks (manual runs, retries, replays).
QUEUES_WORK = responses(
    503,
    s503="The database is unavailable (`store_unavailable`), or the queue is full "
    "(`queue_full`, `tenant_queue_full`: as for a webhook); retry after the time given",
)
#: Every route that takes a JSON body (400 unparseable, 413 too large, 422 invalid).
WITH_BODY = responses(400, 413, 422)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = jsonable_encoder(details)
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def ipaas_error_response(exc: IpaasError, *, headers: dict[str, str] | None = None) -> JSONResponse:
    """How every ``IpaasError`` is answered (``headers`` added to its own)."""
    return error_response(
        exc.status_code,
        exc.code,
        exc.message,
        details=exc.details,
        headers={**exc.headers, **headers} if headers else exc.headers,
    )


def internal_error_response(path: str, exc: Exception) -> JSONResponse:
    """Log an unexpected exception and answer a JSON 500 that says nothing of it."""
    _log.error("unhandled_error", path=path, exc_info=exc)
    return error_response(500, "internal_error", "Internal server error")


def _json_invalid(errors: Any) -> str | None:
    """Why the body is not JSON (the parser's reason: what and where, never the input),
    when that is the error; FastAPI's own location for it is the offset, or 0."""
    for error in errors:
        if error.get("type") == "json_invalid":
            return str((error.get("ctx") or {}).get("error") or "JSON decode error")
    return None


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    # The input may be a secret (a credential's body): never echo it back.
    return [{k: v for k, v in e.items() if k in {"loc", "msg", "type"}} for e in errors]


def _allowed_methods(request: Request) -> str | None:
    # Starlette's 405 names the methods of the first route matching the path only, but a path
    # such as /api/workflows/{id} is several routes (GET, PUT, PATCH, DELETE): Allow must list
    # them all. The documented paths say which (the intake route included); where two match
    # (/api/workflows/dry-run and /api/workflows/{id}) the one with fewer parameters is the
    # resource, as in the OpenAPI document.
    table: list[tuple[int, re.Pattern[str], set[str]]] | None = getattr(
        request.app.state, "allow_table", None
    )
    if table is None:
        paths = request.app.openapi()["paths"]
        table = sorted(
            (
                (p.count("{"), compile_path(p)[0], {m.upper() for m in item})
                for p, item in paths.items()
            ),
            key=lambda row: row[0],
        )
        request.app.state.allow_table = table
    matching = [(n, allowed) for n, regex, allowed in table if regex.match(request.url.path)]
    if not matching:
        return None
    fewest = matching[0][0]
    return ", ".join(sorted({m for n, allowed in matching if n == fewest for m in allowed}))


#: Renders an error as a page, for requests ``HtmlErrors.wants`` says are the console's.
class HtmlErrors:
    def __init__(
        self,
        wants: Callable[[str], bool],
        page: Callable[[Request, int, str], Awaitable[Response]],
    ) -> None:
        self.wants = wants
        self.page = page


def install(app: FastAPI, html: HtmlErrors | None = None) -> None:
    def as_page(request: Request) -> bool:
        return html is not None and html.wants(request.url.path)

    @app.exception_handler(IpaasError)
    async def _ipaas(request: Request, exc: IpaasError) -> Response:
        if html is not None and as_page(request):
            page = await html.page(request, exc.status_code, exc.message)
            # The error's own headers go with the page too: a 503's or 429's Retry-After, and
            # Connection: close for a body refused before it was all read.
            page.headers.update(exc.headers)
            return page
        return ipaas_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        unparsed = _json_invalid(exc.errors())
        if unparsed is not None:
            message = f"Body is not valid JSON: {unparsed}"
            details: list[dict[str, Any]] = [
                {"loc": ["body"], "msg": unparsed, "type": "json_invalid"}
            ]
        else:
            details = _clean_validation_errors(exc.errors())
            # The field's path, else where it was (``body``; ``query`` for ``?=x``, a
            # parameter without a name).
            fields = ", ".join(
                ".".join(str(p) for p in d["loc"][1:]) or str((*d["loc"], "body")[0])
                for d in details
            )
            message = f"Invalid request: {fields}"
        if html is not None and as_page(request):
            return await html.page(request, 422, message)
        return error_response(422, "validation_error", message, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.__cause__, IpaasError):
            # Raised while FastAPI read the body (its size, its deadline: ``limited_receive``),
            # which FastAPI wraps in a 400 "There was an error parsing the body".
            return await _ipaas(request, exc.__cause__)
        if html is not None and as_page(request):
            return await html.page(request, exc.status_code, str(exc.detail))
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = getattr(exc, "headers", None)
        allow = _allowed_methods(request) if exc.status_code == 405 else None
        if allow is not None:
            headers = {**(headers or {}), "Allow": allow}
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> Response:
        if html is not None and as_page(request):
            _log.error("unhandled_error", path=request.url.path, exc_info=exc)
            return await html.page(request, 500, "Something went wrong on our side; it was logged.")
        return internal_error_response(request.url.path, exc)
