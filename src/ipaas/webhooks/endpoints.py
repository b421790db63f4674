"""Public intake, the hottest path: answered by ``IntakeFastPath`` ahead of FastAPI's middleware
and routing (the plain Starlette ``route`` below takes only what the fast path passes on).
Errors render as everywhere else; the OpenAPI entry is written out below."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ipaas.api.body_deadline import BodyDeadline
from ipaas.api.errors import internal_error_response, ipaas_error_response
from ipaas.api.middleware import (
    body_too_large,
    declared_too_large,
    limited_receive,
    log_request,
    request_id,
)
from ipaas.api.urls import public_url
from ipaas.errors import BadRequest, IpaasError
from ipaas.observability import metrics, tracing
from ipaas.runtime import Runtime
from ipaas.webhooks import results
from ipaas.webhooks import service as webhook_service
from ipaas.webhooks.checks import Challenge, get_check, options_check
from ipaas.webhooks.fields import query_values
from ipaas.webhooks.service import Accepted
from ipaas.workflows.models import WebhookAuthScheme, WebhookResponse

PATH = "/api/webhooks/{workflow_id}"
_PREFIX = "/api/webhooks/"
#: FastAPI's own words for a body it could not read, which the routed API answers.
_UNREADABLE_BODY = "There was an error parsing the body"
#: What a sender that acknowledges with an empty body gets (Slack: 200, nothing else).
_EMPTY_ACK = ""
#: Twilio's: TwiML that does nothing (a JSON answer is its error 12300, Invalid
#: Content-Type, in the account's debugger, for every message).
_TWIML_ACK = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
_TEXT_PLAIN = "text/plain; charset=utf-8"


@dataclass(slots=True)  # not frozen: 0.3 us to build where frozen took 0.9 (per webhook)
class Answer:
    """What the intake answers: ``json``, or ``text`` of ``media_type``; and the execution
    it made or found (for the access line), if any."""

    status: int
    json: dict[str, Any] | None = None
    text: str | None = None
    media_type: str = _TEXT_PLAIN
    execution_id: str | None = None
    #: More headers (a redirect's ``Location``).
    headers: dict[str, str] | None = None

    def response(self) -> Response:
        if self.text is None:
            return JSONResponse(self.json, status_code=self.status)
        # ``nosniff``: a challenge echoed back is read as nothing but what it says it is.
        headers = {"X-Content-Type-Options": "nosniff", **(self.headers or {})}
        if self.execution_id is not None:  # an answer without the JSON that names it
            headers["X-Execution-Id"] = self.execution_id
        return Response(self.text, self.status, headers=headers, media_type=self.media_type)


def _answer_of(response: WebhookResponse, execution_id: str) -> Answer:
    """The trigger's own answer to an accepted webhook."""
    if response.redirect is not None:
        return Answer(
            response.status_code,
            text="",
            execution_id=execution_id,
            headers={"Location": response.redirect},
        )
    return Answer(
        response.status_code,
        text=response.body or "",
        media_type=response.content_type or _TEXT_PLAIN,
        execution_id=execution_id,
    )


#: An accepted webhook's answer (200: text, media type), for the senders that want one of
#: their own: Slack's Events API, slash commands and interactivity want 200 and nothing
#: else within 3 s; a body is shown to the user who typed the command.
_ACKNOWLEDGED = {
    WebhookAuthScheme.slack: (_EMPTY_ACK, _TEXT_PLAIN),
    WebhookAuthScheme.twilio: (_TWIML_ACK, "text/xml; charset=utf-8"),
}


def webhook_url(request: Request, workflow_id: str) -> str:
    """The public URL a sender posts ``workflow_id``'s events to."""
    return public_url(request, _PREFIX + workflow_id)


