"""One place that turns every error into ``{"error": {"code", "message"}}``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    # The input may be a secret (a credential's body): never echo it back.
    return [{k: v for k, v in e.items() if k in {"loc", "msg", "type"}} for e in errors]


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
            return await html.page(request, exc.status_code, exc.message)
        return error_response(
            exc.status_code, exc.code, exc.message, details=exc.details, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        details = _clean_validation_errors(exc.errors())
        fields = ", ".join(".".join(str(p) for p in d["loc"][1:]) or "body" for d in details)
        if html is not None and as_page(request):
            return await html.page(request, 422, f"Invalid request: {fields}")
        return error_response(
            422, "validation_error", f"Invalid request: {fields}", details=details
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if html is not None and as_page(request):
            return await html.page(request, exc.status_code, str(exc.detail))
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(
            exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> Response:
        _log.error("unhandled_error", path=request.url.path, exc_info=exc)
        if html is not None and as_page(request):
            return await html.page(request, 500, "Something went wrong on our side; it was logged.")
        return error_response(500, "internal_error", "Internal server error")
