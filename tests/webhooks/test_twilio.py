"""Twilio's request signatures (``X-Twilio-Signature``): the URL Twilio called and the
sorted form fields, HMAC-SHA1 with the auth token. The vectors are twilio-python's own
(``tests/unit/test_request_validator.py``): token ``12345``."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from ipaas.runtime import Runtime
from ipaas.webhooks.signatures import SignatureRejected, verify
from ipaas.workflows.models import WebhookAuth
from tests.webhooks.conftest import NewWorkflow, executions_of
from tests.webhooks.test_signatures import assert_refused, credential, signed_workflow

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
SIGNED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
JSON_BODY = b'{"property": "value", "boolean": true}'
JSON_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
AUTH = WebhookAuth.model_validate({"scheme": "twilio", "credential_id": "cred_x"})


def check(url: str, body: bytes, signature: str, secrets: tuple[str, ...] = (TOKEN,)) -> None:
    headers = {"X-Twilio-Signature": signature} if signature else {}
    verify(AUTH, secrets, body, headers, url=lambda: url)


def form(params: Any) -> bytes:
    return urlencode(params).encode()


@pytest.mark.parametrize(
    ("url", "body", "signature"),
    [
        (URL, form(PARAMS), SIGNED),
        # Signed without the port, called with it (or the other way round): both are tried.
        (URL.replace(".com", ".com:1234"), form(PARAMS), SIGNED),
        (URL, form(PARAMS), "kvajT1Ptam85bY51eRf/AJRuM3w="),  # signed with :443
        (URL.replace("https", "http"), form(PARAMS), "0ZXoZLH/DfblKGATFgpif+LLRf4="),  # :80
        (
            URL.replace(".com", ".com:1234").replace("https", "http"),
            form(PARAMS),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
        ),
        # A name sent twice: sorted by name, then by value.
        (
            URL,
            b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234",
            "IK+Dwps556ElfBT0I3Rgjkr1wJU=",
        ),
        # A JSON body: the URL carries its hash, and is all that is signed.
        (f"{URL}&bodySHA256={JSON_HASH}", JSON_BODY, "a9nBmqA0ju/hNViExpshrM61xv4="),
    ],
)
def test_twilios_own_vectors_verify(url: str, body: bytes, signature: str) -> None:
    check(url, body, signature)


@pytest.mark.parametrize(
    ("url", "body", "signature", "code"),
    [
        (URL, form(PARAMS), "", "signature_missing"),
        (URL, form({**PARAMS, "Digits": "9999"}), SIGNED, "signature_invalid"),
        (URL.replace("foo=1", "foo=2"), form(PARAMS), SIGNED, "signature_invalid"),
        (URL.replace("mycompany", "yourcompany"), form(PARAMS), SIGNED, "signature_invalid"),
        (URL, form(PARAMS), "not base64!", "signature_invalid"),
        (
            f"{URL}&bodySHA256={JSON_HASH}",
            JSON_BODY.replace(b"true", b"false"),
            "a9nBmqA0ju/hNViExpshrM61xv4=",
            "signature_invalid",
        ),
    ],
)
def test_anything_else_is_refused(url: str, body: bytes, signature: str, code: str) -> None:
    with pytest.raises(SignatureRejected) as caught:
        check(url, body, signature)
    assert caught.value.code == code


def test_the_previous_token_verifies_while_it_is_rotated() -> None:
    check(URL, form(PARAMS), SIGNED, secrets=("a-new-auth-token", TOKEN))


def sign(token: str, url: str, params: dict[str, str]) -> str:
    """As Twilio's docs describe it, for the tests that go through the API."""
    signed = url + "".join(name + value for name, value in sorted(params.items()))
    return base64.b64encode(
        hmac.new(token.encode(), signed.encode(), hashlib.sha1).digest()
    ).decode()


