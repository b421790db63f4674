"""An OAuth 2.0 connection renewed by one process at a time, on the SQL stores themselves:
three stores on one database (three processes' connection pools), each with its own token
cache, all wanting a token when it is due. The claim is a compare-and-set of the
credential's ciphertext; on PostgreSQL the three run at once on separate connections."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ipaas.credentials.crypto import CredentialCipher
from ipaas.credentials.models import Credential, CredentialType
from ipaas.credentials.oauth2 import CredentialSessions
from ipaas.engine.connectors import StepContext
from ipaas.engine.connectors.oauth2 import SESSION, Grant, TokenCache
from ipaas.kit.http import HttpClient
from ipaas.kit.ids import new_id
from ipaas.stores.sql import SqlStore
from tests.conftest import TEST_KEY
from tests.contracts.test_store import T0, new_account
from tests.standins.oauth import CLIENT_ID, CLIENT_SECRET
from tests.standins.server import StandinServer

PROCESSES = 3
CALLS_EACH = 5


async def test_three_processes_renew_once(
    sql_url: str, clean_standin: StandinServer, http_client: HttpClient
) -> None:
    import httpx

    cipher = CredentialCipher(TEST_KEY.encode())
    stores = [SqlStore(sql_url) for _ in range(PROCESSES)]
    for store in stores:
        await store.startup()
    try:
        account = await new_account(stores[0])
        tenant_id = account.tenant.id
        oauth2 = {
            "grant_type": "authorization_code",
            "token_url": f"{clean_standin.url}/oauth/token",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        }
        # A connection to renew: the stand-in's refresh token, from a code exchange.
        refresh = _refresh_token(clean_standin, httpx)
        secret: dict[str, Any] = {
            "base_url": f"{clean_standin.url}/oauth/api",
            "oauth2": oauth2,
            SESSION: {"refresh_token": refresh, "access_token": "old", "renew_at": time.time()},
        }
        credential = Credential(
            id=new_id("cred"),
            tenant_id=tenant_id,
            name="crm",
            type=CredentialType.http,
            secret_ciphertext=cipher.encrypt(secret),
            created_at=T0,
        )
        await stores[0].create_credential(credential)
        grant = Grant.of(secret, (tenant_id, credential.id))
        assert grant is not None
        caches = [TokenCache(sessions=CredentialSessions(store, cipher)) for store in stores]

        async def want(tokens: TokenCache) -> str:
            ctx = StepContext(
                http=http_client, secret=secret, tenant_id=tenant_id, credential_id=credential.id
            )
            return (await tokens.token(grant, ctx))[0]

        got = await asyncio.gather(*(want(c) for c in caches for _ in range(CALLS_EACH)))
        asked = [r["body"] for r in clean_standin.requests(kind="oauth_token")]
        assert sum("grant_type=refresh_token" in body for body in asked) == 1, asked
        stored = await CredentialSessions(stores[1], cipher).load(tenant_id, credential.id)
        assert stored is not None
        session = stored[SESSION]
        assert set(got) == {session["access_token"]}
        assert session["refresh_token"] != refresh  # rotated, and kept
        assert "claim" not in session
    finally:
        for store in stores:
            await store.shutdown()


def _refresh_token(standin: StandinServer, httpx: Any) -> str:
    """A refresh token of the stand-in's, by its consent page and token endpoint."""
    import base64
    import hashlib
    from urllib.parse import parse_qs, urlsplit

    verifier = "v" * 43
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": "http://cb.test/",
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
    }
    page = httpx.get(f"{standin.url}/oauth/authorize", params=params)
    code = parse_qs(urlsplit(page.headers["location"]).query)["code"][0]
    answer = httpx.post(
        f"{standin.url}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "http://cb.test/",
            "code_verifier": verifier,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    answer.raise_for_status()
    return str(answer.json()["refresh_token"])
