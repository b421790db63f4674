"""HubSpot's v3 request signatures (``X-HubSpot-Signature-v3``): the method, the URL, the
body and ``X-HubSpot-Request-Timestamp``, HMAC-SHA256 with the app's client secret. The
vector is hubspot-api-python's own (``tests/spec/utils/test_signature.py``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import httpx
import pytest

from ipaas.runtime import Runtime
from ipaas.webhooks.signatures import SignatureRejected, verify
from ipaas.workflows.models import WebhookAuth
from tests.webhooks.conftest import NewWorkflow, executions_of
from tests.webhooks.test_signatures import signed_workflow

SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
BODY = b"{'example_field':'example_value'}"
URL = "https://www.example.com/webhook_uri"
STAMP = "15000000"  # milliseconds: 15,000 s after the epoch
SIGNATURE = "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="
AUTH = WebhookAuth.model_validate({"scheme": "hubspot", "credential_id": "cred_x"})


def check(url: str, signature: str, stamp: str = STAMP, *, now: float = 15_000.0) -> None:
    headers = {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": stamp}
    verify(AUTH, (SECRET,), BODY, {k: v for k, v in headers.items() if v}, now=now, url=lambda: url)


def test_hubspots_own_vector_verifies() -> None:
    check(URL, SIGNATURE)
    check(URL, SIGNATURE, now=15_000.0 + 299)  # within 5 minutes
    # HubSpot signs the URL with these escapes decoded.
    check(URL.replace("://", "%3A%2F%2F"), SIGNATURE)


@pytest.mark.parametrize(
    ("url", "signature", "stamp", "now", "code"),
    [
        (URL, "", STAMP, 15_000.0, "signature_missing"),
        (URL, SIGNATURE, "", 15_000.0, "signature_missing"),
        (URL, SIGNATURE, STAMP, 15_000.0 + 301, "signature_expired"),
        (URL, SIGNATURE, "soon", 15_000.0, "signature_invalid"),
        (URL + "2", SIGNATURE, STAMP, 15_000.0, "signature_invalid"),
        (URL, SIGNATURE, "15000001", 15_000.0, "signature_invalid"),
        (URL, "not base64!", STAMP, 15_000.0, "signature_invalid"),
    ],
)
def test_anything_else_is_refused(
    url: str, signature: str, stamp: str, now: float, code: str
) -> None:
    with pytest.raises(SignatureRejected) as caught:
        check(url, signature, stamp, now=now)
    assert caught.value.code == code


async def test_a_contact_event_through_the_api(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    new_workflow: NewWorkflow,
    runtime: Runtime,
) -> None:
    workflow_id = await signed_workflow(client, auth, new_workflow, "hubspot", {"secret": SECRET})
    url = f"http://ipaas.test/api/webhooks/{workflow_id}"
    body = b'[{"eventId": 100, "subscriptionType": "contact.creation", "objectId": 123}]'
    stamp = str(int(time.time() * 1000))
    digest = hmac.new(
        SECRET.encode(), b"POST" + url.encode() + body + stamp.encode(), hashlib.sha256
    )
    headers = {
        "content-type": "application/json",
        "X-HubSpot-Signature-v3": base64.b64encode(digest.digest()).decode(),
        "X-HubSpot-Request-Timestamp": stamp,
    }
    response = await client.post(url, content=body, headers=headers)
    assert response.status_code == 202, response.text
    (execution,) = executions_of(runtime, workflow_id)
    assert execution.trigger.body[0]["subscriptionType"] == "contact.creation"
    assert execution.trigger.headers["x-hubspot-signature-v3"] == "***"
    # The same, an hour later: a replay.
    headers["X-HubSpot-Request-Timestamp"] = str(int(stamp) - 3_600_000)
    response = await client.post(url, content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "signature_expired"
