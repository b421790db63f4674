"""Item 6: webhook authentication per trigger (Standard Webhooks, or an HMAC-SHA256 header)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import pytest
from slack_sdk.signature import SignatureVerifier
from standardwebhooks.webhooks import Webhook

from ipaas.runtime import Runtime
from ipaas.webhooks.signatures import SignatureRejected, verify
from ipaas.workflows.models import WebhookAuth, WebhookAuthScheme
from tests.conftest import signup
from tests.webhooks.conftest import NewWorkflow, executions_of
from tests.webhooks.test_endpoints import FIXTURES

#: GitHub's documented test vector (docs "Validating webhook deliveries").
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OLD_WHSEC = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()
CONTACT = (FIXTURES / "standard-webhooks" / "contact.created.json").read_bytes()
JSON = {"content-type": "application/json"}


async def credential(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    secret: dict[str, str],
    type_: str = "webhook_secret",
) -> str:
    response = await client.post(
        "/api/credentials", json={"name": "signing", "type": type_, "secret": secret}, headers=auth
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def signed_workflow(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    new_workflow: NewWorkflow,
    scheme: str,
    secret: dict[str, str],
    **trigger: Any,
) -> str:
    """A webhook workflow whose trigger demands ``scheme``'s signature by a new
    ``webhook_secret`` credential holding ``secret`` (and has the other ``trigger`` keys)."""
    cred = await credential(client, auth, secret)
    return await new_workflow(
        {"type": "webhook", "auth": {"scheme": scheme, "credential_id": cred}, **trigger}
    )


def edited(headers: dict[str, str], change: dict[str, Any]) -> dict[str, str]:
    """``headers`` with ``change`` applied: a name set to ``None`` is removed."""
    out = {k: v for k, v in headers.items() if change.get(k, v) is not None}
    out.update({k: v for k, v in change.items() if v is not None})
    return out


def assert_refused(response: httpx.Response, runtime: Runtime, workflow_id: str, code: str) -> None:
    """A 401 with ``code``, and nothing of the webhook stored."""
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == code
    assert executions_of(runtime, workflow_id) == []


def standard_headers(
    secret: str, body: bytes, *, msg_id: str = "msg_1", at: float | None = None
) -> dict[str, str]:
    timestamp = datetime.fromtimestamp(at if at is not None else time.time(), tz=UTC)
    signature = Webhook(secret).sign(msg_id, timestamp, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


async def test_a_signing_secret_is_rotated_in_place(
    client: httpx.AsyncClient, auth: dict[str, str], new_workflow: NewWorkflow
) -> None:
    """The sender's rotation, without touching the workflow: PATCH the credential with the
    new secret and the old one as ``previous_secret`` (both verify), then without it (only
    the new one does), each at once."""
    cred = await credential(client, auth, {"secret": OLD_WHSEC})
    workflow_id = await new_workflow(
        {"type": "webhook", "auth": {"scheme": "standard_webhooks", "credential_id": cred}}
    )

    async def post(secret: str, msg_id: str) -> int:
        headers = standard_headers(secret, CONTACT, msg_id=msg_id)
        response = await client.post(
            f"/api/webhooks/{workflow_id}", content=CONTACT, headers=headers
        )
        return response.status_code

    assert await post(OLD_WHSEC, "msg_1") == 202
    assert await post(WHSEC, "msg_2") == 401
    both = {"secret": {"secret": WHSEC, "previous_secret": OLD_WHSEC}}
    assert (
        await client.patch(f"/api/credentials/{cred}", json=both, headers=auth)
    ).status_code == 200
    assert await post(WHSEC, "msg_3") == 202
    assert await post(OLD_WHSEC, "msg_4") == 202
    done = {"secret": {"secret": WHSEC}}
    assert (
        await client.patch(f"/api/credentials/{cred}", json=done, headers=auth)
    ).status_code == 200
    assert await post(OLD_WHSEC, "msg_5") == 401
    assert await post(WHSEC, "msg_6") == 202


class TestHmac:
    @pytest.fixture
    async def workflow_id(
        self, client: httpx.AsyncClient, auth: dict[str, str], new_workflow: NewWorkflow
    ) -> str:
        return await signed_workflow(
            client, auth, new_workflow, "hmac_sha256", {"secret": GITHUB_SECRET}
        )

    async def test_githubs_test_vector_is_accepted(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        response = await client.post(
            f"/api/webhooks/{workflow_id}",
            content=GITHUB_BODY,
            headers={"x-hub-signature-256": GITHUB_SIGNATURE, "content-type": "text/plain"},
        )
        assert response.status_code == 202, response.text
        (stored,) = executions_of(runtime, workflow_id)
        assert stored.trigger.body == "Hello, World!"

    async def test_a_real_github_payload_signed_as_github_does(
        self, client: httpx.AsyncClient, workflow_id: str
    ) -> None:
        body = (FIXTURES / "github" / "push.json").read_bytes()
        digest = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
        response = await client.post(
            f"/api/webhooks/{workflow_id}",
            content=body,
            headers={"X-Hub-Signature-256": f"sha256={digest}", "content-type": "application/json"},
        )
        assert response.status_code == 202, response.text

    @pytest.mark.parametrize(
        ("headers", "code"),
        [
            ({}, "signature_missing"),
            ({"x-hub-signature-256": ""}, "signature_missing"),
            ({"x-hub-signature-256": GITHUB_SIGNATURE.replace("757", "758")}, "signature_invalid"),
            ({"x-hub-signature-256": GITHUB_SIGNATURE[7:]}, "signature_invalid"),
            ({"x-hub-signature-256": "sha256=not-hex"}, "signature_invalid"),
            ({"x-hub-signature-256": "sha1=757107ea"}, "signature_invalid"),
        ],
    )
    async def test_missing_or_bad_is_401_and_persists_nothing(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        workflow_id: str,
        headers: dict[str, str],
        code: str,
    ) -> None:
        response = await client.post(
            f"/api/webhooks/{workflow_id}",
            content=GITHUB_BODY,
            headers=headers | {"content-type": "text/plain"},
        )
        assert_refused(response, runtime, workflow_id, code)

    async def test_a_changed_body_is_refused(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        response = await client.post(
            f"/api/webhooks/{workflow_id}",
            content=GITHUB_BODY + b" ",
            headers={"x-hub-signature-256": GITHUB_SIGNATURE},
        )
        assert response.status_code == 401
        assert executions_of(runtime, workflow_id) == []

    async def test_base64_header_and_rotation(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        runtime: Runtime,
        new_workflow: NewWorkflow,
    ) -> None:
        cred = await credential(
            client, auth, {"secret": "new-shopify-secret", "previous_secret": "old-shopify-secret"}
        )
        workflow_id = await new_workflow(
            {
                "type": "webhook",
                "auth": {
                    "scheme": "hmac_sha256",
                    "credential_id": cred,
                    "header": "X-Shopify-Hmac-Sha256",
                    "prefix": "",
                    "encoding": "base64",
                },
            }
        )
        body = b'{"id": 820982911946154508}'
        for secret, expected in (
            ("new-shopify-secret", 202),
            ("old-shopify-secret", 202),
            ("other-shopify-secret", 401),
        ):
            mac = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
            response = await client.post(
                f"/api/webhooks/{workflow_id}",
                content=body,
                headers={"x-shopify-hmac-sha256": mac.decode(), "content-type": "application/json"},
            )
            assert response.status_code == expected, (secret, response.text)
        assert len(executions_of(runtime, workflow_id)) == 2


class TestStandardWebhooks:
    @pytest.fixture
    async def workflow_id(
        self, client: httpx.AsyncClient, auth: dict[str, str], new_workflow: NewWorkflow
    ) -> str:
        return await signed_workflow(
            client,
            auth,
            new_workflow,
            "standard_webhooks",
            {"secret": WHSEC, "previous_secret": OLD_WHSEC},
        )

    async def test_signed_with_either_secret_is_accepted(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        for n, secret in enumerate((WHSEC, OLD_WHSEC)):
            response = await client.post(
                f"/api/webhooks/{workflow_id}",
                content=CONTACT,
                headers=standard_headers(secret, CONTACT, msg_id=f"msg_{n}"),
            )
            assert response.status_code == 202, response.text
        stored = executions_of(runtime, workflow_id)
        assert stored[0].trigger.body["type"] == "contact.created"
        assert stored[0].trigger.headers["webhook-signature"] == "***"

    @pytest.mark.parametrize(
        ("change", "code"),
        [
            ({"webhook-signature": None}, "signature_missing"),
            ({"webhook-id": None}, "signature_missing"),
            ({"webhook-id": "msg_other"}, "signature_invalid"),
            ({"webhook-signature": "v1,AAAA"}, "signature_invalid"),
            ({"webhook-signature": "garbage"}, "signature_invalid"),
            ({"webhook-timestamp": "yesterday"}, "signature_invalid"),
        ],
    )
    async def test_missing_or_bad_is_401_and_persists_nothing(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        workflow_id: str,
        change: dict[str, Any],
        code: str,
    ) -> None:
        headers = standard_headers(WHSEC, CONTACT)
        headers = edited(headers, change)
        response = await client.post(
            f"/api/webhooks/{workflow_id}", content=CONTACT, headers=headers
        )
        assert_refused(response, runtime, workflow_id, code)

    @pytest.mark.parametrize("offset_s", [-301, 301])
    async def test_outside_the_5_minute_tolerance_is_401(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str, offset_s: int
    ) -> None:
        headers = standard_headers(WHSEC, CONTACT, at=time.time() + offset_s)
        response = await client.post(
            f"/api/webhooks/{workflow_id}", content=CONTACT, headers=headers
        )
        assert_refused(response, runtime, workflow_id, "signature_expired")

    async def test_within_the_tolerance_is_accepted(
        self, client: httpx.AsyncClient, workflow_id: str
    ) -> None:
        headers = standard_headers(WHSEC, CONTACT, at=time.time() - 240)
        response = await client.post(
            f"/api/webhooks/{workflow_id}", content=CONTACT, headers=headers
        )
        assert response.status_code == 202


#: A Stripe endpoint secret as its dashboard shows one: the whole string is the HMAC key.
STRIPE_SECRET = "whsec_" + "5Wq9Zk3nT8vR2yB6xH4mJ7cD1fL0sP3a"
OLD_STRIPE_SECRET = "whsec_" + "0aP3sL1fD7cJ4mH6xB2yR8vT3nkZ9qW5"
STRIPE_BODY = (FIXTURES / "stripe" / "customer.created.json").read_bytes()


def stripe_header(body: bytes, *secrets: str, at: float | None = None) -> str:
    """``Stripe-Signature`` as Stripe writes it (docs "Verify webhook signatures": one
    ``v1`` per secret while one is rolled)."""
    stamp = str(int(at if at is not None else time.time()))
    signed = stamp.encode() + b"." + body
    v1s = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    return ",".join([f"t={stamp}", *(f"v1={v}" for v in v1s), "v0=6ffbb59b2300aae63f2"])


class TestStripe:
    @pytest.fixture
    async def workflow_id(
        self, client: httpx.AsyncClient, auth: dict[str, str], new_workflow: NewWorkflow
    ) -> str:
        return await signed_workflow(
            client, auth, new_workflow, "stripe", {"secret": STRIPE_SECRET}
        )

    async def post(
        self, client: httpx.AsyncClient, workflow_id: str, signature: str | None
    ) -> httpx.Response:
        headers = {"content-type": "application/json; charset=utf-8"}
        if signature is not None:
            headers["stripe-signature"] = signature
        return await client.post(
            f"/api/webhooks/{workflow_id}", content=STRIPE_BODY, headers=headers
        )

    async def test_signed_as_stripe_does_is_accepted(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        # Two v1 while Stripe rolls the endpoint's secret: one of them is ours.
        for header in (
            stripe_header(STRIPE_BODY, STRIPE_SECRET),
            stripe_header(STRIPE_BODY, OLD_STRIPE_SECRET, STRIPE_SECRET),
        ):
            response = await self.post(client, workflow_id, header)
            assert response.status_code == 202, response.text
        stored = executions_of(runtime, workflow_id)
        assert stored[0].trigger.body["type"] == "customer.created"
        assert stored[0].trigger.headers["stripe-signature"] == "***"

    @pytest.mark.parametrize(
        ("signature", "code"),
        [
            (None, "signature_missing"),
            ("", "signature_missing"),
            # Signed with another secret, or over another body; signed when the test runs,
            # not when it is collected: a long suite outlived the 5 minutes' tolerance.
            (partial(stripe_header, STRIPE_BODY, OLD_STRIPE_SECRET), "signature_invalid"),
            (partial(stripe_header, STRIPE_BODY + b" ", STRIPE_SECRET), "signature_invalid"),
            # The v0 (test-mode legacy) scheme alone is not a signature.
            ("t=1700000000,v0=6ffbb59b2300aae63f2", "signature_invalid"),
            ("v1=00", "signature_invalid"),
            ("t=soon,v1=00", "signature_invalid"),
            ("t=1,t=2,v1=00", "signature_invalid"),
            ("t=1700000000,v1=not-hex", "signature_invalid"),
        ],
    )
    async def test_missing_or_bad_is_401_and_persists_nothing(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        workflow_id: str,
        signature: str | Callable[[], str] | None,
        code: str,
    ) -> None:
        header = signature() if callable(signature) else signature
        response = await self.post(client, workflow_id, header)
        assert_refused(response, runtime, workflow_id, code)

    @pytest.mark.parametrize("offset_s", [-301, 301])
    async def test_outside_the_5_minute_tolerance_is_401(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str, offset_s: int
    ) -> None:
        header = stripe_header(STRIPE_BODY, STRIPE_SECRET, at=time.time() + offset_s)
        response = await self.post(client, workflow_id, header)
        assert_refused(response, runtime, workflow_id, "signature_expired")


#: Slack's worked example (docs "Verifying requests from Slack"): a slash command's body,
#: signed at 1531420618 with this signing secret.
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
    b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook"
    b"-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F3977"
    b"00885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10"
    b"d2c447fce8b6703c"
)
SLACK_STAMP = "1531420618"
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def slack_headers(body: bytes, secret: str = SLACK_SECRET) -> dict[str, str]:
    """Headers as Slack signs a request now, by slack_sdk's own signer."""
    stamp = str(int(time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    assert signature is not None
    return {"x-slack-request-timestamp": stamp, "x-slack-signature": signature}


async def test_calendly_signs_as_stripe_does_under_its_own_header(
    client: httpx.AsyncClient, auth: dict[str, str], new_workflow: NewWorkflow, runtime: Runtime
) -> None:
    """Calendly's ``Calendly-Webhook-Signature: t=...,v1=...`` (its docs, "Webhook
    signatures"): Stripe's scheme with ``header``."""
    cred = await credential(client, auth, {"secret": STRIPE_SECRET})
    workflow_id = await new_workflow(
        {
            "type": "webhook",
            "auth": {
                "scheme": "stripe",
                "credential_id": cred,
                "header": "Calendly-Webhook-Signature",
            },
        }
    )
    body = b'{"event": "invitee.created", "payload": {"email": "ada@example.com"}}'
    signature = stripe_header(body, STRIPE_SECRET)
    url = f"/api/webhooks/{workflow_id}"
    json_type = {"content-type": "application/json"}
    # Under Stripe's name it is not where this workflow looks.
    response = await client.post(
        url, content=body, headers={**json_type, "Stripe-Signature": signature}
    )
    assert_refused(response, runtime, workflow_id, "signature_missing")
    assert "Calendly-Webhook-Signature" in response.json()["error"]["message"]
    headers = {**json_type, "Calendly-Webhook-Signature": signature}
    response = await client.post(url, content=body, headers=headers)
    assert response.status_code == 202, response.text
    (stored,) = executions_of(runtime, workflow_id)
    assert stored.trigger.headers["calendly-webhook-signature"] == "***"


class TestSlack:
    def test_slacks_worked_example_verifies(self) -> None:
        auth = WebhookAuth(scheme=WebhookAuthScheme.slack, credential_id="c")
        headers = {"x-slack-request-timestamp": SLACK_STAMP, "x-slack-signature": SLACK_SIGNATURE}
        at = int(SLACK_STAMP) + 10
        verify(auth, ["not-this-one", SLACK_SECRET], SLACK_BODY, headers, now=at)
        with pytest.raises(SignatureRejected, match="No matching signature"):
            verify(auth, ["not-this-one"], SLACK_BODY, headers, now=at)
        with pytest.raises(SignatureRejected) as info:  # now: years later
            verify(auth, [SLACK_SECRET], SLACK_BODY, headers)
        assert info.value.code == "signature_expired"

    @pytest.fixture
    async def workflow_id(
        self, client: httpx.AsyncClient, auth: dict[str, str], new_workflow: NewWorkflow
    ) -> str:
        return await signed_workflow(client, auth, new_workflow, "slack", {"secret": SLACK_SECRET})

    async def test_a_signed_slash_command_is_accepted(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        headers = slack_headers(SLACK_BODY) | {"content-type": "application/x-www-form-urlencoded"}
        response = await client.post(
            f"/api/webhooks/{workflow_id}", content=SLACK_BODY, headers=headers
        )
        # Slack's acknowledgement: 200 and nothing else (a 202 with JSON showed the user
        # who typed the command an error, or the JSON).
        assert (response.status_code, response.content) == (200, b""), response.text
        (stored,) = executions_of(runtime, workflow_id)
        assert stored.trigger.body["command"] == "/webhook-collect"
        assert stored.trigger.headers["x-slack-signature"] == "***"

    async def test_url_verification_is_answered_with_its_challenge(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        # What Slack sends when an app's Events API Request URL is saved.
        body = (
            b'{"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": '
            b'"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}'
        )
        headers = slack_headers(body) | {"content-type": "application/json"}
        response = await client.post(f"/api/webhooks/{workflow_id}", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
        }
        assert executions_of(runtime, workflow_id) == []
        # Unsigned, it is refused like any other request.
        unsigned = await client.post(
            f"/api/webhooks/{workflow_id}",
            content=body,
            headers={"content-type": "application/json"},
        )
        assert unsigned.status_code == 401
        # An event that merely mentions the word is an event.
        event = b'{"type": "event_callback", "event": {"text": "url_verification"}}'
        headers = slack_headers(event) | {"content-type": "application/json"}
        response = await client.post(f"/api/webhooks/{workflow_id}", content=event, headers=headers)
        assert (response.status_code, response.content) == (200, b""), response.text
        assert len(executions_of(runtime, workflow_id)) == 1

    async def test_another_schemes_url_verification_is_an_event(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        workflow_id = await new_workflow()
        body = b'{"challenge": "abc", "type": "url_verification"}'
        response = await client.post(f"/api/webhooks/{workflow_id}", content=body, headers=JSON)
        assert response.status_code == 202, response.text
        assert len(executions_of(runtime, workflow_id)) == 1

    @pytest.mark.parametrize(
        ("change", "code"),
        [
            ({"x-slack-signature": None}, "signature_missing"),
            ({"x-slack-request-timestamp": None}, "signature_missing"),
            ({"x-slack-request-timestamp": "yesterday"}, "signature_invalid"),
            ({"x-slack-request-timestamp": "1531420618"}, "signature_expired"),
            ({"x-slack-signature": SLACK_SIGNATURE}, "signature_invalid"),
            ({"x-slack-signature": "v1=00"}, "signature_invalid"),
        ],
    )
    async def test_missing_or_bad_is_401_and_persists_nothing(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        workflow_id: str,
        change: dict[str, str | None],
        code: str,
    ) -> None:
        headers = slack_headers(SLACK_BODY)
        headers = edited(headers, change)
        response = await client.post(
            f"/api/webhooks/{workflow_id}", content=SLACK_BODY, headers=headers
        )
        assert_refused(response, runtime, workflow_id, code)


ZOOM_SECRET = "Zr2sDqKw5PXnvT8bmYg0hA"
OLD_ZOOM_SECRET = "pL4jQm9RvZx2KcT7bWn1sE"


def zoom_headers(body: bytes, secret: str = ZOOM_SECRET, at: float | None = None) -> dict[str, str]:
    """As Zoom signs (docs "Verify webhook events"), written out here rather than with the
    slack_sdk signer the product checks it with."""
    stamp = str(int(at if at is not None else time.time()))
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    return {
        "x-zm-request-timestamp": stamp,
        "x-zm-signature": f"v0={digest.hexdigest()}",
        "content-type": "application/json; charset=utf-8",
    }


class TestZoom:
    @pytest.fixture
    async def workflow_id(
        self, client: httpx.AsyncClient, auth: dict[str, str], new_workflow: NewWorkflow
    ) -> str:
        secret = {"secret": ZOOM_SECRET, "previous_secret": OLD_ZOOM_SECRET}
        return await signed_workflow(client, auth, new_workflow, "zoom", secret)

    async def test_a_signed_event_is_accepted(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        body = b'{"event": "meeting.started", "payload": {"object": {"id": "85746065"}}}'
        response = await client.post(
            f"/api/webhooks/{workflow_id}", content=body, headers=zoom_headers(body)
        )
        assert response.status_code == 202, response.text
        (stored,) = executions_of(runtime, workflow_id)
        assert stored.trigger.body["event"] == "meeting.started"
        assert stored.trigger.headers["x-zm-signature"] == "***"

    @pytest.mark.parametrize("secret", [ZOOM_SECRET, OLD_ZOOM_SECRET])
    async def test_url_validation_is_answered_with_the_token_hashed(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str, secret: str
    ) -> None:
        # Zoom's example request (docs "Validate your webhook endpoint"); while a secret is
        # rotated, the answer is keyed with the one that signed the request.
        body = (
            b'{"payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}, "event_ts": 1654503849680,'
            b' "event": "endpoint.url_validation"}'
        )
        response = await client.post(
            f"/api/webhooks/{workflow_id}", content=body, headers=zoom_headers(body, secret)
        )
        assert response.status_code == 200, response.text
        token = hmac.new(secret.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
        assert response.json() == {"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": token}
        assert executions_of(runtime, workflow_id) == []
        unsigned = await client.post(f"/api/webhooks/{workflow_id}", content=body, headers=JSON)
        assert unsigned.status_code == 401

    @pytest.mark.parametrize(
        ("change", "code"),
        [
            ({"x-zm-signature": None}, "signature_missing"),
            ({"x-zm-request-timestamp": None}, "signature_missing"),
            ({"x-zm-request-timestamp": "1654503849"}, "signature_expired"),
            ({"x-zm-signature": "v0=00"}, "signature_invalid"),
        ],
    )
    async def test_missing_or_bad_is_401_and_persists_nothing(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        workflow_id: str,
        change: dict[str, str | None],
        code: str,
    ) -> None:
        body = b'{"event": "meeting.ended"}'
        headers = zoom_headers(body)
        headers = edited(headers, change)
        response = await client.post(f"/api/webhooks/{workflow_id}", content=body, headers=headers)
        assert_refused(response, runtime, workflow_id, code)


class TestTriggerValidation:
    async def post(
        self, client: httpx.AsyncClient, auth: dict[str, str], trigger: dict[str, Any]
    ) -> httpx.Response:
        return await client.post(
            "/api/workflows",
            json={
                "name": "x",
                "trigger": trigger,
                "steps": [
                    {"id": "call", "type": "http_request", "config": {"url": "http://x.test"}}
                ],
            },
            headers=auth,
        )

    @staticmethod
    def locs(response: httpx.Response) -> list[list[Any]]:
        assert response.status_code == 422, response.text
        return [d["loc"] for d in response.json()["error"]["details"]]

    async def test_the_credential_must_exist_and_be_the_tenants(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        other = await signup(client, "grace@example.com")
        other.pop("tenant_id")
        theirs = await credential(client, other, {"secret": GITHUB_SECRET})
        for cred in ("cred_missing", theirs):
            trigger = {"type": "webhook", "auth": {"scheme": "hmac_sha256", "credential_id": cred}}
            response = await self.post(client, auth, trigger)
            assert self.locs(response) == [["body", "trigger", "auth", "credential_id"]]
            assert response.json()["error"]["details"][0]["type"] == "credential_not_found"

    async def test_the_credential_must_be_a_webhook_secret(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        slack = await credential(
            client, auth, {"webhook_url": "https://hooks.slack.test/x"}, "slack"
        )
        trigger = {
            "type": "webhook",
            "auth": {"scheme": "standard_webhooks", "credential_id": slack},
        }
        response = await self.post(client, auth, trigger)
        assert self.locs(response) == [["body", "trigger", "auth", "credential_id"]]
        assert response.json()["error"]["details"][0]["type"] == "credential_type_mismatch"

    @pytest.mark.parametrize(
        "trigger",
        [
            {"type": "webhook", "auth": {"scheme": "md5", "credential_id": "cred_x"}},
            {"type": "webhook", "auth": {"scheme": "hmac_sha256"}},
            {
                "type": "webhook",
                "auth": {"scheme": "standard_webhooks", "credential_id": "c", "header": "X"},
            },
            {
                "type": "webhook",
                "auth": {"scheme": "stripe", "credential_id": "c", "prefix": "v1="},
            },
            {
                "type": "webhook",
                "auth": {"scheme": "slack", "credential_id": "c", "encoding": "hex"},
            },
            {
                "type": "webhook",
                "auth": {"scheme": "hmac_sha256", "credential_id": "c", "encoding": "hex2"},
            },
            {"type": "webhook", "secret": "plain-text-secret"},
            {"type": "webhook", "idempotency": {}},
        ],
    )
    async def test_bad_shapes_are_422(
        self, client: httpx.AsyncClient, auth: dict[str, str], trigger: dict[str, Any]
    ) -> None:
        response = await self.post(client, auth, trigger)
        assert response.status_code == 422, response.text
        assert all(loc[:2] == ["body", "trigger"] for loc in self.locs(response))

    async def test_hmac_defaults_are_written_into_the_trigger(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        cred = await credential(client, auth, {"secret": GITHUB_SECRET})
        trigger = {"type": "webhook", "auth": {"scheme": "hmac_sha256", "credential_id": cred}}
        response = await self.post(client, auth, trigger)
        assert response.status_code == 201, response.text
        assert response.json()["trigger"]["auth"] == {
            "scheme": "hmac_sha256",
            "credential_id": cred,
            "header": "X-Hub-Signature-256",
            "prefix": "sha256=",
            "encoding": "hex",
        }

    async def test_a_whsec_secret_must_be_base64(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        response = await client.post(
            "/api/credentials",
            json={
                "name": "s",
                "type": "webhook_secret",
                "secret": {"secret": "whsec_!!!not-base64"},
            },
            headers=auth,
        )
        assert response.status_code == 422
        assert "whsec_!!!" not in response.text
