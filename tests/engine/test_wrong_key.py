"""A server whose ``IPAAS_SECRET_KEY`` does not decrypt a stored credential (started with
another key, a development key file left behind, the old key removed before ``ipaas
secrets rotate``). Before, every execution using the credential ended ``failed`` with
``internal error: ValueError``, a dry run answered 500, and a webhook signed with it 500.
Now the step says which credential and why, a webhook is 503 with ``Retry-After``, the log
names the credential, and all of it recovers once the right key is back."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from ipaas.config import Settings
from ipaas.credentials.crypto import CredentialCipher
from ipaas.engine.worker import Worker
from ipaas.runtime import Runtime
from tests.engine.test_retries import Api
from tests.standins.server import StandinServer
from tests.webhooks.conftest import executions_of
from tests.webhooks.test_signatures import GITHUB_BODY, GITHUB_SECRET, GITHUB_SIGNATURE, credential

TOKEN = "SENTINEL-bearer-token"
FAST_RETRY = {"max_attempts": 2, "initial_delay_s": 0.01, "max_delay_s": 0.01}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"circuit_failure_threshold": 10})


@pytest.fixture
async def api(client: httpx.AsyncClient, auth: dict[str, str], clean_standin: StandinServer) -> Api:
    return Api(client, auth, clean_standin)


def use_key(runtime: Runtime, cipher: CredentialCipher) -> None:
    """What a restart with another ``IPAAS_SECRET_KEY`` does to this process."""
    runtime.cipher = cipher
    runtime.intake.cipher = cipher
    runtime.credential_changes += 1  # workers drop the secrets they hold


async def test_a_step_says_which_credential_and_recovers(
    api: Api, runtime: Runtime, worker: Worker, logs: list[MutableMapping[str, Any]]
) -> None:
    cred = await credential(api.client, api.auth, {"bearer_token": TOKEN}, "http")
    step = api.call("call", "/echo/keyed", FAST_RETRY) | {"credential_id": cred}
    workflow_id = await api.workflow([step])
    right = runtime.cipher
    use_key(runtime, CredentialCipher(Fernet.generate_key()))

    detail = await api.settled(await api.fire(workflow_id))
    assert detail["status"] == "failed"
    # Retried like a network error (the operator may fix the key meanwhile), then given up.
    assert [(s["attempt"], s["error_code"]) for s in detail["steps"]] == [
        (1, "credential_unreadable"),
        (2, "credential_unreadable"),
    ]
    assert detail["steps"][0]["error"] == (
        f"credential {cred} cannot be decrypted with this server's IPAAS_SECRET_KEY "
        "(it was encrypted under another key)"
    )
    assert "gave up after 2 attempts" in detail["error"]
    assert api.hits("/echo/keyed") == []
    logged = [line for line in logs if line["event"] == "credential_undecryptable"]
    assert logged
    assert logged[0]["credential_ids"] == [cred]
    tenant_id = (await api.client.get("/api/tenant", headers=api.auth)).json()["id"]
    assert logged[0]["tenant_id"] == tenant_id
    assert logged[0]["log_level"] == "error"
    stored = await runtime.store.get_credential(tenant_id, cred)
    assert stored is not None
    assert stored.secret_ciphertext not in repr(logs)

    use_key(runtime, right)
    retried = await api.client.post(f"/api/executions/{detail['id']}/retry", headers=api.auth)
    assert retried.status_code == 202, retried.text
    assert (await api.settled(detail["id"]))["status"] == "succeeded"
    (hit,) = api.hits("/echo/keyed")
    assert hit["headers"]["authorization"] == f"Bearer {TOKEN}"


async def test_a_dry_run_reports_it_in_the_step(api: Api, runtime: Runtime) -> None:
    cred = await credential(api.client, api.auth, {"bearer_token": TOKEN}, "http")
    use_key(runtime, CredentialCipher(Fernet.generate_key()))
    step = api.call("call", "/echo/dry", FAST_RETRY) | {"credential_id": cred}
    response = await api.client.post(
        "/api/workflows/dry-run", json={"name": "dry", "steps": [step]}, headers=api.auth
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["steps"]
    assert result["status"] == "failed"
    assert f"credential {cred} cannot be decrypted" in result["error"]
    assert api.hits("/echo/dry") == []


async def test_a_signed_webhook_is_503_until_the_key_is_back(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime, api: Api
) -> None:
    cred = await credential(client, auth, {"secret": GITHUB_SECRET})
    created = await client.post(
        "/api/workflows",
        json={
            "name": "signed",
            "trigger": {
                "type": "webhook",
                "auth": {"scheme": "hmac_sha256", "credential_id": cred},
            },
            "steps": [api.call("call", "/echo/signed")],
        },
        headers=auth,
    )
    workflow_id = created.json()["id"]
    right = runtime.cipher
    use_key(runtime, CredentialCipher(Fernet.generate_key()))

    def post() -> Any:
        return client.post(
            f"/api/webhooks/{workflow_id}",
            content=GITHUB_BODY,
            headers={"x-hub-signature-256": GITHUB_SIGNATURE, "content-type": "text/plain"},
        )

    refused = await post()
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["code"] == "signing_secret_unreadable"
    # The sender is told to come back, not how the server is configured.
    assert "IPAAS_SECRET_KEY" not in refused.text
    assert executions_of(runtime, workflow_id) == []

    use_key(runtime, right)
    assert (await post()).status_code == 202
