"""Checks of a webhook URL that senders make, unsigned, before they send it a first event,
and the answers they wait for. Each is answered for an active webhook workflow only (any
other URL is a 404, as for an event), stores nothing and makes no execution; each answer
is text the sender gave (as ``text/plain`` with ``nosniff``, or in JSON), so it can carry
nothing of the workflow's.

- **Microsoft Graph** change notifications (Outlook, Teams, OneDrive, SharePoint): when a
  subscription is created, ``POST ?validationToken=...`` with no body, answered within 10 s
  with ``200`` and the token as ``text/plain``; until it is, the subscription is refused.
- **Azure Event Grid**: an event of type ``Microsoft.EventGrid.SubscriptionValidationEvent``
  (header ``aeg-event-type: SubscriptionValidation``), answered ``{"validationResponse":
  <its data.validationCode>}``.
- **Dropbox**: ``GET ?challenge=...``, answered with the challenge as ``text/plain``.
- **Okta** event hooks: ``GET`` with ``X-Okta-Verification-Challenge``, answered
  ``{"verification": <the header's value>}``.
- **Trello**: ``HEAD`` of the URL when a webhook is created, answered ``200``
  (``endpoints``).
- **CloudEvents** webhooks (Azure Event Grid's CloudEvents schema, and any sender of the
  spec's "HTTP 1.1 Web Hooks for Event Delivery"): ``OPTIONS`` with
  ``WebHook-Request-Origin``, answered ``200`` with ``WebHook-Allowed-Origin`` (that
  origin) and ``WebHook-Allowed-Rate: *``.

Meta's subscription check (``GET ?hub.mode=subscribe``) needs the workflow's verify token,
and Slack's and Zoom's are signed: ``service.confirm_subscription`` and
``signatures.handshake`` answer those.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ipaas.errors import ValidationFailed
from ipaas.kit import jsontext
from ipaas.webhooks.fields import query_values

#: The longest token or challenge echoed back.
MAX_CHALLENGE_CHARS = 1024
GRAPH_QUERY = "validationToken"
DROPBOX_QUERY = "challenge"
OKTA_HEADER = "x-okta-verification-challenge"
EVENT_GRID_HEADER = "aeg-event-type"
EVENT_GRID_VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
CLOUDEVENTS_ORIGIN = "webhook-request-origin"
MAX_ORIGIN_CHARS = 255
_HEADER_TOKEN = re.compile(rf"[\x21-\x7e]{{1,{MAX_ORIGIN_CHARS}}}")


@dataclass(frozen=True, slots=True)
class Challenge:
    """A sender's check of the URL, answered ``200`` with ``answer`` as JSON, or with
    ``text`` as ``text/plain``; no execution."""

    answer: Mapping[str, str] | None = None
    text: str | None = None


def post_check(query_string: bytes, headers: Mapping[str, str], body: bytes) -> Challenge | None:
    """The answer to a POST that is Microsoft Graph's or Event Grid's check of the URL;
    ``None`` for any other POST (an event)."""
    if not body and GRAPH_QUERY.encode() in query_string:
        token = query_values(query_string).get(GRAPH_QUERY)
        if token is not None:
            return Challenge(text=_echoed(GRAPH_QUERY, token))
    if headers.get(EVENT_GRID_HEADER, "").lower() == "subscriptionvalidation":
        code = _event_grid_code(body)
        if code is not None:
            return Challenge(answer={"validationResponse": _echoed("validationCode", code)})
    return None


def get_check(query: Mapping[str, Any], headers: Mapping[str, str]) -> Challenge | None:
    """The answer to a GET that is Dropbox's or Okta's check of the URL; ``None`` for any
    other GET (a 405: webhooks are POSTed)."""
    if DROPBOX_QUERY in query:
        return Challenge(text=_echoed(DROPBOX_QUERY, query[DROPBOX_QUERY]))
    challenge = headers.get(OKTA_HEADER)
    if challenge is not None:
        return Challenge(answer={"verification": _echoed(OKTA_HEADER, challenge)})
    return None


def options_check(headers: Mapping[str, str]) -> dict[str, str] | None:
    """The headers that answer a CloudEvents abuse-protection check (an ``OPTIONS`` with
    ``WebHook-Request-Origin``); ``None`` for any other ``OPTIONS``."""
    origin = headers.get(CLOUDEVENTS_ORIGIN)
    if origin is None:
        return None
    # Sent back in a header: one token of visible ASCII (a host name), nothing that could
    # end the header or start another.
    if not _HEADER_TOKEN.fullmatch(origin):
        msg = f"WebHook-Request-Origin must be a host name, 1 to {MAX_ORIGIN_CHARS} characters"
        raise ValidationFailed(msg, code="invalid_challenge")
    return {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*", "Allow": "POST"}


def _echoed(name: str, value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CHALLENGE_CHARS:
        msg = f"{name} must be given once, 1 to {MAX_CHALLENGE_CHARS} characters"
        raise ValidationFailed(msg, code="invalid_challenge")
    return value


def _event_grid_code(body: bytes) -> Any:
    """The ``validationCode`` of an Event Grid validation event (a JSON array of events, the
    first of which is the validation), or ``None``: not one, taken as an event."""
    events: Any = None
    with contextlib.suppress(jsontext.JsonError):
        events = jsontext.loads(body)
    if isinstance(events, dict):
        events = [events]
    if not isinstance(events, list) or not events or not isinstance(events[0], dict):
        return None
    event = events[0]
    data = event.get("data")
    if event.get("eventType") != EVENT_GRID_VALIDATION or not isinstance(data, dict):
        return None
    return data.get("validationCode", "")
