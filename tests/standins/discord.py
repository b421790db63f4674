"""Discord: execute webhook, ``POST /api/webhooks/{id}/{token}`` (also ``/api/v10/...``).

Answers ``204`` (``200`` with the created message when ``?wait=true``), ``400`` JSON errors
with Discord's codes, ``404 Unknown Webhook`` for a non-numeric id or a token containing
``unknown``, and 429 / 500 / 503 for a token containing ``ratelimited`` / ``error500`` /
``unavailable``.

A token containing ``forum`` is a webhook of a forum channel: each message needs
``thread_name`` (a new post; ``applied_tags`` its tags) or ``?thread_id=`` (a reply), not
both (220001, 220002); elsewhere ``thread_name`` is refused (220003). ``flags`` may hold
only SUPPRESS_EMBEDS (4) and SUPPRESS_NOTIFICATIONS (4096).

``GET`` of a webhook URL is Get Webhook with Token: the webhook object, or ``404 Unknown
Webhook`` as above.
"""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.standins.routing import magic_status, recorded
from tests.standins.state import StandinState

MAX_CONTENT_CHARS = 2000
MAX_EMBEDS = 10
#: Discord's epoch (2015-01-01) for snowflake ids.
_DISCORD_EPOCH_MS = 1_420_070_400_000
_sequence = itertools.count()


def _snowflake() -> str:
    ms = int(time.time() * 1000) - _DISCORD_EPOCH_MS
    return str((ms << 22) | (next(_sequence) % 4096))


def _error(status: int, message: str, code: int, **extra: Any) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, **extra}, status)


def _too_long(field: str, limit: int) -> JSONResponse:
    detail = {"code": "BASE_TYPE_MAX_LENGTH", "message": f"Must be {limit} or fewer in length."}
    return _error(400, "Invalid Form Body", 50035, errors={field: {"_errors": [detail]}})