def called_url(scope: Scope, public_url: str | None) -> str:
    """The URL a sender called, as it wrote it: under ``IPAAS_PUBLIC_URL`` when set (behind
    a reverse proxy), else the scheme (a trusted proxy's) and ``Host`` it arrived with; the
    path and query string as sent (Twilio signs this URL)."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope["path"]
    query = scope.get("query_string", b"").decode("latin-1")
    base = public_url.rstrip("/") if public_url else str(Request(scope).base_url).rstrip("/")
    return f"{base}{path}?{query}" if query else f"{base}{path}"


async def accept(
    runtime: Runtime,
    workflow_id: str,
    body: bytes,
    headers: Headers,
    scope: Scope,
) -> Answer:
    """The answer to one webhook: 202 (or 200 for a duplicate) and its JSON, or what the
    sender waits for (a check of the URL answered; Slack's and Twilio's acknowledgement);
    refusals raise."""
    started = time.perf_counter()
    with tracing.server_span("POST /api/webhooks/{workflow_id}", headers) as span:
        try:
            accepted = await webhook_service.accept(
                runtime.store,
                runtime.queue,
                runtime.intake,
                workflow_id=workflow_id,
                body=body,
                content_type=headers.get("content-type"),
                headers=headers,
                query_string=scope["query_string"],
                url=lambda: called_url(scope, runtime.settings.public_url),
            )
        except IpaasError as exc:
            metrics.webhook_refused(exc.code, exc.status_code, started)
            if span is not None:
                span.set_attribute("http.response.status_code", exc.status_code)
            raise
        except Exception:
            metrics.webhook_refused("internal_error", 500, started)
            raise
        if isinstance(accepted, Challenge):
            metrics.webhook_answered(started, duplicate=False)
            if span is not None:
                span.set_attribute("http.response.status_code", 200)
            if accepted.text is not None:
                return Answer(200, text=accepted.text)
            return Answer(200, json=dict(accepted.answer or {}))
        metrics.webhook_answered(started, duplicate=accepted.duplicate)
        if accepted.response is not None:
            if accepted.response.wait_s is not None:
                return await _waited_answer(runtime, accepted, accepted.response)
            if span is not None:
                span.set_attribute("http.response.status_code", accepted.response.status_code)
            return _answer_of(accepted.response, accepted.execution_id)
        acknowledged = _ACKNOWLEDGED.get(accepted.scheme) if accepted.scheme else None
        status = 200 if accepted.duplicate or acknowledged else 202
        if span is not None:
            span.set_attribute("http.response.status_code", status)
    if acknowledged is not None:
        text, media_type = acknowledged
        return Answer(status, text=text, media_type=media_type, execution_id=accepted.execution_id)
    content = _accepted_json(accepted.execution_id)
    if accepted.duplicate:
        content["duplicate"] = True
    return Answer(status, json=content, execution_id=accepted.execution_id)


def _accepted_json(execution_id: str) -> dict[str, Any]:
    """An accepted webhook's JSON: its execution and where to read it."""
    return {"execution_id": execution_id, "status_url": f"/api/executions/{execution_id}"}


async def _waited_answer(runtime: Runtime, accepted: Accepted, response: WebhookResponse) -> Answer:
    """The trigger's answer rendered over the execution's result once it ends, or, when it
    has not ended within ``wait_s``, what a trigger that does not wait answers: 202, or 200
    with ``"duplicate": true`` for a repeat (``webhooks/results.py``)."""
    result = await results.waited(runtime, accepted.tenant_id, accepted.execution_id, response)
    if result is None:
        content = _accepted_json(accepted.execution_id)
        if accepted.duplicate:
            content["duplicate"] = True
            return Answer(200, json=content, execution_id=accepted.execution_id)
        return Answer(202, json=content, execution_id=accepted.execution_id)
    return Answer(
        response.status_code,
        text=result.text,
        media_type=result.media_type,
        execution_id=accepted.execution_id,
    )


def _text(text: str) -> Response:
    """A challenge echoed as text."""
    return Answer(200, text=text).response()


async def receive_webhook(request: Request) -> Response:
    """The routed intake: requests ``IntakeFastPath`` leaves to the app (CORS)."""
    answer = await accept(
        request.app.state.runtime,
        request.path_params["workflow_id"],
        await request.body(),
        request.headers,
        request.scope,
    )
    # For the access line ``RequestIdMiddleware`` writes, as the fast path's names it.
    if answer.execution_id is not None:
        structlog.contextvars.bind_contextvars(execution_id=answer.execution_id)
    return answer.response()


