"""Connecting a user's account to an ``http`` credential (OAuth 2.0's authorization code
grant with PKCE), and its tokens renewed by one process at a time, against the stand-in
authorization server (``tests.standins.oauth``: it rotates refresh tokens and, as Auth0 and
Okta do, revokes the whole connection when an old one is used again)."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from ipaas.credentials import oauth2 as oauth2_service
from ipaas.credentials.oauth2 import CredentialSessions
from ipaas.engine.connectors import StepContext
from ipaas.engine.connectors.http_request import HttpRequest, HttpRequestParams
from ipaas.engine.connectors.oauth2 import (
    NEVER_S,
    SESSION,
    TOKEN_ERROR,
    TokenAnswer,
    TokenCache,
    session_of,
)
from ipaas.engine.worker import Worker
from ipaas.kit.http import HttpClient
from ipaas.runtime import Runtime
from tests.conftest import signup
from tests.standins.oauth import CLIENT_ID, CLIENT_SECRET
from tests.standins.server import StandinServer

CALLBACK = "http://ipaas.test/api/oauth2/callback"


def settings_for(standin: StandinServer, **more: Any) -> dict[str, Any]:
    return {
        "grant_type": "authorization_code",
        "authorize_url": f"{standin.url}/oauth/authorize",
        "token_url": f"{standin.url}/oauth/token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": "orders:read offline_access",
        **more,
    }


def steer(standin: StandinServer, **spec: Any) -> None:
    httpx.post(f"{standin.url}/_standin/oauth", json=spec).raise_for_status()


def grants(standin: StandinServer) -> list[str]:
    """The grant type of each token request the stand-in received, in order."""
    return [parse_qs(r["body"])["grant_type"][0] for r in standin.requests(kind="oauth_token")]


class World:
    def __init__(self, client: httpx.AsyncClient, runtime: Runtime, standin: StandinServer) -> None:
        self.client = client
        self.runtime = runtime
        self.standin = standin
        self.auth: dict[str, str] = {}
        self.tenant_id = ""

    async def credential(self, **oauth2: Any) -> str:
        secret = {"base_url": f"{self.standin.url}/oauth/api", "oauth2": oauth2}
        r = await self.client.post(
            "/api/credentials",
            json={"name": "crm", "type": "http", "secret": secret},
            headers=self.auth,
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def read(self, credential_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/api/credentials/{credential_id}", headers=self.auth)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def consent(self, credential_id: str) -> dict[str, str]:
        """The callback's query: authorize, then the stand-in's consent page's redirect."""
        r = await self.client.post(
            f"/api/credentials/{credential_id}/oauth2/authorize", headers=self.auth
        )
        assert r.status_code == 200, r.text
        async with httpx.AsyncClient() as browser:
            page = await browser.get(r.json()["authorize_url"])
        assert page.status_code == 302, page.text
        location = urlsplit(page.headers["location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == CALLBACK
        return {k: v[0] for k, v in parse_qs(location.query).items()}

    async def callback(self, query: dict[str, str], **headers: str) -> httpx.Response:
        return await self.client.get("/api/oauth2/callback", params=query, headers=headers)

    async def connect(self, credential_id: str) -> dict[str, Any]:
        r = await self.callback(await self.consent(credential_id))
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def stored(self, credential_id: str) -> dict[str, Any]:
        credential = await self.runtime.store.get_credential(self.tenant_id, credential_id)
        assert credential is not None
        return self.runtime.cipher.decrypt(credential.secret_ciphertext)

    async def workflow(self, credential_id: str) -> str:
        step = {
            "id": "call",
            "type": "http_request",
            "credential_id": credential_id,
            "config": {"path": "/contacts"},
        }
        r = await self.client.post(
            "/api/workflows", json={"name": "sync", "steps": [step]}, headers=self.auth
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def run(self, workflow_id: str, worker: Worker) -> dict[str, Any]:
        fired = await self.client.post(f"/api/webhooks/{workflow_id}", json={})
        assert fired.status_code == 202, fired.text
        await worker.run_until_empty()
        r = await self.client.get(
            f"/api/executions/{fired.json()['execution_id']}", headers=self.auth
        )
        return dict(r.json())


@pytest.fixture
async def world(client: httpx.AsyncClient, runtime: Runtime, clean_standin: StandinServer) -> World:
    w = World(client, runtime, clean_standin)
    w.auth = await signup(client)
    w.tenant_id = w.auth.pop("tenant_id")
    return w


@pytest.fixture
async def worker(runtime: Runtime) -> Any:
    worker = Worker(runtime)
    yield worker
    await worker.stop(grace_s=0)


class TestConnect:
    async def test_connected_then_each_execution_sends_its_token_renewed_and_rotated(
        self, world: World, worker: Worker
    ) -> None:
        standin = world.standin
        cred = await world.credential(
            **settings_for(standin, authorize_params={"access_type": "offline"})
        )
        before = await world.read(cred)
        assert before["oauth2"] == {
            "connected": False,
            "expires_at": None,
            "scope": None,
            "error": None,
            "redirect_uri": CALLBACK,
        }
        query = await world.consent(cred)
        assert "iss" in query  # RFC 9207's, which the callback takes with the rest

        # The consent page's URL: the client, the callback, PKCE S256, the scope, the
        # user's own parameters.
        (asked,) = standin.requests(kind="oauth_authorize")
        sent = parse_qs(asked["query"])
        assert sent["response_type"] == ["code"]
        assert sent["client_id"] == [CLIENT_ID]
        assert sent["redirect_uri"] == [CALLBACK]
        assert sent["code_challenge_method"] == ["S256"]
        assert sent["scope"] == ["orders:read offline_access"]
        assert sent["access_type"] == ["offline"]
        assert len(sent["code_challenge"][0]) == 43  # S256: 32 bytes, base64url

        connected = await world.callback(query)
        assert connected.status_code == 200, connected.text
        assert connected.json()["connected"] is True
        assert connected.json()["scope"] == "orders:read offline_access"
        (exchange,) = standin.requests(kind="oauth_token")
        form = parse_qs(exchange["body"])
        assert form["grant_type"] == ["authorization_code"]
        assert form["redirect_uri"] == [CALLBACK]
        assert len(form["code_verifier"][0]) >= 43
        # The state is sealed: the verifier was not in the URL the browser carried.
        assert form["code_verifier"][0] not in asked["query"]
        assert "scope" not in form  # given on the consent page, not again
        stored = (await world.stored(cred))[SESSION]
        assert stored["refresh_token"].startswith("rt-")
        assert stored["access_token"].startswith("tok-")
        after = await world.read(cred)
        assert after["oauth2"]["connected"] is True
        assert after["oauth2"]["expires_at"] is not None
        for text in (connected.text, str(after)):
            assert stored["refresh_token"] not in text
            assert stored["access_token"] not in text

        # Executions send the stored access token, masked in what they record.
        wf = await world.workflow(cred)
        detail = await world.run(wf, worker)
        assert detail["status"] == "succeeded", detail
        (call,) = standin.requests(kind="oauth_api")
        assert call["headers"]["authorization"] == f"Bearer {stored['access_token']}"
        assert stored["access_token"] not in str(detail)
        assert grants(standin) == ["authorization_code"]

        # Once it is due for renewal, one execution renews it with the refresh token: the
        # new one (rotated) is stored, and the next executions use the new access token.
        def expired(secret: dict[str, Any]) -> dict[str, Any]:
            return {**secret, SESSION: {**secret[SESSION], "renew_at": time.time() - 1}}

        await CredentialSessions(world.runtime.store, world.runtime.cipher).update(
            world.tenant_id, cred, expired
        )
        world.runtime.tokens.drop(_grant(world, cred, await world.stored(cred)))
        for _ in range(2):
            assert (await world.run(wf, worker))["status"] == "succeeded"
        assert grants(standin) == ["authorization_code", "refresh_token"]
        renewed = (await world.stored(cred))[SESSION]
        assert renewed["refresh_token"] != stored["refresh_token"]
        assert renewed["access_token"] != stored["access_token"]
        assert "claim" not in renewed
        calls = standin.requests(kind="oauth_api")
        assert [c["headers"]["authorization"] for c in calls[1:]] == [
            f"Bearer {renewed['access_token']}"
        ] * 2

    async def test_a_dry_run_renews_and_keeps_what_it_got(self, world: World) -> None:
        """A dry run has its own token cache but the stored connection: a renewal it makes
        is stored, or a rotating provider's next renewal would find the old token ended."""
        cred = await world.credential(**settings_for(world.standin))
        await world.connect(cred)

        def due(secret: dict[str, Any]) -> dict[str, Any]:
            return {**secret, SESSION: {**secret[SESSION], "renew_at": time.time() - 1}}

        await CredentialSessions(world.runtime.store, world.runtime.cipher).update(
            world.tenant_id, cred, due
        )
        before = (await world.stored(cred))[SESSION]["refresh_token"]
        wf = await world.workflow(cred)
        r = await world.client.post(
            f"/api/workflows/{wf}/dry-run", json={"mode": "run"}, headers=world.auth
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "succeeded", r.text
        assert grants(world.standin) == ["authorization_code", "refresh_token"]
        after = (await world.stored(cred))[SESSION]
        assert after["refresh_token"] != before
        assert after["access_token"] not in r.text

    async def test_a_browser_gets_a_page(self, world: World) -> None:
        cred = await world.credential(**settings_for(world.standin))
        page = await world.callback(await world.consent(cred), accept="text/html,*/*")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert f"<code>{cred}</code> is connected" in page.text
        assert page.headers["cache-control"] == "no-store"

    async def test_a_pasted_refresh_token_is_used_and_rotated(
        self, world: World, worker: Worker
    ) -> None:
        # A refresh token got elsewhere (here: another credential's connection).
        first = await world.credential(**settings_for(world.standin))
        await world.connect(first)
        refresh = (await world.stored(first))[SESSION]["refresh_token"]
        await world.client.delete(f"/api/credentials/{first}", headers=world.auth)
        settings = settings_for(world.standin, refresh_token=refresh)
        del settings["authorize_url"]
        cred = await world.credential(**settings)
        assert (await world.read(cred))["oauth2"]["connected"] is True
        detail = await world.run(await world.workflow(cred), worker)
        assert detail["status"] == "succeeded", detail
        assert grants(world.standin) == ["authorization_code", "refresh_token"]
        assert (await world.stored(cred))[SESSION]["refresh_token"] != refresh
        # Nothing to connect with: no authorize_url.
        r = await world.client.post(f"/api/credentials/{cred}/oauth2/authorize", headers=world.auth)
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "not_authorization_code"

    async def test_only_authorization_code_credentials_connect(self, world: World) -> None:
        r = await world.client.post(
            "/api/credentials",
            json={
                "name": "cc",
                "type": "http",
                "secret": {
                    "oauth2": {
                        "token_url": f"{world.standin.url}/oauth/token",
                        "client_id": CLIENT_ID,
                        "client_secret": CLIENT_SECRET,
                    }
                },
            },
            headers=world.auth,
        )
        assert "oauth2" not in r.json()  # a client credentials grant has no connection
        r = await world.client.post(
            f"/api/credentials/{r.json()['id']}/oauth2/authorize", headers=world.auth
        )
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "not_authorization_code"


class TestCallbackRefusals:
    async def test_no_forged_or_stale_state(self, world: World) -> None:
        cred = await world.credential(**settings_for(world.standin))
        query = await world.consent(cred)
        for state, words in (
            (None, "no state"),
            ("not-a-sealed-note", "not made by this server"),
            (world.runtime.cipher.encrypt({"t": world.tenant_id, "c": cred}), "not made by"),
        ):
            forged = {k: v for k, v in query.items() if k != "state"}
            if state is not None:
                forged["state"] = state
            r = await world.callback(forged)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "invalid_state"
            assert words in r.json()["error"]["message"]
        stale = await oauth2_service.authorize(
            world.runtime.store,
            world.runtime.cipher,
            tenant_id=world.tenant_id,
            credential_id=cred,
            redirect_uri=CALLBACK,
            now=lambda: time.time() - oauth2_service.STATE_TTL_S - 1,
        )
        state = parse_qs(urlsplit(stale.authorize_url).query)["state"][0]
        r = await world.callback({**query, "state": state})
        assert r.status_code == 400
        assert "older than 10 minutes" in r.json()["error"]["message"]
        assert world.standin.requests(kind="oauth_token") == []
        assert (await world.read(cred))["oauth2"]["connected"] is False

    async def test_refused_consent_and_a_used_code(self, world: World) -> None:
        cred = await world.credential(**settings_for(world.standin))
        steer(world.standin, deny="access_denied")
        r = await world.callback(await world.consent(cred))
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "oauth2_denied"
        assert "access_denied: The user said no" in r.json()["error"]["message"]
        steer(world.standin, deny=None)
        query = await world.consent(cred)
        assert (await world.callback(query)).status_code == 200
        again = await world.callback(query)  # a code is good once (RFC 6749, 4.1.2)
        assert again.status_code == 502, again.text
        assert again.json()["error"]["code"] == "oauth2_exchange_failed"
        assert "invalid_grant" in again.json()["error"]["message"]
        assert (await world.read(cred))["oauth2"]["connected"] is True  # the first one's


class TestSlack:
    """Slack's ``oauth.v2.access``: a bot token of ``token_type`` ``bot`` (a Bearer token,
    Slack's docs say), and refusals as 200 with ``{"ok": false, "error"}``."""

    async def test_a_bot_token_connects(self, world: World) -> None:
        cred = await world.credential(**settings_for(world.standin))
        query = await world.consent(cred)
        steer(
            world.standin,
            answer={
                "ok": True,
                "access_token": "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy",
                "token_type": "bot",
                "scope": "chat:write",
                "bot_user_id": "U0KRQLJ9H",
                "app_id": "A0KRD7HC3",
                "team": {"name": "Slack Softball Team", "id": "T9TK3CUKW"},
            },
        )
        r = await world.callback(query)
        assert r.status_code == 200, r.text
        assert r.json()["scope"] == "chat:write"
        stored = (await world.stored(cred))[SESSION]
        assert stored["access_token"].startswith("xoxb-")
        assert stored["renew_at"] > time.time() + NEVER_S / 2  # no expiry, no rotation

    async def test_a_refusal_answered_200_is_said(self, world: World) -> None:
        cred = await world.credential(**settings_for(world.standin))
        query = await world.consent(cred)
        steer(world.standin, answer={"ok": False, "error": "invalid_code"})
        r = await world.callback(query)
        assert r.status_code == 502, r.text
        assert "refused: invalid_code" in r.json()["error"]["message"]

    async def test_an_invalid_refresh_token_ends_the_connection(
        self, world: World, worker: Worker
    ) -> None:
        cred = await world.credential(**settings_for(world.standin))
        await world.connect(cred)
        wf = await world.workflow(cred)
        steer(world.standin, revoke=True, answer={"ok": False, "error": "invalid_refresh_token"})
        (step,) = (await world.run(wf, worker))["steps"]
        assert "connect it again" in step["error"]
        assert (await world.read(cred))["oauth2"]["connected"] is False


class TestRenewal:
    async def test_processes_renew_one_at_a_time_so_rotation_never_revokes(
        self, world: World, http_client: HttpClient
    ) -> None:
        """Three processes (each its own token cache) want a token at once when it is due:
        one renews it and the others take the new one from the store. Each renewing with
        the same refresh token would be a reuse the stand-in punishes by revoking the
        connection."""
        cred = await world.credential(**settings_for(world.standin))
        await world.connect(cred)
        sessions = CredentialSessions(world.runtime.store, world.runtime.cipher)

        def due(secret: dict[str, Any]) -> dict[str, Any]:
            return {**secret, SESSION: {**secret[SESSION], "renew_at": time.time() - 1}}

        await sessions.update(world.tenant_id, cred, due)
        secret = await world.stored(cred)
        processes = [TokenCache(sessions=sessions) for _ in range(3)]
        params = HttpRequestParams.model_validate({"path": "contacts"})

        async def call(tokens: TokenCache) -> Any:
            ctx = StepContext(
                http=http_client,
                secret=secret,
                tenant_id=world.tenant_id,
                credential_id=cred,
                tokens=tokens,
            )
            return await HttpRequest().run(ctx, params)

        outputs = await asyncio.gather(*(call(t) for t in processes for _ in range(5)))
        assert {o["status_code"] for o in outputs} == {200}
        assert grants(world.standin) == ["authorization_code", "refresh_token"]
        sent = {r["headers"]["authorization"] for r in world.standin.requests(kind="oauth_api")}
        assert sent == {f"Bearer {(await world.stored(cred))[SESSION]['access_token']}"}

    async def test_a_renewal_finished_between_a_read_and_a_claim_is_taken_not_repeated(
        self, world: World, http_client: HttpClient
    ) -> None:
        """One process reads a due token; before its claim, another claims, renews and
        stores the rotated refresh token. The first must take the new token: claiming and
        renewing with the refresh token it read would reuse an ended one, which the
        stand-in (as Auth0 and Okta) punishes by revoking the connection."""
        cred = await world.credential(**settings_for(world.standin))
        await world.connect(cred)
        sessions = CredentialSessions(world.runtime.store, world.runtime.cipher)

        def due(secret: dict[str, Any]) -> dict[str, Any]:
            return {**secret, SESSION: {**secret[SESSION], "renew_at": time.time() - 1}}

        await sessions.update(world.tenant_id, cred, due)
        secret = await world.stored(cred)
        grant = _grant(world, cred, secret)
        ctx = StepContext(
            http=http_client, secret=secret, tenant_id=world.tenant_id, credential_id=cred
        )
        other = TokenCache(sessions=sessions)

        class Interleaved:
            """The store as the first process sees it: the other renews before its claim."""

            hook: Any = None

            async def load(self, tenant_id: str, credential_id: str) -> Any:
                return await sessions.load(tenant_id, credential_id)

            async def update(self, tenant_id: str, credential_id: str, change: Any) -> Any:
                if self.hook is not None:
                    hook, self.hook = self.hook, None
                    await hook()
                return await sessions.update(tenant_id, credential_id, change)

        interleaved = Interleaved()
        interleaved.hook = lambda: other.token(grant, ctx)
        token, _ = await TokenCache(sessions=interleaved).token(grant, ctx)
        stored = (await world.stored(cred))[SESSION]
        assert token == stored["access_token"]
        assert grants(world.standin) == ["authorization_code", "refresh_token"]
        assert "error" not in stored

    async def test_an_account_connected_again_during_a_renewal_is_not_overwritten(
        self, world: World, http_client: HttpClient
    ) -> None:
        """The user connects the account again while a process renews the old connection:
        the renewal's tokens (or its refusal) must not replace the new connection."""
        cred = await world.credential(**settings_for(world.standin))
        await world.connect(cred)
        sessions = CredentialSessions(world.runtime.store, world.runtime.cipher)

        def due(secret: dict[str, Any]) -> dict[str, Any]:
            return {**secret, SESSION: {**secret[SESSION], "renew_at": time.time() - 1}}

        await sessions.update(world.tenant_id, cred, due)
        secret = await world.stored(cred)
        grant = _grant(world, cred, secret)
        ctx = StepContext(
            http=http_client, secret=secret, tenant_id=world.tenant_id, credential_id=cred
        )

        class ConnectedBeforeRelease:
            """The store as the renewing process sees it: connected again before it stores."""

            updates = 0
            connected: dict[str, Any] = {}

            async def load(self, tenant_id: str, credential_id: str) -> Any:
                return await sessions.load(tenant_id, credential_id)

            async def update(self, tenant_id: str, credential_id: str, change: Any) -> Any:
                self.updates += 1
                if self.updates == 2:  # the claim was the first
                    await world.connect(cred)
                    self.connected = (await world.stored(cred))[SESSION]
                return await sessions.update(tenant_id, credential_id, change)

        store = ConnectedBeforeRelease()
        await TokenCache(sessions=store).token(grant, ctx)
        assert grants(world.standin) == [
            "authorization_code",
            "refresh_token",
            "authorization_code",
        ]
        assert (await world.stored(cred))[SESSION] == store.connected
        assert (await world.read(cred))["oauth2"]["connected"] is True

    async def test_a_refused_refresh_token_ends_the_connection_until_connected_again(
        self, world: World, worker: Worker
    ) -> None:
        cred = await world.credential(**settings_for(world.standin))
        await world.connect(cred)
        wf = await world.workflow(cred)
        steer(world.standin, revoke=True, revoke_refresh=True)  # the user revoked the app
        detail = await world.run(wf, worker)
        assert detail["status"] == "failed"
        (step,) = detail["steps"]
        assert step["error_code"] == TOKEN_ERROR, str(step)
        assert "connect it again" in step["error"]
        read = await world.read(cred)
        assert read["oauth2"]["connected"] is False
        assert "unknown or revoked refresh token" in read["oauth2"]["error"]
        asked = len(world.standin.requests(kind="oauth_token"))
        # The next execution fails at once: the endpoint is not asked again.
        (step,) = (await world.run(wf, worker))["steps"]
        assert "connection ended" in step["error"]
        assert len(world.standin.requests(kind="oauth_token")) == asked
        await world.connect(cred)
        assert (await world.read(cred))["oauth2"] == {
            **read["oauth2"],
            "connected": True,
            "error": None,
            "expires_at": (await world.read(cred))["oauth2"]["expires_at"],
            "scope": "orders:read offline_access",
        }
        assert (await world.run(wf, worker))["status"] == "succeeded"

    async def test_a_new_client_secret_keeps_the_connection_another_client_ends_it(
        self, world: World
    ) -> None:
        cred = await world.credential(**settings_for(world.standin))
        await world.connect(cred)
        connection = (await world.stored(cred))[SESSION]

        async def patch(**oauth2: Any) -> dict[str, Any]:
            secret = {"base_url": f"{world.standin.url}/oauth/api", "oauth2": oauth2}
            r = await world.client.patch(
                f"/api/credentials/{cred}", json={"secret": secret}, headers=world.auth
            )
            assert r.status_code == 200, r.text
            return dict(r.json()["oauth2"])

        kept = await patch(**settings_for(world.standin, authorize_params={"prompt": "x"}))
        assert kept["connected"] is True
        assert (await world.stored(cred))[SESSION] == connection
        ended = await patch(**settings_for(world.standin, client_id="another-client"))
        assert ended["connected"] is False
        assert SESSION not in await world.stored(cred)


class TestSettings:
    @pytest.mark.parametrize(
        ("oauth2", "words"),
        [
            ({"authorize_url": "https://id.example/auth"}, "only for grant_type"),
            ({"grant_type": "authorization_code"}, "needs an authorize_url"),
            (
                {
                    "grant_type": "authorization_code",
                    "authorize_url": "https://id.example/auth",
                    "authorize_params": {"state": "mine"},
                },
                "cannot set state",
            ),
        ],
    )
    async def test_refused(self, world: World, oauth2: dict[str, Any], words: str) -> None:
        base = {"token_url": "https://id.example/token", "client_id": "c", "client_secret": "s"}
        r = await world.client.post(
            "/api/credentials",
            json={"name": "x", "type": "http", "secret": {"oauth2": {**base, **oauth2}}},
            headers=world.auth,
        )
        assert r.status_code == 422, r.text
        assert words in str(r.json()["error"]["details"])

    def test_a_token_without_lifetime_or_refresh_token_does_not_expire(self) -> None:
        # GitHub's OAuth apps: used until an API refuses it.
        session = session_of(TokenAnswer("gho_x", 300.0, expires=False), now=1000.0)
        assert session == {"access_token": "gho_x", "renew_at": 1000.0 + NEVER_S}
        with_refresh = session_of(TokenAnswer("a", 300.0, "r", expires=False), now=1000.0)
        assert with_refresh["renew_at"] == 1000.0 + 240.0


def _grant(world: World, credential_id: str, secret: dict[str, Any]) -> Any:
    from ipaas.engine.connectors.oauth2 import Grant

    return Grant.of(secret, (world.tenant_id, credential_id))