def signed_for(url: str, token: str = "") -> dict[str, str]:
    """The headers of ``SMS`` posted as Twilio signs it for ``url``."""
    return {
        "content-type": "application/x-www-form-urlencoded",
        "x-twilio-signature": sign(token or AUTH_TOKEN, url, SMS),
    }


AUTH_TOKEN = "f4b1c5d9e2a3b6c7d8e9f0a1b2c3d4e5"
SMS = {"MessageSid": "SM1f2e3d", "From": "+14155550100", "To": "+14155550199", "Body": "Hi & bye"}


async def test_an_sms_webhook_through_the_api(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    new_workflow: NewWorkflow,
    runtime: Runtime,
) -> None:
    workflow_id = await signed_workflow(
        client, auth, new_workflow, "twilio", {"secret": AUTH_TOKEN}
    )
    url = f"http://ipaas.test/api/webhooks/{workflow_id}?source=sms"
    response = await client.post(url, content=form(SMS), headers=signed_for(url))
    # Twilio's acknowledgement: TwiML that does nothing (JSON is its error 12300).
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    assert response.text == '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
    (execution,) = executions_of(runtime, workflow_id)
    assert execution.trigger.body == SMS
    assert execution.trigger.headers["x-twilio-signature"] == "***"
    # Signed for another URL (another workflow's, say): refused.
    other = f"http://ipaas.test/api/webhooks/{workflow_id}?source=voice"
    response = await client.post(url, content=form(SMS), headers=signed_for(other))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "signature_invalid"
    assert len(executions_of(runtime, workflow_id)) == 1


async def test_unsigned_or_signed_by_another_token_is_refused(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    new_workflow: NewWorkflow,
    runtime: Runtime,
) -> None:
    workflow_id = await signed_workflow(
        client, auth, new_workflow, "twilio", {"secret": AUTH_TOKEN}
    )
    url = f"http://ipaas.test/api/webhooks/{workflow_id}"
    plain = {"content-type": "application/x-www-form-urlencoded"}
    response = await client.post(url, content=form(SMS), headers=plain)
    assert_refused(response, runtime, workflow_id, "signature_missing")
    response = await client.post(url, content=form(SMS), headers=signed_for(url, "0" * 32))
    assert_refused(response, runtime, workflow_id, "signature_invalid")


async def test_behind_a_proxy_the_public_url_is_the_signed_one(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    new_workflow: NewWorkflow,
    runtime: Runtime,
) -> None:
    runtime.settings.public_url = "https://hooks.example.com"
    workflow_id = await signed_workflow(
        client, auth, new_workflow, "twilio", {"secret": AUTH_TOKEN}
    )
    path = f"/api/webhooks/{workflow_id}"
    public = f"https://hooks.example.com{path}"
    response = await client.post(path, content=form(SMS), headers=signed_for(public))
    assert response.status_code == 200, response.text
    # The URL the server itself saw is not the one Twilio called: not what it signed.
    seen = signed_for(f"http://ipaas.test{path}")
    response = await client.post(path, content=form(SMS), headers=seen)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "signature_invalid"
    assert len(executions_of(runtime, workflow_id)) == 1


async def test_a_message_twilio_sends_again_is_one_execution(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    new_workflow: NewWorkflow,
    runtime: Runtime,
) -> None:
    """No timestamp is signed: the message's id drops a repeat, which is acknowledged as the
    first was (Twilio retries what it did not see acknowledged)."""
    cred = await credential(client, auth, {"secret": AUTH_TOKEN})
    trigger = {
        "type": "webhook",
        "auth": {"scheme": "twilio", "credential_id": cred},
        "idempotency": {"body_path": "MessageSid"},
    }
    workflow_id = await new_workflow(trigger)
    url = f"http://ipaas.test/api/webhooks/{workflow_id}"
    first = await client.post(url, content=form(SMS), headers=signed_for(url))
    again = await client.post(url, content=form(SMS), headers=signed_for(url))
    assert (first.status_code, again.status_code) == (200, 200)
    assert first.text == again.text
    assert len(executions_of(runtime, workflow_id)) == 1