async def check_url(request: Request) -> Response:
    """``GET``, ``HEAD`` and ``OPTIONS`` of a webhook URL: only senders' checks of it
    (Meta's subscription check, Dropbox's and Okta's challenges, Trello's ``HEAD``,
    CloudEvents' ``OPTIONS``), for an active webhook workflow; any other is a 405: webhooks
    are POSTed."""
    runtime = request.app.state.runtime
    workflow_id = request.path_params["workflow_id"]
    if request.method == "OPTIONS":
        allowed = options_check(request.headers)
        if allowed is None:
            raise _not_a_check()
        await webhook_service.active_webhook(runtime.store, runtime.intake, workflow_id)
        return Response(status_code=200, headers=allowed)
    query = query_values(request.scope["query_string"])
    if "hub.mode" in query:
        challenge = await webhook_service.confirm_subscription(
            runtime.store, runtime.intake, workflow_id=workflow_id, query=query
        )
        return _text(challenge)
    check = get_check(query, request.headers) if request.method == "GET" else None
    if check is None and request.method != "HEAD":
        raise _not_a_check()
    await webhook_service.active_webhook(runtime.store, runtime.intake, workflow_id)
    if check is None:  # HEAD: the URL is there (Trello asks before it saves a webhook)
        return Response(status_code=200)
    return _text(check.text) if check.text is not None else JSONResponse(dict(check.answer or {}))


def _not_a_check() -> IpaasError:
    return IpaasError(
        "Method Not Allowed: webhooks are POSTed (a GET or OPTIONS is only a sender's check "
        "of the URL: Meta's hub.mode, Dropbox's challenge, Okta's verification header, "
        "CloudEvents' WebHook-Request-Origin)",
        405,
        code="method_not_allowed",
        headers={"Allow": "GET, HEAD, OPTIONS, POST"},
    )


class IntakeFastPath:
    """``POST /api/webhooks/{workflow_id}`` as one pure ASGI handler, ahead of the app.

    Through FastAPI a webhook crossed a dozen ASGI layers (error, telemetry and body-limit
    middlewares, exception handling, routing, the request/response wrappers), which cost
    more than the intake's own work (docs/benchmarks.md). This handler does what those
    layers did for this one route: request id, body cap while streaming (413), error
    rendering, access log. It leaves a request to the app when CORS is configured and the
    request has an ``Origin`` (the CORS middleware answers those).
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        max_body_bytes: int,
        cors: bool,
        deadline: BodyDeadline | None = None,
    ) -> None:
        self.runtime = runtime
        self.max_body_bytes = max_body_bytes
        self.cors = cors
        self.deadline = deadline

    def workflow_id(self, scope: Scope) -> str | None:
        """The workflow id when the fast path answers this request, else ``None``."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        if not path.startswith(_PREFIX):
            return None
        workflow_id = path[len(_PREFIX) :]
        if workflow_id.endswith("/"):  # the URL with a slash after it (``routes``)
            workflow_id = workflow_id[:-1]
        if not workflow_id or "/" in workflow_id:
            return None
        if self.cors and any(name == b"origin" for name, _ in scope["headers"]):
            return None
        return workflow_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send, workflow_id: str) -> None:
        started = time.perf_counter()
        rid = request_id(scope)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        headers = Headers(scope=scope)
        status = 500
        made: dict[str, Any] = {}
        try:
            try:
                body = await self._body(scope, receive)
                answer = await accept(self.runtime, workflow_id, body, headers, scope)
                status = answer.status
                if answer.execution_id is not None:  # not for a sender's check of the URL
                    made["execution_id"] = answer.execution_id
            except ClientDisconnect:
                # Nothing was accepted. granian says the same for a body it cannot read (a
                # malformed chunk) as for a client gone; left unanswered, granian answered
                # that client a bare 500. Answered as the routed API answers it (400); a
                # client that is gone reads nothing, and its access line says 400 too
                # (granian's send does not tell them apart either).
                status = 499
                response = ipaas_error_response(
                    BadRequest(_UNREADABLE_BODY), headers={"connection": "close"}
                )
                response.headers["x-request-id"] = rid
                with contextlib.suppress(Exception):
                    await response(scope, receive, send)
                    status = response.status_code
                return
            except IpaasError as exc:
                # A body refused for its size or its deadline says itself to close.
                response = ipaas_error_response(exc)
            except Exception as exc:
                response = internal_error_response(scope["path"], exc)
            else:
                if answer.json is None:  # text: a check of the URL, an acknowledgement
                    text = answer.response()
                    text.headers["x-request-id"] = rid
                    await text(scope, receive, send)
                    return
                # Sent as two ASGI messages directly: Starlette's response object was an
                # eighth of the intake's samples in a profile of make bench.
                payload = orjson.dumps(answer.json)
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()),
                            (b"x-request-id", rid.encode("latin-1")),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": payload})
                return
            response.headers["x-request-id"] = rid
            status = response.status_code
            await response(scope, receive, send)
        finally:
            log_request(scope, status, started, **made)
            structlog.contextvars.clear_contextvars()

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        if declared_too_large(scope, limit):
            raise body_too_large(limit)
        receive = limited_receive(receive, limit, self.deadline)
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


