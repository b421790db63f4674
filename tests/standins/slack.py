"""Slack: incoming webhooks (``/services/T/B/X``), ``/api/chat.postMessage`` and
``/api/auth.test`` (who a token is: the same token words as ``chat.postMessage``).

Incoming webhooks answer ``200 ok`` or a plain-text error code with an HTTP status;
``chat.postMessage`` answers HTTP 200 with ``{"ok": true|false, ...}`` (429 when rate limited).
A hook path or channel containing a trigger word fails like Slack would:

- hook path: ``unknown`` -> 404 ``no_service``, ``channel_not_found`` -> 404,
  ``archived`` -> 410 ``channel_is_archived``, ``prohibited`` -> 403 ``action_prohibited``,
  ``invalid_token`` -> 403, ``ratelimited`` -> 429, ``error500`` -> 500, ``unavailable`` -> 503;
- channel: ``unknown`` / ``not_found`` -> ``channel_not_found``, ``archived`` ->
  ``is_archived``, ``internal_error`` -> ``internal_error``, ``ratelimited`` -> HTTP 429;
- bot token: missing -> ``not_authed``, not ``xoxb-``/``xoxp-`` or containing ``invalid`` /
  ``revoked`` -> ``invalid_auth``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.standins.routing import magic_status, recorded, retry_after_header
from tests.standins.state import StandinState

MAX_TEXT_CHARS = 40_000
MAX_BLOCKS = 50

#: Hook path words and the plain-text error Slack's webhook answers for them.
_HOOK_ERRORS = {
    "unknown": (404, "no_service"),
    "channel_not_found": (404, "channel_not_found"),
    "archived": (410, "channel_is_archived"),
    "prohibited": (403, "action_prohibited"),
    "invalid_token": (403, "invalid_token"),
}
_STATUS_TEXT = {
    400: "invalid_payload",
    403: "action_prohibited",
    404: "no_service",
    410: "channel_is_archived",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}
_TEAM_ID, _BOT_ID, _APP_ID, _USER_ID = "T0STANDIN1", "B0STANDIN1", "A0STANDIN1", "U0STANDIN1"
_ts_counter = itertools.count()


def _text(status: int, text: str, retry_after: float | None = None) -> Response:
    headers = retry_after_header(retry_after) if status in (429, 503) else None
    return PlainTextResponse(text, status, headers=headers, media_type="text/html")


def _payload(request: Request, body: bytes) -> dict[str, Any] | None:
    """The message, from a JSON body or a form's ``payload`` field; ``None`` if unreadable."""
    raw: bytes | str = body
    if "application/x-www-form-urlencoded" in request.headers.get("content-type", ""):
        form = parse_qs(body.decode("utf-8", "replace"))
        raw = (form.get("payload") or [""])[0]
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _content_error(payload: dict[str, Any]) -> str | None:
    """Slack's error code for a message it would not post."""
    text, blocks = payload.get("text"), payload.get("blocks")
    if not text and not blocks and not payload.get("attachments"):
        return "no_text"
    if text is not None and not isinstance(text, str):
        return "invalid_payload"
    if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
        return "msg_too_long"
    if blocks is not None and (
        not isinstance(blocks, list)
        or len(blocks) > MAX_BLOCKS
        or not all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks)
    ):
        return "invalid_blocks"
    return None


def _message_key(payload: dict[str, Any]) -> str:
    text = payload.get("text")
    return text if isinstance(text, str) and text else json.dumps(payload, sort_keys=True)


def _webhook_error(
    request: Request, body: bytes, status: int, retry_after: float | None
) -> Response:
    return _text(status, _STATUS_TEXT.get(status, "error"), retry_after)


def _api_error(request: Request, body: bytes, status: int, retry_after: float | None) -> Response:
    headers = retry_after_header(retry_after) if status in (429, 503) else None
    error = "ratelimited" if status == 429 else "internal_error"
    return JSONResponse({"ok": False, "error": error}, status, headers=headers)


def _channel_id(channel: str) -> str:
    if channel[:1] in ("C", "G", "D") and channel.isalnum() and channel.isupper():
        return channel
    return "C" + hashlib.sha256(channel.encode()).hexdigest()[:10].upper()


