"""Filters templates have beyond Jinja's own: dates, base64, JSON text read, digests.

- ``date(format=None, tz=None)``: a date-time as text. It reads an ISO 8601 date-time or
  date (``2026-12-07T05:30:00Z``, ``2026-12-07``), Unix seconds (a number, or a string of
  one, as Stripe and Slack send them) or an RFC 2822 date (HTTP's ``Date`` header, email);
  one without an offset is UTC. ``tz`` is an IANA time zone to show it in; ``format`` a
  ``strftime`` format, else ISO 8601 (``Z`` for UTC). A missing field or ``null`` is
  nothing, as everywhere in text. Milliseconds: ``{{ (ms / 1000) | date }}``.
- ``b64encode`` / ``b64decode``: UTF-8 text to standard base64 and back (GitHub's contents
  API, Basic credentials built from trigger data).
- ``fromjson``: JSON text to its value, for JSON a sender puts inside a form field (Slack's
  interactivity ``payload``, SendGrid's ``envelope``, Mailgun's ``message-headers``):
  ``{{ (trigger.body.payload | fromjson).user.id }}``. An object or a list is itself; a
  missing field or ``null`` is ``null``.

- ``md5`` / ``sha1`` / ``sha256``: the hex digest of UTF-8 text (or a number, as text), for
  the APIs that address a record by one: Mailchimp's member is the MD5 of the lowercase
  email (``{{ trigger.body.email | lower | md5 }}``), Gravatar's too; a stable key made of
  a payload (``{{ trigger.body | tojson | sha256 }}``). Not for secrets: a template's
  text is not one.

There is no ``now()``: a step renders again on each retry, and a template's value should
not change between attempts. ``execution.created_at`` is when the execution began.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Undefined

from ipaas.kit import jsontext

_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")
#: URL-safe base64's two letters, as the standard alphabet has them.
_URL_SAFE = str.maketrans("-_", "+/")


def date(value: Any, format: str | None = None, tz: str | None = None) -> str:
    """See the module docstring."""
    if value is None or isinstance(value, Undefined):
        return ""
    instant = _instant(value)
    if tz is not None:
        instant = instant.astimezone(_zone(tz))
    if format is None:
        text = instant.isoformat()
        return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text
    if not isinstance(format, str):
        msg = f"date: the format must be text, such as '%Y-%m-%d', not {format!r}"
        raise TypeError(msg)
    return instant.strftime(format)


def _instant(value: Any) -> datetime:
    if isinstance(value, bool):
        msg = f"date: cannot read {value!r} as a date-time"
        raise ValueError(msg)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            msg = f"date: {value!r} seconds is out of range"
            raise ValueError(msg) from None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = _parsed(value.strip())
    else:
        msg = f"date: cannot read {type(value).__name__} as a date-time"
        raise ValueError(msg)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _parsed(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        # The message shows the start of the value only: it came from a payload.
        shown = text if len(text) <= 40 else text[:40] + "..."
        msg = f"date: cannot read {shown!r} as a date-time (ISO 8601, Unix seconds or RFC 2822)"
        raise ValueError(msg) from None


def _zone(name: Any) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError, OSError):
        msg = f"date: unknown time zone {name!r} (an IANA name, such as 'Europe/Berlin')"
        raise ValueError(msg) from None


def b64encode(value: Any) -> str:
    """UTF-8 text (or a number, as text) in standard base64."""
    if value is None or isinstance(value, Undefined):
        return ""
    return base64.b64encode(str(value).encode()).decode("ascii")


def b64decode(value: Any) -> str:
    """Standard or URL-safe base64 (padding optional) back to its UTF-8 text."""
    if value is None or isinstance(value, Undefined):
        return ""
    text = str(value).strip().translate(_URL_SAFE)
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True).decode()
    except (binascii.Error, ValueError):
        msg = "b64decode: not base64 text that decodes to UTF-8"
        raise ValueError(msg) from None


def fromjson(value: Any) -> Any:
    """See the module docstring. Strict JSON (no NaN), as the store keeps values."""
    if value is None or isinstance(value, Undefined):
        return None
    if isinstance(value, dict | list):
        return value
    if not isinstance(value, str | bytes):
        msg = f"fromjson: reads JSON text, not {type(value).__name__}"
        raise TypeError(msg)
    try:
        return jsontext.loads(value)
    except jsontext.JsonError as exc:
        msg = f"fromjson: not JSON text ({exc})"
        raise ValueError(msg) from None


def _digest(name: str) -> Callable[[Any], str]:
    def digest(value: Any) -> str:
        """See the module docstring."""
        if value is None or isinstance(value, Undefined):
            return ""
        return hashlib.new(name, str(value).encode(), usedforsecurity=False).hexdigest()

    digest.__name__ = name
    return digest


FILTERS: dict[str, Callable[..., Any]] = {
    "date": date,
    "b64encode": b64encode,
    "b64decode": b64decode,
    "fromjson": fromjson,
    "md5": _digest("md5"),
    "sha1": _digest("sha1"),
    "sha256": _digest("sha256"),
}