#: The webhook URL, and the same with a slash after it. Starlette answers a path that differs
#: by its trailing slash with a 307 to the other one, which webhook senders count as a failed
#: delivery (Stripe and Chargebee, for two, follow no redirect): a URL pasted with a slash
#: after it lost every event, retried until the sender gave up.
routes = [
    Route(PATH, receive_webhook, methods=["POST"]),
    Route(PATH + "/", receive_webhook, methods=["POST"]),
    Route(PATH, check_url, methods=["GET", "HEAD", "OPTIONS"]),
    Route(PATH + "/", check_url, methods=["GET", "HEAD", "OPTIONS"]),
]


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "integer"}}


_RETRY_AFTER = {"Retry-After": _header("Seconds to wait before sending again")}
_RATE_HEADERS = _RETRY_AFTER | {
    # draft-ietf-httpapi-ratelimit-headers-06
    "RateLimit-Limit": _header("Webhooks allowed per window (the tenant's burst)"),
    "RateLimit-Remaining": _header("Webhooks left in the current window"),
    "RateLimit-Reset": _header("Seconds until a webhook is allowed again"),
    "RateLimit-Policy": {
        "description": "The window: `<amount>;w=<seconds>`",
        "schema": {"type": "string"},
    },
}
_ACCEPTED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["execution_id", "status_url"],
    "properties": {
        "execution_id": {"type": "string"},
        "status_url": {"type": "string"},
        "duplicate": {"type": "boolean", "description": "Only on 200: always true"},
    },
}
_CHALLENGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Slack's url_verification answered: its challenge",
    "required": ["challenge"],
    "properties": {"challenge": {"type": "string"}},
}
_ZOOM_VALIDATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Zoom's endpoint.url_validation answered: its token, and that token's "
    "HMAC-SHA256 in hex keyed with the secret token",
    "required": ["plainToken", "encryptedToken"],
    "properties": {"plainToken": {"type": "string"}, "encryptedToken": {"type": "string"}},
}

_EVENT_GRID_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Azure Event Grid's subscription validation answered: its validationCode",
    "required": ["validationResponse"],
    "properties": {"validationResponse": {"type": "string"}},
}