def _ts() -> str:
    # Unique per message, like Slack's: seconds plus a six-digit sequence.
    return f"{int(time.time())}.{next(_ts_counter) % 1_000_000:06d}"


def routes(state: StandinState) -> list[Route]:
    async def webhook(request: Request, body: bytes) -> Response:
        hook = request.url.path.lower()
        forced = magic_status(hook)
        if forced is not None:
            return _webhook_error(request, body, forced, None)
        for word, (status, error) in _HOOK_ERRORS.items():
            if word in hook:
                return _text(status, error)
        payload = _payload(request, body)
        if payload is None:
            return _text(400, "invalid_payload")
        problem = _content_error(payload)
        if problem is not None:
            return _text(400, problem)
        state.deliver("slack", _message_key(payload))
        return _text(200, "ok")

    async def post_message(request: Request, body: bytes) -> Response:
        authorization = request.headers.get("authorization", "")
        token = authorization.removeprefix("Bearer ").strip() if authorization else ""
        content_type = request.headers.get("content-type", "")
        if "json" in content_type:
            try:
                payload = json.loads(body)
            except ValueError:
                return JSONResponse({"ok": False, "error": "invalid_json"})
        else:
            form = parse_qs(body.decode("utf-8", "replace"))
            payload = {k: v[0] for k, v in form.items()}
            token = token or payload.pop("token", "")
        if not isinstance(payload, dict):
            return JSONResponse({"ok": False, "error": "invalid_arguments"})
        if not token:
            return JSONResponse({"ok": False, "error": "not_authed"})
        if not token.startswith(("xoxb-", "xoxp-")) or any(
            word in token for word in ("invalid", "revoked")
        ):
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        channel = str(payload.get("channel") or "")
        lowered = channel.lower()
        if magic_status(lowered) is not None:
            return _api_error(request, body, magic_status(lowered) or 500, None)
        if not channel or "unknown" in lowered or "not_found" in lowered:
            return JSONResponse({"ok": False, "error": "channel_not_found"})
        if "archived" in lowered:
            return JSONResponse({"ok": False, "error": "is_archived"})
        if "internal_error" in lowered:
            return JSONResponse({"ok": False, "error": "internal_error"})
        error = _content_error(payload)
        if error is not None:
            return JSONResponse({"ok": False, "error": error})
        state.deliver("slack", _message_key(payload))
        ts = _ts()
        message: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "text": payload.get("text", ""),
            "user": _USER_ID,
            "bot_id": _BOT_ID,
            "app_id": _APP_ID,
            "team": _TEAM_ID,
            "ts": ts,
        }
        for key in ("blocks", "attachments", "thread_ts", "username"):
            if payload.get(key) is not None:
                message[key] = payload[key]
        answer: dict[str, Any] = {
            "ok": True,
            "channel": _channel_id(channel),
            "ts": ts,
            "message": message,
        }
        if "json" in content_type and "charset" not in content_type:
            answer["warning"] = "missing_charset"
            answer["response_metadata"] = {"warnings": ["missing_charset"]}
        return JSONResponse(answer)

    async def auth_test(request: Request, body: bytes) -> Response:
        """``auth.test``: who the token is (Slack's own check of a token)."""
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not token:
            return JSONResponse({"ok": False, "error": "not_authed"})
        if not token.startswith(("xoxb-", "xoxp-")) or any(
            word in token for word in ("invalid", "revoked")
        ):
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        return JSONResponse(
            {
                "ok": True,
                "url": "https://standin.slack.com/",
                "team": "Stand-in Team",
                "user": "standin-bot",
                "team_id": _TEAM_ID,
                "user_id": _USER_ID,
                "bot_id": _BOT_ID,
            }
        )

    return [
        recorded(state, "slack_auth_test", "/api/auth.test", auth_test, _api_error),
        recorded(state, "slack_webhook", "/services/{path:path}", webhook, _webhook_error),
        recorded(state, "slack_api", "/api/chat.postMessage", post_message, _api_error),
    ]
