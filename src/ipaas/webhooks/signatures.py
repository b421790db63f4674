"""Webhook authentication on the raw body: Standard Webhooks, one HMAC-SHA256 header
(GitHub, Shopify), Stripe's ``Stripe-Signature``, Slack's ``X-Slack-Signature`` (which
Zoom's ``x-zm-signature`` copies), Twilio's ``X-Twilio-Signature`` (over the URL it
called and the form's fields), Square's ``x-square-hmacsha256-signature`` (over the URL
and the body), HubSpot's ``X-HubSpot-Signature-v3`` and Zendesk's
``X-Zendesk-Webhook-Signature``.

Each compares in constant time (``hmac.compare_digest``) and accepts either secret of a
credential being rotated; the schemes that sign a timestamp refuse one more than 5 minutes
off (``signature_expired``), so a captured request cannot be replayed later. Nothing is
parsed before the signature is checked, but for Microsoft Graph's ``clientState``, which is
in the body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

import structlog
from slack_sdk.signature import Clock, SignatureVerifier
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ipaas.errors import IpaasError
from ipaas.kit import jsontext
from ipaas.kit.secrets import MASK
from ipaas.webhooks.bodies import parse_body
from ipaas.webhooks.fields import MAX_FIELDS
from ipaas.workflows.models import WebhookAuth, WebhookAuthScheme

_log = structlog.get_logger(__name__)

STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
#: The standardwebhooks package's messages for a timestamp outside its 5-minute tolerance.
_STALE = frozenset({"Message timestamp too old", "Message timestamp too new"})
#: Stripe's and Slack's tolerance (both libraries' default), as Standard Webhooks'.
TOLERANCE_S = 300
STRIPE_DEFAULT_HEADER = "Stripe-Signature"
SLACK_HEADERS = ("x-slack-request-timestamp", "x-slack-signature")
ZOOM_HEADERS = ("x-zm-request-timestamp", "x-zm-signature")
TWILIO_HEADER = "X-Twilio-Signature"
SQUARE_HEADER = "x-square-hmacsha256-signature"
HUBSPOT_HEADERS = ("X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp")
ZENDESK_HEADERS = ("X-Zendesk-Webhook-Signature", "X-Zendesk-Webhook-Signature-Timestamp")
#: The escapes HubSpot decodes in the URL it signs (its docs, v3).
_HUBSPOT_DECODED = (
    ("%3A", ":"),
    ("%2F", "/"),
    ("%3F", "?"),
    ("%40", "@"),
    ("%21", "!"),
    ("%24", "$"),
    ("%27", "'"),
    ("%28", "("),
    ("%29", ")"),
    ("%2A", "*"),
    ("%2C", ","),
    ("%3B", ";"),
)


class SignatureRejected(IpaasError):
    status_code = 401
    code = "signature_invalid"


def _rejected(code: str, message: str) -> SignatureRejected:
    return SignatureRejected(message, code=code)


def verify(
    auth: WebhookAuth,
    secrets: Sequence[str],
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float | None = None,
    url: Callable[[], str] | None = None,
) -> None:
    """Raise ``SignatureRejected`` unless one of ``secrets`` signed ``body`` as ``auth``
    says. ``headers`` must look names up case-insensitively (Starlette's do). ``now``
    (Unix time; the clock's by default) is what Stripe's and Slack's timestamps are held
    to; ``url`` gives the URL the sender called, which Twilio signs."""
    if now is None:
        now = time.time()
    if not secrets:
        raise _rejected("signature_invalid", "The workflow's signing credential is gone")
    if auth.scheme is WebhookAuthScheme.standard_webhooks:
        _verify_standard(secrets, body, headers)
    elif auth.scheme is WebhookAuthScheme.stripe:
        _verify_stripe(secrets, body, headers, now=now, header=auth.header or STRIPE_DEFAULT_HEADER)
    elif auth.scheme is WebhookAuthScheme.slack:
        _verify_v0(secrets, body, headers, SLACK_HEADERS, now=now)
    elif auth.scheme is WebhookAuthScheme.zoom:
        _verify_v0(secrets, body, headers, ZOOM_HEADERS, now=now)
    elif auth.scheme is WebhookAuthScheme.twilio:
        _verify_twilio(secrets, body, headers, url() if url is not None else "")
    elif auth.scheme is WebhookAuthScheme.square:
        _verify_square(secrets, body, headers, url() if url is not None else "")
    elif auth.scheme is WebhookAuthScheme.token:
        _verify_token(auth, secrets, headers)
    elif auth.scheme is WebhookAuthScheme.microsoft_graph:
        _verify_client_state(secrets, body)
    elif auth.scheme is WebhookAuthScheme.hubspot:
        _verify_hubspot(secrets, body, headers, url() if url is not None else "", now=now)
    elif auth.scheme is WebhookAuthScheme.zendesk:
        _verify_zendesk(secrets, body, headers, now=now)
    else:
        _verify_hmac(auth, secrets, body, headers)


def _verify_standard(secrets: Sequence[str], body: bytes, headers: Mapping[str, str]) -> None:
    signed = dict(zip(STANDARD_HEADERS, _present(headers, *STANDARD_HEADERS), strict=True))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _rejected("signature_invalid", "Body is not UTF-8") from None
    for secret in secrets:
        try:
            verifier = Webhook(secret)
        except (ValueError, binascii.Error):
            _log.warning("webhook_secret_not_base64")
            continue
        try:
            verifier.verify(text, signed, json_parse=False)
        except WebhookVerificationError as exc:
            if str(exc) in _STALE:
                raise _rejected(
                    "signature_expired", "webhook-timestamp is more than 5 minutes off"
                ) from None
        except (ValueError, binascii.Error):  # a malformed signature list
            break
        else:
            return
    raise _rejected("signature_invalid", "No matching signature")


def _verify_hmac(
    auth: WebhookAuth, secrets: Sequence[str], body: bytes, headers: Mapping[str, str]
) -> None:
    assert auth.header is not None
    assert auth.prefix is not None
    (value,) = _present(headers, auth.header)
    if not value.startswith(auth.prefix):
        raise _rejected("signature_invalid", f"{auth.header} must start with {auth.prefix!r}")
    encoded = value[len(auth.prefix) :].strip()
    try:
        given = (
            bytes.fromhex(encoded)
            if auth.encoding == "hex"
            else base64.b64decode(encoded, validate=True)
        )
    except ValueError:  # binascii.Error is a ValueError
        raise _rejected("signature_invalid", f"{auth.header} is not {auth.encoding}") from None
    _signed_by(secrets, [body], [given], hashlib.sha256)


def _signed_by(
    secrets: Sequence[str],
    messages: Sequence[bytes],
    signatures: Sequence[bytes],
    digest: Callable[[], Any],
) -> None:
    """``signature_invalid`` unless one of ``signatures`` is the HMAC (``digest``) of one of
    ``messages`` keyed with one of ``secrets``. Every pair is compared, with no early exit:
    the time does not tell which secret matched."""
    matched = False
    for message in messages:
        for secret in secrets:
            expected = hmac.new(secret.encode(), message, digest).digest()
            for signature in signatures:
                matched |= hmac.compare_digest(expected, signature)
    if not matched:
        raise _rejected("signature_invalid", "No matching signature")


def _present(headers: Mapping[str, str], *names: str) -> list[str]:
    """The values of the headers ``names``; ``signature_missing`` naming those not sent."""
    values = [headers.get(name, "") for name in names]
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if len(names) == 1 and missing:
        raise _rejected("signature_missing", f"Missing header {missing[0]}")
    if missing:
        raise _rejected("signature_missing", f"Missing header(s): {', '.join(missing)}")
    return values


def _base64(value: str, header: str) -> bytes:
    """A signature sent in base64, or ``signature_invalid`` naming ``header``."""
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error is a ValueError
        raise _rejected("signature_invalid", f"{header} is not base64") from None


def _fresh(at: float, header: str, now: float) -> None:
    """``signature_expired`` when the signed time ``at`` (Unix seconds) is more than
    ``TOLERANCE_S`` away from ``now``."""
    if abs(now - at) > TOLERANCE_S:
        raise _rejected("signature_expired", f"{header} is more than 5 minutes off")


def _timestamp(value: str, header: str, now: float) -> int:
    """A signed Unix timestamp, refused when it is not one or is more than
    ``TOLERANCE_S`` away from ``now``."""
    try:
        at = int(value)
    except ValueError:
        raise _rejected("signature_invalid", f"{header} holds no Unix timestamp") from None
    _fresh(at, header, now)
    return at


def _verify_stripe(
    secrets: Sequence[str],
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float,
    header: str = STRIPE_DEFAULT_HEADER,
) -> None:
    """Stripe's scheme (docs "Verify webhook signatures", as its libraries do it):
    ``Stripe-Signature: t=<unix time>,v1=<hex>[,v1=<hex>...]``, each ``v1`` the
    HMAC-SHA256 of ``{t}.{body}`` keyed with the whole signing secret (``whsec_...``). Stripe
    sends several ``v1`` while an endpoint's secret is rolled; any one may match. Calendly
    signs the same way under ``Calendly-Webhook-Signature`` (``header``)."""
    (value,) = _present(headers, header)
    stamps: list[str] = []
    given: list[bytes] = []
    for item in value.split(","):
        key, _, part = item.strip().partition("=")
        if key == "t":
            stamps.append(part)
        elif key == "v1":
            try:
                given.append(bytes.fromhex(part))
            except ValueError:
                raise _rejected("signature_invalid", f"{header}'s v1 is not hex") from None
    if len(stamps) != 1 or not given:
        raise _rejected("signature_invalid", f"{header} must hold one t= and at least one v1=")
    at = _timestamp(stamps[0], f"{header}'s t", now)
    _signed_by(secrets, [str(at).encode() + b"." + body], given, hashlib.sha256)


def _verify_twilio(
    secrets: Sequence[str], body: bytes, headers: Mapping[str, str], url: str
) -> None:
    """Twilio's scheme (docs "Webhooks security", as its libraries check it):
    ``X-Twilio-Signature`` is the base64 HMAC-SHA1, keyed with the auth token, of the URL
    Twilio called (its query string included) followed by each form field's name and
    value, sorted by name and then value, with nothing between them. A JSON body is signed
    through the URL instead: its query holds ``bodySHA256``, the body's SHA-256 in hex, and
    no field follows. Twilio signs the URL with its default port or without it, not always
    the same way: both are tried, as its libraries do.

    No timestamp is signed, so a captured request can be sent again: the idempotency key
    (``idempotency.body_path``: ``MessageSid``, ``CallSid``) is what drops the repeat."""
    (given,) = _present(headers, TWILIO_HEADER)
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    fields: list[tuple[str, str]] = []
    if "bodySHA256" in query:
        digest = hashlib.sha256(body).hexdigest()
        if not hmac.compare_digest(digest, query["bodySHA256"]):
            raise _rejected("signature_invalid", "bodySHA256 is not the body's hash")
    elif body:
        try:
            fields = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise _rejected("signature_invalid", "The body is not a form Twilio signs") from None
    signed = "".join(name + value for name, value in sorted(fields))
    signature = _base64(given, TWILIO_HEADER)
    messages = [(candidate + signed).encode() for candidate in _with_and_without_port(parts)]
    _signed_by(secrets, messages, [signature], hashlib.sha1)


def _verify_square(
    secrets: Sequence[str], body: bytes, headers: Mapping[str, str], url: str
) -> None:
    """Square's scheme (docs "Validate notifications", as its SDKs check it):
    ``x-square-hmacsha256-signature`` is the base64 HMAC-SHA256, keyed with the
    subscription's signature key, of the notification URL followed by the body. No
    timestamp is signed: ``idempotency.body_path: event_id`` drops a repeat."""
    (given,) = _present(headers, SQUARE_HEADER)
    signature = _base64(given, SQUARE_HEADER)
    _signed_by(secrets, [url.encode() + body], [signature], hashlib.sha256)


def _verify_hubspot(
    secrets: Sequence[str], body: bytes, headers: Mapping[str, str], url: str, *, now: float
) -> None:
    """HubSpot's v3 (docs "Validating requests from HubSpot", as its Python client checks
    it): ``X-HubSpot-Signature-v3`` is the base64 HMAC-SHA256, keyed with the app's client
    secret, of ``POST``, the URL (with the characters HubSpot's docs list decoded), the
    body and ``X-HubSpot-Request-Timestamp`` (Unix milliseconds, refused when more than 5
    minutes off)."""
    signature, stamp = _present(headers, *HUBSPOT_HEADERS)
    try:
        millis = int(stamp)
    except ValueError:
        raise _rejected("signature_invalid", f"{HUBSPOT_HEADERS[1]} holds no time") from None
    _fresh(millis / 1000, HUBSPOT_HEADERS[1], now)
    given = _base64(signature, HUBSPOT_HEADERS[0])
    for escaped, char in _HUBSPOT_DECODED:
        url = url.replace(escaped, char).replace(escaped.lower(), char)
    _signed_by(secrets, [b"POST" + url.encode() + body + stamp.encode()], [given], hashlib.sha256)


def _verify_zendesk(
    secrets: Sequence[str], body: bytes, headers: Mapping[str, str], *, now: float
) -> None:
    """Zendesk's scheme (docs "Verifying webhook authenticity"):
    ``X-Zendesk-Webhook-Signature`` is the base64 HMAC-SHA256, keyed with the webhook's
    signing secret, of ``X-Zendesk-Webhook-Signature-Timestamp`` followed by the body. The
    timestamp is signed as sent; read as an ISO 8601 time (or Unix seconds), one more than
    5 minutes off is refused."""
    signature, stamp = _present(headers, *ZENDESK_HEADERS)
    try:
        at = (
            float(stamp)
            if stamp.isdigit()
            else datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        )
    except ValueError:
        raise _rejected("signature_invalid", f"{ZENDESK_HEADERS[1]} holds no time") from None
    _fresh(at, ZENDESK_HEADERS[1], now)
    given = _base64(signature, ZENDESK_HEADERS[0])
    _signed_by(secrets, [stamp.encode() + body], [given], hashlib.sha256)


def _verify_token(auth: WebhookAuth, secrets: Sequence[str], headers: Mapping[str, str]) -> None:
    """A header holding the secret itself, after ``prefix`` (GitLab's ``X-Gitlab-Token``):
    compared whole, in constant time. Nothing is signed: anyone who sees one request can
    send others, so it is for senders that offer nothing better, over HTTPS."""
    assert auth.header is not None
    (given,) = _present(headers, auth.header)
    matched = False
    for secret in secrets:
        expected = f"{auth.prefix or ''}{secret}".encode()
        matched |= hmac.compare_digest(expected, given.encode())
    if not matched:
        raise _rejected("signature_invalid", f"{auth.header} is not the workflow's token")


def _verify_client_state(secrets: Sequence[str], body: bytes) -> None:
    """Microsoft Graph's change and lifecycle notifications (docs "Receive change
    notifications through webhooks"): a JSON object whose ``value`` lists notifications,
    each carrying the ``clientState`` the subscription was created with. Every one must be
    the workflow's secret (or the one being rotated out), compared in constant time; a
    batch with one that is not is refused whole. The only scheme that reads the body
    before it is verified: the secret is in it."""
    try:
        payload = jsontext.loads(body)
    except jsontext.JsonError:
        raise _rejected("signature_missing", "Not a JSON change notification") from None
    notifications = payload.get("value") if isinstance(payload, dict) else None
    if not isinstance(notifications, list) or not notifications:
        raise _rejected("signature_missing", "No notifications in value")
    for notification in notifications:
        state = notification.get("clientState") if isinstance(notification, dict) else None
        if not isinstance(state, str) or not state:
            raise _rejected("signature_missing", "A notification has no clientState")
        matched = False
        for secret in secrets:
            matched |= hmac.compare_digest(secret.encode(), state.encode())
        if not matched:
            raise _rejected("signature_invalid", "A notification's clientState is not the secret")


def scrubbed(auth: WebhookAuth, body: Any) -> Any:
    """The parsed body to store, without the secret a scheme carries in it (Microsoft
    Graph's ``clientState``, masked as a secret header is); as it is for the others."""
    if auth.scheme is not WebhookAuthScheme.microsoft_graph or not isinstance(body, dict):
        return body
    notifications = body.get("value")
    if not isinstance(notifications, list):
        return body
    masked = [
        {**item, "clientState": MASK} if isinstance(item, dict) and "clientState" in item else item
        for item in notifications
    ]
    return {**body, "value": masked}


def _with_and_without_port(parts: SplitResult) -> tuple[str, str]:
    """The URL without its port and with it (the scheme's default when it has none)."""
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address, bracketed again
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    bare = urlunsplit(parts._replace(netloc=f"{prefix}{host}"))
    ported = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{port}"))
    return bare, ported


class _At(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def _verify_v0(
    secrets: Sequence[str],
    body: bytes,
    headers: Mapping[str, str],
    names: tuple[str, str],
    *,
    now: float,
) -> None:
    """Slack's scheme (docs "Verifying requests from Slack"), which Zoom's copies under
    other header names (``names``: the timestamp's, the signature's), checked by
    slack_sdk's own ``SignatureVerifier``: ``v0=<hex>``, the HMAC-SHA256 of
    ``v0:{timestamp}:{body}`` keyed with the app's signing secret (Zoom: secret token)."""
    stamp, signature = _present(headers, *names)
    _timestamp(stamp, names[0], now)
    clock = _At(now)
    matched = False
    for secret in secrets:
        try:
            verifier = SignatureVerifier(secret, clock)
        except ValueError:  # white space alone: signs nothing Slack sends
            continue
        matched |= verifier.is_valid(body, stamp, signature)
    if not matched:
        raise _rejected("signature_invalid", "No matching signature")


def handshake(
    auth: WebhookAuth,
    secrets: Sequence[str],
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, str],
) -> dict[str, str] | None:
    """The answer to a sender's signed check of the URL, for the schemes that have one
    (``None`` for any other request); called after ``verify``. A body that is not the
    check is an event like any other.

    - Slack's ``url_verification`` (sent when an app's Events API URL is saved):
      ``{"challenge": ...}`` as it sent it.
    - Zoom's ``endpoint.url_validation`` (sent when an endpoint is saved and every 72
      hours; docs "Validate your webhook endpoint"): the ``plainToken`` it sent and
      ``encryptedToken``, its HMAC-SHA256 in hex keyed with the secret token that signed
      the request (either, while one is rotated)."""
    if auth.scheme is WebhookAuthScheme.slack:
        check = _check_body(body, content_type, "type", "url_verification")
        challenge = check.get("challenge") if check is not None else None
        return {"challenge": challenge} if isinstance(challenge, str) else None
    if auth.scheme is not WebhookAuthScheme.zoom:
        return None
    check = _check_body(body, content_type, "event", "endpoint.url_validation")
    payload = check.get("payload") if check is not None else None
    token = payload.get("plainToken") if isinstance(payload, dict) else None
    if not isinstance(token, str):
        return None
    stamp, signature = (headers.get(name, "") for name in ZOOM_HEADERS)
    for secret in secrets:
        expected = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
        if expected is not None and hmac.compare_digest(expected, signature):
            encrypted = hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            return {"plainToken": token, "encryptedToken": encrypted}
    return None


def _check_body(
    body: bytes, content_type: str | None, key: str, value: str
) -> dict[str, object] | None:
    """The body's object when its ``key`` is ``value`` (parsed only when the value is
    somewhere in the bytes: an event is parsed once more, later, only if it names it)."""
    if value.encode() not in body:
        return None
    try:
        parsed = parse_body(body, content_type)
    except IpaasError:
        return None
    return parsed if isinstance(parsed, dict) and parsed.get(key) == value else None
