"""The error root: every expected failure carries its HTTP status and a stable code."""

from __future__ import annotations

from typing import Any


class IpaasError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if code is not None:
            self.code = code
        self.headers = headers or {}
        self.details = details


class BadRequest(IpaasError):
    status_code = 400
    code = "bad_request"


class Unauthorized(IpaasError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = "Missing or invalid credentials") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(IpaasError):
    status_code = 403
    code = "forbidden"


class NotFound(IpaasError):
    status_code = 404
    code = "not_found"


class Conflict(IpaasError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(IpaasError):
    status_code = 413
    code = "payload_too_large"


class RequestTimeout(IpaasError):
    """The request's body did not all arrive in time (``api/body_deadline.py``); the rest of
    it is never read, so the connection is closed."""

    status_code = 408
    code = "body_timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class UnsupportedMediaType(IpaasError):
    status_code = 415
    code = "unsupported_media_type"


class ValidationFailed(IpaasError):
    status_code = 422
    code = "validation_error"


class TooManyRequests(IpaasError):
    status_code = 429
    code = "rate_limited"


class ServiceUnavailable(IpaasError):
    status_code = 503
    code = "unavailable"


#: What a 503 for an unreachable database tells clients to wait: about a restart's length.
STORE_RETRY_AFTER_S = 5


class StoreUnavailable(ServiceUnavailable):
    """The database cannot be reached (down, restarting, out of connections, a lock held
    past the lock timeout). Nothing was written, or the caller cannot know: a client should
    retry (intake answers 503). ``reason``, for the operator's log only: why, when known."""

    code = "store_unavailable"
    reason: str | None = None

    def __init__(self, message: str = "The database is unavailable; retry later") -> None:
        super().__init__(message, headers={"Retry-After": str(STORE_RETRY_AFTER_S)})
