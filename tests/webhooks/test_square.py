"""Square's webhook signatures (``x-square-hmacsha256-signature``): the notification URL
followed by the body, HMAC-SHA256 with the subscription's signature key. The vector is
square-python-sdk's own (``tests/utilities/test_webhooks_helper.py``)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import httpx
import pytest

from ipaas.runtime import Runtime
from ipaas.webhooks.signatures import SignatureRejected, verify
from ipaas.workflows.models import WebhookAuth
from tests.webhooks.conftest import NewWorkflow, executions_of
from tests.webhooks.test_signatures import assert_refused, signed_workflow

BODY = (
    b'{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification",'
    b'"event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f",'
    b'"created_at":"2022-07-13T20:30:59.037339943Z",'
    b'"data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}'
)
SIGNATURE = "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4="
KEY = "Ibxx_5AKakO-3qeNVR61Dw"
URL = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9"
AUTH = WebhookAuth.model_validate({"scheme": "square", "credential_id": "cred_x"})


def check(url: str, body: bytes, signature: str, secrets: tuple[str, ...] = (KEY,)) -> None:
    headers = {"x-square-hmacsha256-signature": signature} if signature else {}
    verify(AUTH, secrets, body, headers, url=lambda: url)


def test_squares_own_vector_verifies() -> None:
    check(URL, BODY, SIGNATURE)
    check(URL, BODY, SIGNATURE, secrets=("a-new-signature-key", KEY))  # while rotating


@pytest.mark.parametrize(
    ("url", "body", "signature", "secrets", "code"),
    [
        (URL, BODY, "", (KEY,), "signature_missing"),
        (URL.replace("679a", "79a"), BODY, SIGNATURE, (KEY,), "signature_invalid"),
        (URL, BODY, SIGNATURE, ("MCmhFRxGX82xMwg5FsaoQA",), "signature_invalid"),
        (URL, BODY, "1z2n3DEJJiUPKcPzQo1ftvbxGdw=", (KEY,), "signature_invalid"),
        (URL, BODY.replace(b"07-13", b"06-13"), SIGNATURE, (KEY,), "signature_invalid"),
        (URL, BODY, "not base64!", (KEY,), "signature_invalid"),
    ],
)
def test_anything_else_is_refused(
    url: str, body: bytes, signature: str, secrets: tuple[str, ...], code: str
) -> None:
    with pytest.raises(SignatureRejected) as caught:
        check(url, body, signature, secrets)
    assert caught.value.code == code


async def test_a_payment_event_through_the_api(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    new_workflow: NewWorkflow,
    runtime: Runtime,
) -> None:
    workflow_id = await signed_workflow(client, auth, new_workflow, "square", {"secret": KEY})
    url = f"http://ipaas.test/api/webhooks/{workflow_id}"
    headers = {"content-type": "application/json", "x-square-hmacsha256-signature": SIGNATURE}
    # Signed for another notification URL (the vector's): refused.
    response = await client.post(url, content=BODY, headers=headers)
    assert_refused(response, runtime, workflow_id, "signature_invalid")
    digest = hmac.new(KEY.encode(), url.encode() + BODY, hashlib.sha256).digest()
    headers["x-square-hmacsha256-signature"] = base64.b64encode(digest).decode()
    response = await client.post(url, content=BODY, headers=headers)
    assert response.status_code == 202, response.text
    (execution,) = executions_of(runtime, workflow_id)
    assert execution.trigger.body["type"] == "webhooks.test_notification"
    assert execution.trigger.headers["x-square-hmacsha256-signature"] == "***"
