"""Signing the calls of ``http`` credentials with a ``signing`` secret, so the receiver can
tell they came from here, unchanged: how a platform delivers its own webhooks (Svix,
Stripe, GitHub), here for the workflows that forward events to a customer's endpoint.

- ``standard_webhooks`` (standardwebhooks.com, the spec's reference library signs):
  ``webhook-id`` (``msg_<execution id>_<step id>``: the same in every attempt and retry of
  the step, which receivers dedupe by; a replay is a new execution and a new id),
  ``webhook-timestamp`` (the attempt's, in seconds) and ``webhook-signature``
  (``v1,<base64 HMAC-SHA256 of id.timestamp.body>``, keyed with the ``whsec_`` secret).
- ``hmac_sha256``: one header (``X-Hub-Signature-256: sha256=<hex>`` by default, GitHub's),
  the HMAC-SHA256 of the body, in hex or base64: what ``hmac_sha256`` verifies on a
  webhook trigger here, and most receivers' own check.

The signature covers the body exactly as sent (``request.content``, after the JSON or form
is encoded); headers the step sets under the same names are replaced.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from ipaas.engine.connectors.base import ConnectorError

STANDARD_WEBHOOKS = "standard_webhooks"
HMAC_SHA256 = "hmac_sha256"
#: ``hmac_sha256``'s defaults: GitHub's header, prefix and encoding.
HMAC_DEFAULTS = {"header": "X-Hub-Signature-256", "prefix": "sha256=", "encoding": "hex"}


def message_id(execution_id: str, step_id: str) -> str:
    """The ``webhook-id`` of a step's call: one per step of an execution."""
    return f"msg_{execution_id}_{step_id}"


def sign(
    request: httpx.Request, signing: Mapping[str, Any], *, message_id: str, now: float
) -> None:
    """Add the signature headers ``signing`` asks for to ``request``."""
    body = request.content
    secret = str(signing["secret"])
    if signing["scheme"] == STANDARD_WEBHOOKS:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            msg = "a Standard Webhooks signature covers a UTF-8 body; this one is not"
            raise ConnectorError(msg, retryable=False) from None
        stamp = int(now)
        signature = Webhook(secret).sign(message_id, datetime.fromtimestamp(stamp, UTC), text)
        request.headers["webhook-id"] = message_id
        request.headers["webhook-timestamp"] = str(stamp)
        request.headers["webhook-signature"] = signature
        return
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    encoding = signing.get("encoding") or HMAC_DEFAULTS["encoding"]
    value = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode("ascii")
    prefix = signing.get("prefix")
    prefix = HMAC_DEFAULTS["prefix"] if prefix is None else prefix
    request.headers[signing.get("header") or HMAC_DEFAULTS["header"]] = f"{prefix}{value}"