def _forced(request: Request, body: bytes, status: int, retry_after: float | None) -> Response:
    if status == 429:
        seconds = 1.5 if retry_after is None else retry_after
        headers = {
            # The header is whole seconds, rounded up; the JSON keeps the precision.
            "retry-after": str(int(-(-seconds // 1))),
            "x-ratelimit-limit": "5",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset-after": str(seconds),
            "x-ratelimit-scope": "shared",
        }
        content = {
            "message": "You are being rate limited.",
            "retry_after": seconds,
            "global": False,
        }
        return JSONResponse(content, 429, headers=headers)
    if status == 404:
        return _error(404, "Unknown Webhook", 10015)
    if status == 401:
        return _error(401, "Invalid Webhook Token", 50027)
    return JSONResponse({"message": f"{status}: Internal Server Error", "code": 0}, status)


def _content_error(payload: Any) -> JSONResponse | None:
    if not isinstance(payload, dict):
        return _error(400, "Invalid Form Body", 50035)
    content, embeds = payload.get("content"), payload.get("embeds")
    if content is not None and not isinstance(content, str):
        detail = {"code": "STRING_TYPE_CONVERT", "message": "Could not interpret as string."}
        return _error(400, "Invalid Form Body", 50035, errors={"content": {"_errors": [detail]}})
    if isinstance(content, str) and len(content) > MAX_CONTENT_CHARS:
        return _too_long("content", MAX_CONTENT_CHARS)
    if embeds is not None and (not isinstance(embeds, list) or len(embeds) > MAX_EMBEDS):
        return _too_long("embeds", MAX_EMBEDS)
    username = payload.get("username")
    if isinstance(username, str):
        problem = _username_error(username)
        if problem is not None:
            return _error(
                400, "Invalid Form Body", 50035, errors={"username": {"_errors": [problem]}}
            )
    # Discord trims content: whitespace alone is empty too.
    if not (content or "").strip() and not embeds:
        return _error(400, "Cannot send an empty message", 50006)
    return None


def _username_error(username: str) -> dict[str, str] | None:
    """Discord's own refusal of a webhook's username override (its Create Webhook docs and
    the errors it sends: ``clyde`` or ``discord`` anywhere, ``everyone`` or ``here``)."""
    for word in ("discord", "clyde"):
        if word in username.lower():
            return {
                "code": "USERNAME_INVALID_CONTAINS",
                "message": f'Username cannot contain "{word}"',
            }
    if username.strip().lower() in ("everyone", "here"):
        return {"code": "USERNAME_INVALID", "message": f'Username cannot be "{username.strip()}"'}
    return None


#: Message flags a webhook may set: SUPPRESS_EMBEDS, SUPPRESS_NOTIFICATIONS.
WEBHOOK_FLAGS = (1 << 2) | (1 << 12)


def _thread_error(payload: dict[str, Any], thread_id: str | None, forum: bool) -> Response | None:
    thread_name = payload.get("thread_name")
    if forum and thread_name and thread_id:
        message = "Webhooks posted to forum channels cannot have both a thread_name and thread_id"
        return _error(400, message, 220002)
    if forum and not (thread_name or thread_id):
        message = "Webhooks posted to forum channels must have a thread_name or thread_id"
        return _error(400, message, 220001)
    if not forum and thread_name:
        return _error(400, "Webhooks can only create threads in forum channels", 220003)
    flags = payload.get("flags", 0)
    if not isinstance(flags, int) or flags & ~WEBHOOK_FLAGS:
        detail = {"code": "MESSAGE_FLAGS_INVALID", "message": "Invalid message flags"}
        return _error(400, "Invalid Form Body", 50035, errors={"flags": {"_errors": [detail]}})
    return None


def _message(webhook_id: str, payload: dict[str, Any], thread_id: str | None) -> dict[str, Any]:
    return {
        "id": _snowflake(),
        "type": 0,
        "content": payload.get("content") or "",
        "channel_id": thread_id or "1100000000000000001",
        "author": {
            "bot": True,
            "id": webhook_id,
            "username": payload.get("username") or "Captain Hook",
            "avatar": None,
            "discriminator": "0000",
        },
        "attachments": [],
        "embeds": payload.get("embeds") or [],
        "mentions": [],
        "mention_roles": [],
        "pinned": False,
        "mention_everyone": False,
        "tts": bool(payload.get("tts", False)),
        "timestamp": datetime.now(UTC).isoformat(),
        "edited_timestamp": None,
        "flags": 0,
        "components": [],
        "webhook_id": webhook_id,
    }


def routes(state: StandinState) -> list[Route]:
    async def execute(request: Request, body: bytes) -> Response:
        webhook_id = request.path_params["webhook_id"]
        token = request.path_params["token"]
        forced = magic_status(token)
        if forced is not None:
            return _forced(request, body, forced, None)
        if not webhook_id.isdigit() or "unknown" in token.lower():
            return _error(404, "Unknown Webhook", 10015)
        try:
            payload = json.loads(body)
        except ValueError:
            return _error(400, "The request body contains invalid JSON.", 50109)
        thread_id = request.query_params.get("thread_id")
        problem = _content_error(payload) or _thread_error(
            payload, thread_id, "forum" in token.lower()
        )
        if problem is not None:
            return problem
        key = payload.get("content") or json.dumps(payload.get("embeds"), sort_keys=True)
        state.deliver("discord", key)
        if request.query_params.get("wait", "").lower() in ("true", "1"):
            # A new forum post is a thread whose id is its first message's.
            channel = _snowflake() if payload.get("thread_name") else thread_id
            return JSONResponse(_message(webhook_id, payload, channel))
        return Response(status_code=204)

    async def get_webhook(request: Request, body: bytes) -> Response:
        """Get Webhook with Token: the webhook object, without its ``user``."""
        webhook_id = request.path_params["webhook_id"]
        token = request.path_params["token"]
        if not webhook_id.isdigit() or "unknown" in token.lower():
            return _error(404, "Unknown Webhook", 10015)
        return JSONResponse(
            {
                "type": 1,
                "id": webhook_id,
                "name": "Stand-in Hook",
                "avatar": None,
                "channel_id": "199737254929760256",
                "guild_id": "199737254929760256",
                "application_id": None,
                "token": token,
            }
        )

    paths = (
        "/api/webhooks/{webhook_id}/{token}",
        "/api/v{version:int}/webhooks/{webhook_id}/{token}",
    )
    return [recorded(state, "discord", path, execute, _forced) for path in paths] + [
        recorded(state, "discord_get", path, get_webhook, _forced, ["GET"]) for path in paths
    ]
