"""``POST /api/credentials/{id}/test`` against the stand-ins: each type's check, what a
wrong secret gets, and that no message is sent."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from ipaas.runtime import Runtime
from tests.standins.oauth import CLIENT_ID, CLIENT_SECRET
from tests.standins.server import StandinServer


@pytest.fixture
def endpoints_at_standin(runtime: Runtime, clean_standin: StandinServer) -> StandinServer:
    """Slack's Web API and OpenWeather at the stand-in, as ``IPAAS_SLACK_API_URL`` and
    ``IPAAS_OPENWEATHER_URL`` would put them."""
    from dataclasses import replace

    runtime.endpoints = replace(
        runtime.endpoints,
        slack_api_url=f"{clean_standin.url}/api",
        openweather_url=clean_standin.url,
    )
    return clean_standin


async def checked(
    client: httpx.AsyncClient, auth: dict[str, str], type_: str, secret: dict[str, Any]
) -> httpx.Response:
    created = await client.post(
        "/api/credentials", json={"name": "c", "type": type_, "secret": secret}, headers=auth
    )
    assert created.status_code == 201, created.text
    return await client.post(f"/api/credentials/{created.json()['id']}/test", headers=auth)


@pytest.mark.parametrize(
    ("type_", "secret", "ok", "words"),
    [
        ("slack", {"bot_token": "xoxb-good-token"}, True, "team Stand-in Team, user standin-bot"),
        ("slack", {"bot_token": "xoxb-revoked-token"}, False, "auth.test: invalid_auth"),
        ("slack", {"webhook_url": "{url}/services/T1/B1/x"}, True, "refused an empty message"),
        (
            "slack",
            {"webhook_url": "{url}/services/T1/B1/unknown"},
            False,
            "Slack answered HTTP 404: no_service",
        ),
        (
            "slack",
            {"webhook_url": "{url}/services/T1/B1/archived"},
            False,
            "HTTP 410: channel_is_archived",
        ),
        ("discord", {"webhook_url": "{url}/api/webhooks/123/tok"}, True, "'Stand-in Hook'"),
        (
            "discord",
            {"webhook_url": "{url}/api/webhooks/123/unknown-tok"},
            False,
            "HTTP 404: Unknown Webhook",
        ),
        ("openweather", {"api_key": "good-key-123"}, True, "took the API key"),
        ("openweather", {"api_key": "bad"}, False, "HTTP 401"),
    ],
)
async def test_each_type(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    endpoints_at_standin: StandinServer,
    type_: str,
    secret: dict[str, Any],
    ok: bool,
    words: str,
) -> None:
    url = endpoints_at_standin.url
    secret = {k: v.replace("{url}", url) for k, v in secret.items()}
    r = await checked(client, auth, type_, secret)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is ok, r.json()
    assert words in r.json()["message"]
    # Nothing is ever posted.
    assert endpoints_at_standin.stats()["messages"] == 0
    for value in secret.values():
        if "good" in value or "revoked" in value:
            assert value not in r.text  # the token is not echoed


async def test_oauth2_client_credentials(
    client: httpx.AsyncClient, auth: dict[str, str], clean_standin: StandinServer
) -> None:
    grant = {"token_url": f"{clean_standin.url}/oauth/token", "client_id": CLIENT_ID}
    good = await checked(
        client, auth, "http", {"oauth2": {**grant, "client_secret": CLIENT_SECRET}}
    )
    assert good.json() == {"ok": True, "message": "The token endpoint gave a token for 3600 s"}
    bad = await checked(client, auth, "http", {"oauth2": {**grant, "client_secret": "wrong-one"}})
    assert bad.json()["ok"] is False
    assert "HTTP 401" in bad.json()["message"]
    assert "invalid_client" in bad.json()["message"]


async def test_an_unconnected_account_says_how_to_connect(
    client: httpx.AsyncClient, auth: dict[str, str], clean_standin: StandinServer
) -> None:
    oauth2 = {
        "grant_type": "authorization_code",
        "authorize_url": f"{clean_standin.url}/oauth/authorize",
        "token_url": f"{clean_standin.url}/oauth/token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    r = await checked(client, auth, "http", {"oauth2": oauth2})
    assert r.json()["ok"] is False
    assert "is not connected: connect it with POST" in r.json()["message"]


async def test_a_refused_destination_is_a_result(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    # The egress guard applies: a private address the settings do not allow sends nothing.
    r = await checked(client, auth, "discord", {"webhook_url": "http://10.1.2.3/api/webhooks/1/t"})
    assert r.status_code == 200
    assert r.json()["ok"] is False
    assert "IPAAS_EGRESS_ALLOW" in r.json()["message"]


@pytest.mark.parametrize(
    ("type_", "secret", "words"),
    [
        ("http", {"base_url": "https://api.example.com"}, "dry-run a step"),
        ("webhook_secret", {"secret": "whsec-long-enough"}, "calls nothing"),
    ],
)
async def test_nothing_to_test(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    type_: str,
    secret: dict[str, Any],
    words: str,
) -> None:
    r = await checked(client, auth, type_, secret)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "nothing_to_test"
    assert words in r.json()["error"]["message"]


async def test_a_credential_this_server_cannot_decrypt_is_a_503(
    client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
) -> None:
    """Encrypted under another key (an IPAAS_SECRET_KEY changed without ``ipaas rotate``):
    the server's fault, said as such, where it was a 500."""
    from ipaas.credentials.crypto import CredentialCipher
    from ipaas.stores.memory import MemoryStore

    oauth2 = {
        "grant_type": "authorization_code",
        "authorize_url": "https://id.example/authorize",
        "token_url": "https://id.example/token",
        "client_id": "c",
        "client_secret": "s",
    }
    created = await client.post(
        "/api/credentials",
        json={"name": "c", "type": "http", "secret": {"oauth2": oauth2}},
        headers=auth,
    )
    credential_id = created.json()["id"]
    store = runtime.store
    assert isinstance(store, MemoryStore)
    other_key = CredentialCipher(Fernet.generate_key())
    stored = store.credentials[credential_id]
    stored.secret_ciphertext = other_key.encrypt({"oauth2": oauth2})
    for path in ("test", "oauth2/authorize"):
        r = await client.post(f"/api/credentials/{credential_id}/{path}", headers=auth)
        assert r.status_code == 503, (path, r.text)
        assert r.json()["error"]["code"] == "credential_unreadable"
