"""Zendesk's webhook signatures: ``base64(HMACSHA256(TIMESTAMP + BODY))`` as its docs
("Verifying webhook authenticity") write it, under ``X-Zendesk-Webhook-Signature`` and
``X-Zendesk-Webhook-Signature-Timestamp``."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from ipaas.runtime import Runtime
from tests.webhooks.conftest import NewWorkflow, executions_of
from tests.webhooks.test_signatures import assert_refused, signed_workflow

SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="  # Zendesk's own secret for tests
BODY = b'{"type": "zen:event-type:ticket.created", "detail": {"id": "35436"}}'


def zendesk_headers(stamp: str, body: bytes = BODY, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).digest()
    return {
        "content-type": "application/json",
        "X-Zendesk-Webhook-Signature": base64.b64encode(digest).decode(),
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
    }


def now_iso(offset_s: float = 0) -> str:
    at = datetime.now(UTC) + timedelta(seconds=offset_s)
    return at.replace(microsecond=0).isoformat().replace("+00:00", "Z")


@pytest.fixture
async def workflow_id(
    client: httpx.AsyncClient, auth: dict[str, str], new_workflow: NewWorkflow
) -> str:
    return await signed_workflow(client, auth, new_workflow, "zendesk", {"secret": SECRET})


async def test_a_ticket_event_is_taken(
    client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
) -> None:
    url = f"/api/webhooks/{workflow_id}"
    response = await client.post(url, content=BODY, headers=zendesk_headers(now_iso()))
    assert response.status_code == 202, response.text
    (stored,) = executions_of(runtime, workflow_id)
    assert stored.trigger.body["detail"]["id"] == "35436"
    assert stored.trigger.headers["x-zendesk-webhook-signature"] == "***"


# Built when the test runs (lambdas): a time taken at collection could be 5 minutes old.
@pytest.mark.parametrize(
    ("headers", "code"),
    [
        (lambda: {"content-type": "application/json"}, "signature_missing"),
        (lambda: zendesk_headers(now_iso(), secret="another-secret-0000"), "signature_invalid"),
        (lambda: zendesk_headers(now_iso(), body=b"{}"), "signature_invalid"),
        (lambda: zendesk_headers("yesterday"), "signature_invalid"),
        (lambda: zendesk_headers(now_iso(-3600)), "signature_expired"),
        (lambda: zendesk_headers(now_iso(+3600)), "signature_expired"),
    ],
)
async def test_anything_else_is_refused(
    client: httpx.AsyncClient,
    runtime: Runtime,
    workflow_id: str,
    headers: Callable[[], dict[str, str]],
    code: str,
) -> None:
    url = f"/api/webhooks/{workflow_id}"
    response = await client.post(url, content=BODY, headers=headers())
    assert_refused(response, runtime, workflow_id, code)
