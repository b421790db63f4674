"""``http`` credentials that sign each call (``engine.connectors.signing``): checked with
the Standard Webhooks reference library and with an HMAC computed here, as receivers
check them; and end to end through a worker, a retry keeping its ``webhook-id``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ipaas.engine.connectors import StepContext
from ipaas.engine.connectors.http_request import HttpRequest, HttpRequestParams
from ipaas.engine.connectors.signing import sign
from ipaas.engine.worker import Worker
from ipaas.kit.http import HttpClient
from ipaas.runtime import Runtime
from tests.conftest import signup
from tests.standins.server import StandinServer

#: The Standard Webhooks spec's example (its README, "Signature scheme").
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

connector = HttpRequest()


def built(secret: dict[str, Any], config: dict[str, Any], **ctx: Any) -> httpx.Request:
    context = StepContext(
        http=HttpClient(timeout_s=5.0), secret=secret, execution_id="ex_1", step_id="post", **ctx
    )
    return connector.build(context, HttpRequestParams.model_validate(config))


def test_the_specs_example_signs_as_the_spec_says() -> None:
    request = httpx.Request("POST", "https://example.com/hook", content=SPEC_BODY)
    signing = {"scheme": "standard_webhooks", "secret": SPEC_SECRET}
    sign(request, signing, message_id=SPEC_ID, now=SPEC_TIMESTAMP)
    assert request.headers["webhook-id"] == SPEC_ID
    assert request.headers["webhook-timestamp"] == str(SPEC_TIMESTAMP)
    assert request.headers["webhook-signature"] == SPEC_SIGNATURE


def test_a_json_step_verifies_with_the_reference_library() -> None:
    secret = {"signing": {"scheme": "standard_webhooks", "secret": SPEC_SECRET}}
    config = {
        "method": "POST",
        "url": "https://customer.example/hooks",
        "json": {"event": "order.paid", "id": 7},
        # A header of the same name is replaced: the signature must be the one sent.
        "headers": {"webhook-id": "mine"},
    }
    request = built(secret, config)
    assert request.headers["webhook-id"] == "msg_ex_1_post"
    headers = dict(request.headers)
    payload = Webhook(SPEC_SECRET).verify(request.content.decode(), headers)
    assert payload == {"event": "order.paid", "id": 7}
    with pytest.raises(WebhookVerificationError):
        Webhook(SPEC_SECRET).verify(request.content.decode().replace("7", "8"), headers)


@pytest.mark.parametrize(
    ("signing", "header", "expected"),
    [
        ({}, "X-Hub-Signature-256", lambda d: "sha256=" + d.hex()),
        (
            {"header": "X-Signature", "prefix": "", "encoding": "base64"},
            "X-Signature",
            lambda d: base64.b64encode(d).decode(),
        ),
    ],
)
def test_hmac_sha256_over_the_form_as_sent(
    signing: dict[str, str], header: str, expected: Any
) -> None:
    secret = {"signing": {"scheme": "hmac_sha256", "secret": "s3cret-key", **signing}}
    config = {"method": "POST", "url": "https://x.example/h", "form": {"a": "1 2", "b": "é"}}
    request = built(secret, config)
    assert request.content == b"a=1+2&b=%C3%A9"
    digest = hmac.new(b"s3cret-key", request.content, hashlib.sha256).digest()
    assert request.headers[header] == expected(digest)


@pytest.mark.parametrize(
    ("signing", "words"),
    [
        ({"scheme": "standard_webhooks", "secret": "whsec_not-base64!!"}, "24 to 64 bytes"),
        ({"scheme": "standard_webhooks", "secret": "whsec_" + "QUFB" * 2}, "24 to 64 bytes"),
        ({"scheme": "standard_webhooks", "secret": SPEC_SECRET, "header": "X-S"}, "only for"),
        ({"scheme": "hmac_sha256", "secret": "shrt123"}, "at least 8 characters"),
        ({"scheme": "md5", "secret": "long-enough"}, "'standard_webhooks' or 'hmac_sha256'"),
    ],
)
async def test_refused_when_saved(
    client: httpx.AsyncClient, auth: dict[str, str], signing: dict[str, Any], words: str
) -> None:
    r = await client.post(
        "/api/credentials",
        json={"name": "s", "type": "http", "secret": {"signing": signing}},
        headers=auth,
    )
    assert r.status_code == 422, r.text
    assert words in str(r.json()["error"]["details"])
    assert signing["secret"] not in r.text


async def test_a_retried_delivery_keeps_its_id_and_is_signed_anew(
    client: httpx.AsyncClient, runtime: Runtime, clean_standin: StandinServer
) -> None:
    """Through the API and a worker: the customer's endpoint fails once (503), the step is
    retried; both attempts carry the same ``webhook-id`` and each a valid signature."""
    headers = await signup(client)
    headers.pop("tenant_id")
    created = await client.post(
        "/api/credentials",
        json={
            "name": "customer",
            "type": "http",
            "secret": {
                "base_url": clean_standin.url,
                "signing": {"scheme": "standard_webhooks", "secret": SPEC_SECRET},
            },
        },
        headers=headers,
    )
    assert created.status_code == 201, created.text
    step = {
        "id": "deliver",
        "type": "http_request",
        "credential_id": created.json()["id"],
        "config": {"method": "POST", "path": "/echo", "json": "{{ trigger.body }}"},
        "retry": {"max_attempts": 2, "initial_delay_s": 0.01},
    }
    workflow = await client.post(
        "/api/workflows", json={"name": "forward", "steps": [step]}, headers=headers
    )
    assert workflow.status_code == 201, workflow.text
    httpx.post(
        f"{clean_standin.url}/_standin/faults",
        json={"path_prefix": "/echo", "status": 503, "count": 1},
    ).raise_for_status()
    fired = await client.post(f"/api/webhooks/{workflow.json()['id']}", json={"order": 7})
    worker = Worker(runtime)
    try:
        for _ in range(50):
            await worker.run_until_empty()
            if len(clean_standin.requests(kind="echo")) == 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await worker.stop(grace_s=0)
    attempts = clean_standin.requests(kind="echo")
    assert [a["status"] for a in attempts] == [503, 200]
    execution_id = fired.json()["execution_id"]
    ids = {a["headers"]["webhook-id"] for a in attempts}
    assert ids == {f"msg_{execution_id}_deliver"}
    for attempt in attempts:
        body = json.dumps(attempt["body"], separators=(",", ":"))
        assert Webhook(SPEC_SECRET).verify(body, attempt["headers"]) == {"order": 7}
    detail = await client.get(f"/api/executions/{execution_id}", headers=headers)
    assert detail.json()["status"] == "succeeded"
    assert SPEC_SECRET not in detail.text
