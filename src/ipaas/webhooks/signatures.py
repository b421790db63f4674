"""Webhook authentication: Standard Webhooks, or one HMAC-SHA256 header, on the raw body.

Both compare in constant time (``hmac.compare_digest``) and accept either secret of a
credential being rotated. Nothing is parsed before the signature is checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

import structlog
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ipaas.errors import IpaasError
from ipaas.workflows.models import WebhookAuth, WebhookAuthScheme

_log = structlog.get_logger(__name__)

STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
#: The standardwebhooks package's messages for a timestamp outside its 5-minute tolerance.
_STALE = frozenset({"Message timestamp too old", "Message timestamp too new"})


class SignatureRejected(IpaasError):
    status_code = 401
    code = "signature_invalid"


def _rejected(code: str, message: str) -> SignatureRejected:
    return SignatureRejected(message, code=code)


def verify(
    auth: WebhookAuth, secrets: Sequence[str], body: bytes, headers: Mapping[str, str]
) -> None:
    """Raise ``SignatureRejected`` unless one of ``secrets`` signed ``body`` as ``auth``
    says. ``headers`` must look names up case-insensitively (Starlette's do)."""
    if not secrets:
        raise _rejected("signature_invalid", "The workflow's signing credential is gone")
    if auth.scheme is WebhookAuthScheme.standard_webhooks:
        _verify_standard(secrets, body, headers)
    else:
        _verify_hmac(auth, secrets, body, headers)


def _verify_standard(secrets: Sequence[str], body: bytes, headers: Mapping[str, str]) -> None:
    signed = {name: headers.get(name, "") for name in STANDARD_HEADERS}
    missing = [name for name, value in signed.items() if not value]
    if missing:
        raise _rejected("signature_missing", f"Missing header(s): {', '.join(missing)}")
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
    value = headers.get(auth.header, "")
    if not value:
        raise _rejected("signature_missing", f"Missing header {auth.header}")
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
    matched = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        # No early exit: the time does not tell which secret matched.
        matched |= hmac.compare_digest(expected, given)
    if not matched:
        raise _rejected("signature_invalid", "No matching signature")