OPENAPI_PATH: dict[str, Any] = {
    "post": {
        "tags": ["webhooks"],
        "summary": "Receive Webhook",
        "description": (
            "Public intake (the workflow id is the unguessable address). Any JSON, form or "
            "text body, in UTF-8 or the `charset` its Content-Type declares, gzip or deflate "
            "compressed or not. 202 only once the execution is committed.\n\n"
            "When the trigger has `auth`, the body (uncompressed) must be signed: Standard "
            "Webhooks (`webhook-id`, `webhook-timestamp` within 5 minutes, "
            "`webhook-signature`), one HMAC-SHA256 header (e.g. "
            "`X-Hub-Signature-256: sha256=<hex>`), Stripe's `Stripe-Signature`, Slack's "
            "`X-Slack-Signature`, Zoom's `x-zm-signature`, Twilio's `X-Twilio-Signature` or "
            "Square's `x-square-hmacsha256-signature` (those two over the URL called); else "
            "401.\n\n"
            "An `Idempotency-Key` or `webhook-id` header (or the trigger's "
            "`idempotency.body_path` / `idempotency.header`) makes a repeat within "
            "IPAAS_IDEMPOTENCY_WINDOW_S answer 200 with the first execution's id.\n\n"
            "A trigger's `response` answers accepted webhooks (and repeats) its own way "
            "instead: a status and a text body of its content type, or a redirect.\n\n"
            "Senders' unsigned checks of the URL are answered 200 and make no execution: "
            "Microsoft Graph's (`validationToken` in the query, no body: the token as text) "
            "and Azure Event Grid's (`aeg-event-type: SubscriptionValidation`: "
            '`{"validationResponse": <data.validationCode>}`).'
        ),
        "operationId": "receive_webhook",
        "parameters": [
            {"name": "workflow_id", "in": "path", "required": True, "schema": {"type": "string"}},
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "A repeat within the window answers 200 and creates nothing",
            },
        ],
        "requestBody": {
            "content": {
                "application/json": {"schema": {}},
                "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
                "multipart/form-data": {"schema": {"type": "object"}},
                "text/plain": {"schema": {"type": "string"}},
            }
        },
        "responses": {
            "200": {
                "description": "Duplicate: an earlier webhook with this idempotency key "
                "made this execution; nothing new was created. Or a sender's check of the "
                "URL answered (no execution): Slack's and Zoom's (signed, for a workflow "
                "whose `auth.scheme` is `slack` or `zoom`), Event Grid's, Microsoft Graph's "
                "(as text). Or, for a workflow whose `auth.scheme` is `slack` or `twilio`, "
                "an accepted webhook (new or a duplicate) acknowledged as that sender wants "
                "it: Slack's, an empty body; Twilio's, TwiML that does nothing (`text/xml`)",
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                _ACCEPTED_SCHEMA,
                                _CHALLENGE_SCHEMA,
                                _ZOOM_VALIDATION_SCHEMA,
                                _EVENT_GRID_SCHEMA,
                            ]
                        }
                    },
                    "text/plain": {"schema": {"type": "string"}},
                    "text/xml": {"schema": {"type": "string"}},
                },
            },
            "202": {
                "description": "Accepted: the execution is committed and queued",
                "content": {"application/json": {"schema": _ACCEPTED_SCHEMA}},
            },
            "2XX": {
                "description": "Accepted, answered with the trigger's `response` (its status, "
                "body and content type; 200 when it gives no status). With `response.wait_s`, "
                "once the execution succeeded, the body rendered over its steps' outputs "
                "(one expression that gives an object or a number: its JSON); not done "
                "within `wait_s`: 202 as above",
                "headers": {
                    "X-Execution-Id": {
                        "description": "The execution made (or found, for a repeat)",
                        "schema": {"type": "string"},
                    }
                },
                "content": {"*/*": {"schema": {"type": "string"}}},
            },
            "3XX": {
                "description": "Accepted, answered with the trigger's `response.redirect` "
                "(303 unless it gives 301, 302, 307 or 308)",
                "headers": {
                    "Location": {"description": "The redirect", "schema": {"type": "string"}},
                    "X-Execution-Id": {
                        "description": "The execution made (or found, for a repeat)",
                        "schema": {"type": "string"},
                    },
                },
            },
            "401": _error(
                "Signature missing (`signature_missing`), wrong (`signature_invalid`) or "
                "outside the 5-minute tolerance (`signature_expired`)"
            ),
            "404": _error("Unknown or inactive workflow"),
            "408": _error(
                "The body did not all arrive within IPAAS_BODY_READ_TIMEOUT_S of its first "
                "read (`body_timeout`); the connection is closed"
            ),
            "413": _error("Body larger than IPAAS_MAX_BODY_BYTES, as sent or once uncompressed"),
            "415": _error(
                "Multipart other than multipart/form-data, a body not valid in its "
                "charset, an unknown charset "
                "(`unknown_charset`) or a Content-Encoding other than gzip and deflate "
                "(`unsupported_content_encoding`)"
            ),
            "422": _error(
                "Body declared JSON (`invalid_json`) or a form (`invalid_form`) but invalid "
                "or of more than 1,000 fields, a query string of more than 1,000 fields "
                "(`invalid_query`), or a body not the gzip or deflate it declares "
                "(`invalid_content_encoding`)"
            ),
            "429": _error("Over the tenant's webhook rate (`rate_limited`)", _RATE_HEADERS),
            "502": _error(
                "Accepted, and the trigger's `response` waits for the execution "
                "(`response.wait_s`), which failed, timed out or was cancelled, or whose "
                "answer did not render (`execution_failed`; `details` names the execution)"
            ),
            "503": _error(
                "Queue over IPAAS_QUEUE_MAX_DEPTH (`queue_full`), the tenant's queued limit "
                "(`tenant_queue_full`), or the database unavailable (`store_unavailable`)",
                _RETRY_AFTER,
            ),
        },
    },
    "get": {
        "tags": ["webhooks"],
        "summary": "Check Url",
        "description": (
            "Senders' checks of the URL only, for an active webhook workflow; nothing is "
            "stored. Meta's subscription check (WhatsApp, Messenger, Instagram): "
            "`hub.challenge` as text when `hub.verify_token` is the `verify_token` of the "
            "workflow's signing credential. Dropbox's: `challenge` as text. Okta's: the "
            '`X-Okta-Verification-Challenge` header as `{"verification": ...}`. Any other '
            "GET is a 405: webhooks are POSTed."
        ),
        "operationId": "check_url",
        "parameters": [
            {"name": "workflow_id", "in": "path", "required": True, "schema": {"type": "string"}},
            # Meta sends all three; Dropbox challenge alone; Okta a header.
            {
                "name": "hub.mode",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["subscribe"]},
            },
            {
                "name": "hub.verify_token",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
            },
            {
                "name": "hub.challenge",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 256},
            },
            {
                "name": "challenge",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 1024},
            },
            {
                "name": "X-Okta-Verification-Challenge",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 1024},
            },
        ],
        "responses": {
            "200": {
                "description": "The challenge, as sent: text, or Okta's JSON",
                "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["verification"],
                            "properties": {"verification": {"type": "string"}},
                        }
                    },
                },
            },
            "403": _error(
                "The workflow's credential has no verify_token (`verify_token_not_set`), or "
                "hub.verify_token is another (`verify_token_mismatch`)"
            ),
            "404": _error("Unknown or inactive workflow"),
            "405": _error("Not a check of the URL"),
            "422": _error(
                "hub.mode other than subscribe, or hub.challenge missing, given twice or "
                "too long (`invalid_subscription`); challenge given twice, empty or too long "
                "(`invalid_challenge`)"
            ),
        },
    },
    "options": {
        "tags": ["webhooks"],
        "summary": "Check Url Cloudevents",
        "description": (
            "CloudEvents' abuse protection (Azure Event Grid's CloudEvents schema): 200 with "
            "`WebHook-Allowed-Origin` (the origin asked for) and `WebHook-Allowed-Rate: *` "
            "for an active webhook workflow; nothing is stored. Without "
            "`WebHook-Request-Origin` an OPTIONS is a 405."
        ),
        "operationId": "check_url_cloudevents",
        "parameters": [
            {"name": "workflow_id", "in": "path", "required": True, "schema": {"type": "string"}},
            # Without it an OPTIONS is no check (a 405), as a GET without a check's fields.
            {
                "name": "WebHook-Request-Origin",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
            },
        ],
        "responses": {
            "200": {
                "description": "The origin may deliver",
                "headers": {
                    "WebHook-Allowed-Origin": {"schema": {"type": "string"}},
                    "WebHook-Allowed-Rate": {"schema": {"type": "string"}},
                },
            },
            "404": _error("Unknown or inactive workflow"),
            "405": _error("No WebHook-Request-Origin: not a check of the URL"),
            "422": _error("WebHook-Request-Origin is not a host name (`invalid_challenge`)"),
        },
    },
    "head": {
        "tags": ["webhooks"],
        "summary": "Check Url Exists",
        "description": (
            "200 with no body for an active webhook workflow (Trello asks so before it "
            "saves a webhook); nothing is stored."
        ),
        "operationId": "check_url_exists",
        "parameters": [
            {"name": "workflow_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": {"description": "The URL takes webhooks"},
            "404": _error("Unknown or inactive workflow (a HEAD answer has no body)"),
        },
    },
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
        }
    },
}
