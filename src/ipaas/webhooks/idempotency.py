"""Which key makes a webhook a duplicate: a configured source, else ``Idempotency-Key``,
else ``webhook-id`` (Standard Webhooks says to use it so)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from ipaas.workflows.models import IdempotencySource

#: Keeps these keys apart from the scheduler's ``schedule:<tick>`` keys.
PREFIX = "idem:"
#: Longer keys are stored as a digest (the column holds 255 characters).
MAX_PLAIN = 200
HEADERS = ("idempotency-key", "webhook-id")


def dedup_key(
    source: IdempotencySource | None, headers: Mapping[str, str], body: object
) -> str | None:
    """The execution's ``dedup_key`` for this webhook, or ``None`` (no deduplication)."""
    raw: str | None = None
    if source is not None:
        if source.body_path is not None:
            raw = _at_path(body, source.body_path)
        elif source.header is not None:
            raw = headers.get(source.header) or None
    for name in HEADERS:
        if raw:
            break
        raw = headers.get(name) or None
    if not raw:
        return None
    if len(raw) > MAX_PLAIN:
        return f"{PREFIX}sha256:{hashlib.sha256(raw.encode()).hexdigest()}"
    return PREFIX + raw


def _at_path(body: object, path: str) -> str | None:
    """The string or integer at ``event.id`` / ``items.0.id``; ``None`` if absent."""
    value = body
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)
