"""Keeping secret values out of records, logs and responses."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

MASK = "***"

#: Header names whose values are credentials whatever their content.
SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-hub-signature-256",
        "webhook-signature",
        "stripe-signature",
        "x-slack-signature",
        "x-zm-signature",
        "x-twilio-signature",
        "x-square-hmacsha256-signature",
        "x-gitlab-token",
        "x-hubspot-signature-v3",
        "x-zendesk-webhook-signature",
    }
)

#: Query parameter / JSON key names that carry secrets (OpenWeather's ``appid``...).
SENSITIVE_KEYS = frozenset(
    {"appid", "api_key", "apikey", "token", "access_token", "password", "secret", "bot_token"}
)

_SENSITIVE_NAMES = SENSITIVE_KEYS | SENSITIVE_HEADERS

#: Secrets shorter than this are not scrubbed from free text: too likely to hit innocent words.
_MIN_SCRUB_LEN = 6


class Secret:
    """Holds a secret value whose repr and str never show it (after starlette's ``Secret``)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}('**********')"

    __str__ = __repr__

    def get(self) -> str:
        return self._value


def mask_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: (MASK if k.lower() in SENSITIVE_HEADERS else v) for k, v in headers.items()}


class Redactor:
    """Replaces known secret values anywhere in a JSON-like value or string."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted(
            {s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SCRUB_LEN},
            key=len,
            reverse=True,
        )

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                k: (MASK if str(k).lower() in _SENSITIVE_NAMES and v else self(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value


#: Credential fields that configure where a call goes rather than prove who makes it.
NON_SECRET_FIELDS = frozenset({"base_url"})


def secret_strings(value: Any) -> list[str]:
    """Every string leaf of a credential's secret, so it can be scrubbed from text, and the
    ``Authorization: Basic`` token made of a ``basic`` pair. Of the fields that say where a
    call goes (``base_url``), only the password a URL may carry (``https://user:pw@host``)
    and the Basic token the HTTP client makes of it."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        found = [
            s
            for k, v in value.items()
            for s in (_url_passwords(v) if k in NON_SECRET_FIELDS else secret_strings(v))
        ]
        basic = value.get("basic")
        if isinstance(basic, dict):
            found.append(basic_token(basic.get("username"), basic.get("password")))
        return found
    if isinstance(value, list | tuple):
        return [s for v in value for s in secret_strings(v)]
    return []


def basic_token(username: Any, password: Any) -> str:
    """The token of ``Authorization: Basic`` for a user and password."""
    pair = f"{username or ''}:{password or ''}".encode()
    return base64.b64encode(pair).decode("ascii")


def _url_passwords(value: Any) -> list[str]:
    from urllib.parse import unquote, urlsplit

    if not isinstance(value, str) or "@" not in value:
        return []
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:  # not a URL (an invalid port, a stray bracket): nothing to take
        return []
    if not password:
        return []
    plain = unquote(password)
    return sorted({password, plain, basic_token(unquote(parts.username or ""), plain)})


def _without_password(netloc: str) -> str:
    """``user:password@host`` -> ``user:***@host``."""
    userinfo, at, host = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return netloc
    return f"{userinfo.partition(':')[0]}:{MASK}@{host}"


def without_password(url: str) -> str:
    """``url`` with the password of its ``user:password@`` as ``***``, nothing else changed;
    for a URL that may not parse (a setting's value, shown in its error)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    end = min(ends, default=len(rest))
    return f"{scheme}{sep}{_without_password(rest[:end])}{rest[end:]}"


def mask_url(url: str, redactor: Redactor) -> str:
    """The URL with its password (``user:password@``), secret query values and secret paths
    (a webhook URL is its own secret) masked, keeping scheme and host so a reader still
    sees where it goes."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    parts = parts._replace(netloc=_without_password(parts.netloc))
    query = urlencode(
        [
            (k, MASK if k.lower() in _SENSITIVE_NAMES else redactor.text(v))
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    path = parts.path
    base = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    if redactor and redactor.text(base) != base and redactor.text(path) == path:
        # The secret spans host and path (a whole webhook URL): hide the path.
        path = "/" + MASK
    else:
        path = redactor.text(path)
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))
