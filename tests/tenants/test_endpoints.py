from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import argon2
import argon2.profiles
import httpx
import pytest

from ipaas.config import Signup
from ipaas.engine import retention
from ipaas.engine.retention import prune_tokens_once
from ipaas.runtime import Runtime
from ipaas.tenants import service as tenant_service
from ipaas.tenants.service import hash_token
from tests.conftest import PRODUCTION_HASHER, signup

PASSWORD = "correct horse battery"


class TestSignup:
    async def test_returns_token_and_tenant(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/api/auth/signup",
            json={"email": "ada@example.com", "password": PASSWORD, "tenant_name": "Acme"},
        )
        assert response.status_code == 201
        body = response.json()
        assert body["token_type"] == "bearer"
        assert body["tenant_id"].startswith("tn_")
        assert body["access_token"].startswith("ipaas_")

    async def test_duplicate_email_is_409(self, client: httpx.AsyncClient) -> None:
        await signup(client, "ada@example.com")
        response = await client.post(
            "/api/auth/signup",
            json={"email": "ADA@example.com", "password": PASSWORD, "tenant_name": "Other"},
        )
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "email_taken"

    async def test_short_password_is_422_naming_the_field(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/api/auth/signup",
            json={"email": "ada@example.com", "password": "Zq9x!", "tenant_name": "Acme"},
        )
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert "password" in error["message"]
        assert "Zq9x!" not in response.text  # inputs are never echoed

    async def test_password_is_stored_as_argon2_and_token_as_hash(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await signup(client)
        token = headers["Authorization"].removeprefix("Bearer ")
        user = await runtime.store.get_user_by_email("ada@example.com")
        assert user is not None
        assert user.password_hash.startswith("$argon2")
        assert PASSWORD not in user.password_hash
        stored = await runtime.store.get_token_by_hash(hash_token(token))
        assert stored is not None
        assert token not in stored.model_dump_json()

    def test_the_product_hashes_with_argon2id_at_full_cost(self) -> None:
        # In-process tests swap in a cheap hasher (tests/conftest.py); the product's own:
        assert PRODUCTION_HASHER.type is argon2.Type.ID
        params = argon2.profiles.RFC_9106_LOW_MEMORY
        assert (PRODUCTION_HASHER.memory_cost, PRODUCTION_HASHER.time_cost) == (
            params.memory_cost,
            params.time_cost,
        )
        assert PRODUCTION_HASHER.verify(PRODUCTION_HASHER.hash(PASSWORD), PASSWORD)

    async def test_ipaas_signup_closes_it(
        self, client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A private server's webhook URLs are public, so was its sign-up: anyone who found
        it could make a tenant and run workflows there."""

        async def sign_up(email: str) -> httpx.Response:
            body = {"email": email, "password": PASSWORD, "tenant_name": "Acme"}
            return await client.post("/api/auth/signup", json=body)

        monkeypatch.setattr(runtime.settings, "signup", Signup.closed)
        refused = await sign_up("ada@example.com")
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "signup_closed"
        assert await runtime.store.list_tenant_ids() == []
        monkeypatch.setattr(runtime.settings, "signup", Signup.first)
        assert (await sign_up("ada@example.com")).status_code == 201  # the operator's own
        refused = await sign_up("eve@example.com")
        assert refused.status_code == 403, refused.text
        assert len(await runtime.store.list_tenant_ids()) == 1
        # Closed for good (tenants are never deleted): known without reading every tenant.
        reads: list[str] = []
        listed = runtime.store.list_tenant_ids

        async def counted() -> list[str]:
            reads.append("tenant ids")
            return await listed()

        monkeypatch.setattr(runtime.store, "list_tenant_ids", counted)
        assert (await sign_up("mallory@example.com")).status_code == 403
        assert reads == []
        monkeypatch.setattr(runtime.settings, "signup", Signup.open)
        assert (await sign_up("eve@example.com")).status_code == 201

    async def test_first_lets_in_one_of_sign_ups_at_once(
        self, client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The operator's first sign-up raced by a stranger's: the password's hashing lies
        between the check and the insert, so both got in, and the stranger had a tenant on
        a server that was to have one."""
        monkeypatch.setattr(runtime.settings, "signup", Signup.first)
        emails = [f"user{i}@example.com" for i in range(5)]
        responses = await asyncio.gather(
            *(
                client.post(
                    "/api/auth/signup",
                    json={"email": email, "password": PASSWORD, "tenant_name": email},
                )
                for email in emails
            )
        )
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [201, 403, 403, 403, 403], [r.text for r in responses]
        refused = [r.json()["error"]["code"] for r in responses if r.status_code == 403]
        assert refused == ["signup_closed"] * 4
        assert len(await runtime.store.list_tenant_ids()) == 1
        # The refused ones left nothing behind: their emails are free for an invitation.
        for email, response in zip(emails, responses, strict=True):
            user = await runtime.store.get_user_by_email(email)
            assert (user is not None) is (response.status_code == 201)


class TestLogin:
    async def test_password_form_gives_a_working_token(self, client: httpx.AsyncClient) -> None:
        await signup(client)
        response = await client.post(
            "/api/auth/token", data={"username": "Ada@Example.com", "password": PASSWORD}
        )
        assert response.status_code == 200
        token = response.json()["access_token"]
        listed = await client.get("/api/workflows", headers={"Authorization": f"Bearer {token}"})
        assert listed.status_code == 200

    @pytest.mark.parametrize(
        ("signed_up_as", "logs_in_as"),
        [
            ("ada@bücher.example", "ADA@xn--bcher-kva.example"),  # the domain in ASCII (IDNA)
            ("ada@xn--bcher-kva.example", "ada@bücher.example"),
            ("zoë@example.com", "zoe\u0308@example.com"),  # the same letter, decomposed (NFD)
        ],
    )
    async def test_every_spelling_of_an_address_is_the_same_account(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        signed_up_as: str,
        logs_in_as: str,
    ) -> None:
        """Sign-up stored the address as email-validator normalizes it (its domain in
        Unicode, NFC); log-in looked up what was typed, lowercased: the same address in its
        other spelling got 401, and each spelling had a login throttle of its own."""
        await signup(client, signed_up_as)
        logged_in = await client.post(
            "/api/auth/token", data={"username": logs_in_as, "password": PASSWORD}
        )
        assert logged_in.status_code == 200, logged_in.text
        taken = await client.post(
            "/api/auth/signup",
            json={"email": logs_in_as, "password": PASSWORD, "tenant_name": "Again"},
        )
        assert taken.status_code == 409, taken.text
        throttle = runtime.logins
        assert throttle._key(logs_in_as) == throttle._key(signed_up_as)

    async def test_an_address_stored_as_typed_before_still_logs_in(
        self, client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``ipaas tenant create`` stored the address as typed (lowercased), its IDNA
        domain in ASCII: that user logs in as before."""
        monkeypatch.setattr(tenant_service, "canonical_email", str.lower)
        await tenant_service.signup(
            runtime.store,
            email="ada@xn--bcher-kva.example",
            password=PASSWORD,
            tenant_name="Acme",
            token_ttl_s=3600,
            policy=Signup.open,
        )
        monkeypatch.undo()
        stored = await runtime.store.get_user_by_email("ada@xn--bcher-kva.example")
        assert stored is not None
        logged_in = await client.post(
            "/api/auth/token", data={"username": "ada@xn--bcher-kva.example", "password": PASSWORD}
        )
        assert logged_in.status_code == 200, logged_in.text

    async def test_wrong_password_is_401(self, client: httpx.AsyncClient) -> None:
        await signup(client)
        response = await client.post(
            "/api/auth/token", data={"username": "ada@example.com", "password": "wrong-password"}
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"

    async def test_a_log_in_sent_as_json_says_to_send_a_form(
        self, client: httpx.AsyncClient
    ) -> None:
        """Found by hand: JSON read as a form with no fields, answered "Field required" for
        the two fields the body held."""
        await signup(client)
        credentials = {"username": "ada@example.com", "password": PASSWORD}
        for sent in ({"json": credentials}, {"content": b"username=ada", "headers": {}}):
            response = await client.post("/api/auth/token", **sent)  # type: ignore[arg-type]
            assert response.status_code == 415, response.text
            error = response.json()["error"]
            assert error["code"] == "unsupported_media_type"
            assert "application/x-www-form-urlencoded" in error["message"]
        spec = (await client.get("/openapi.json")).json()
        assert "415" in spec["paths"]["/api/auth/token"]["post"]["responses"]
        # As a form, with its charset, it logs in.
        form = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
        body = "username=ada%40example.com&password=" + PASSWORD.replace(" ", "+")
        response = await client.post("/api/auth/token", content=body, headers=form)
        assert response.status_code == 200, response.text

    async def test_unknown_user_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/api/auth/token", data={"username": "nobody@example.com", "password": PASSWORD}
        )
        assert response.status_code == 401


class TestChangePassword:
    async def login(self, client: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
        return await client.post(
            "/api/auth/token", data={"username": "ada@example.com", "password": password}
        )

    async def test_new_password_works_and_other_sessions_end(
        self, client: httpx.AsyncClient
    ) -> None:
        signed_up = await signup(client)
        signed_up.pop("tenant_id")
        other_session = {
            "Authorization": f"Bearer {(await self.login(client)).json()['access_token']}"
        }
        current = {"Authorization": f"Bearer {(await self.login(client)).json()['access_token']}"}
        deploy = await client.post("/api/tokens", json={"name": "deploy"}, headers=current)
        deploy_auth = {"Authorization": f"Bearer {deploy.json()['token']}"}
        # Named like a session, but made on purpose: kept (it was ended, by its name).
        named = await client.post("/api/tokens", json={"name": "login"}, headers=current)
        named_auth = {"Authorization": f"Bearer {named.json()['token']}"}
        assert named.json()["session"] is False
        listed = (await client.get("/api/tokens", headers=current)).json()
        assert sorted((t["name"], t["session"]) for t in listed) == [
            ("deploy", False),
            ("login", False),
            ("login", True),
            ("login", True),
            ("signup", True),
        ]

        changed = await client.post(
            "/api/auth/password",
            json={"current_password": PASSWORD, "new_password": "a new long password"},
            headers=current,
        )

        assert changed.status_code == 200, changed.text
        assert changed.json() == {"sessions_ended": 2}  # the sign-up's and the other log-in
        for ended in (signed_up, other_session):
            assert (await client.get("/api/workflows", headers=ended)).status_code == 401
        for kept in (current, deploy_auth, named_auth):
            assert (await client.get("/api/workflows", headers=kept)).status_code == 200
        assert (await self.login(client)).status_code == 401
        assert (await self.login(client, "a new long password")).status_code == 200

    async def test_wrong_current_password_is_403_and_counts_as_a_failed_login(
        self, client: httpx.AsyncClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from ipaas.tenants import throttle

        monkeypatch.setattr(throttle, "LOGIN_FAILURES", 2)
        body = {"current_password": "not it", "new_password": "a new long password"}
        for _ in range(2):
            wrong = await client.post("/api/auth/password", json=body, headers=auth)
            assert wrong.status_code == 403, wrong.text
            assert wrong.json()["error"]["code"] == "incorrect_password"
        guessed = await client.post("/api/auth/password", json=body, headers=auth)
        assert guessed.status_code == 429
        assert guessed.json()["error"]["code"] == "too_many_attempts"
        assert "retry-after" in guessed.headers
        assert (await self.login(client)).status_code == 429  # log-ins wait too
        assert (await client.get("/api/workflows", headers=auth)).status_code == 200

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"current_password": PASSWORD, "new_password": "short"}, "new_password"),
            ({"new_password": "a new long password"}, "current_password"),
        ],
    )
    async def test_bad_bodies_are_422_naming_the_field(
        self, client: httpx.AsyncClient, auth: dict[str, str], body: dict[str, str], field: str
    ) -> None:
        response = await client.post("/api/auth/password", json=body, headers=auth)
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["loc"] == ["body", field]
        assert (await self.login(client)).status_code == 200  # unchanged

    async def test_needs_a_token(self, client: httpx.AsyncClient) -> None:
        body = {"current_password": PASSWORD, "new_password": "a new long password"}
        assert (await client.post("/api/auth/password", json=body)).status_code == 401

    async def test_a_token_of_no_user_is_403(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        tenant_id = (await signup(client))["tenant_id"]
        _, plaintext = await tenant_service.create_token(
            runtime.store, tenant_id=tenant_id, name="ops"
        )
        response = await client.post(
            "/api/auth/password",
            json={"current_password": PASSWORD, "new_password": "a new long password"},
            headers={"Authorization": f"Bearer {plaintext}"},
        )
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "token_has_no_user"


class TestPasswordWork:
    """Password hashes (~100 ms of CPU each at the product's cost) run on a thread of their
    own, never on the event loop, and only so many wait for it."""

    async def test_a_login_does_not_hold_the_event_loop(
        self, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(tenant_service, "_hasher", PRODUCTION_HASHER)
        await signup(client)
        gaps: list[float] = []

        async def tick() -> None:  # what intake and deliveries need: the loop's turns
            last = time.perf_counter()
            while True:
                await asyncio.sleep(0.002)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticker = asyncio.ensure_future(tick())
        started = time.perf_counter()
        try:
            response = await client.post(
                "/api/auth/token", data={"username": "ada@example.com", "password": "wrong one"}
            )
        finally:
            ticker.cancel()
        took = time.perf_counter() - started
        assert response.status_code == 401
        # On the loop, the verify was one gap as long as the login (~100 ms here): the
        # ticker did not even get a turn before the answer.
        assert gaps, "the event loop did not turn while the password was checked"
        assert max(gaps) < took / 2, (max(gaps), took)

    async def test_too_many_waiting_is_429_at_once(
        self, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await signup(client)
        release = threading.Event()
        slow = _BlockingHasher(release)
        monkeypatch.setattr(tenant_service, "_hasher", slow)
        monkeypatch.setattr(tenant_service, "PASSWORD_QUEUE_MAX", 2)
        form = {"username": "ada@example.com", "password": PASSWORD}
        logins = [
            asyncio.ensure_future(client.post("/api/auth/token", data=form)) for _ in range(3)
        ]
        await _until(lambda: slow.started == 1)  # one runs, two wait for the thread
        refused = await client.post("/api/auth/token", data=form)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_logins"
        assert refused.headers["retry-after"] == "1"
        # A client that gives up does not free the thread it is waiting for.
        logins[2].cancel()
        assert (await client.post("/api/auth/token", data=form)).status_code == 429
        release.set()
        answered = await asyncio.gather(*logins[:2])
        assert [r.status_code for r in answered] == [200, 200]
        await _until(lambda: tenant_service._password_work.pending == 0)
        assert (await client.post("/api/auth/token", data=form)).status_code == 200


class _BlockingHasher:
    """Verifies (the test's password only) once ``release`` is set."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.started = 0

    def verify(self, _hash: str, password: str) -> bool:
        self.started += 1
        assert self.release.wait(10)
        return password == PASSWORD


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


class TestBearerAuth:
    async def test_api_routes_need_a_token(self, client: httpx.AsyncClient) -> None:
        for method, path in [
            ("GET", "/api/workflows"),
            ("POST", "/api/workflows"),
            ("GET", "/api/credentials"),
            ("GET", "/api/executions"),
            ("GET", "/api/executions/ex_x"),
            ("POST", "/api/executions/ex_x/cancel"),
            ("GET", "/api/tokens"),
            ("POST", "/api/workflows/dry-run"),
        ]:
            response = await client.request(method, path, json={})
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "unauthorized"

    async def test_garbage_token_is_401(self, client: httpx.AsyncClient) -> None:
        for value in ["Bearer nope", "Bearer ipaas_nope", "Basic abc"]:
            response = await client.get("/api/workflows", headers={"Authorization": value})
            assert response.status_code == 401, value


class TestTokens:
    async def test_create_list_revoke(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        created = await client.post("/api/tokens", json={"name": "ci"}, headers=auth)
        assert created.status_code == 201
        token = created.json()["token"]
        new_auth = {"Authorization": f"Bearer {token}"}
        listed = await client.get("/api/tokens", headers=new_auth)
        assert listed.status_code == 200
        names = [t["name"] for t in listed.json()]
        assert "ci" in names
        assert all("token" not in t for t in listed.json())
        revoked = await client.delete(f"/api/tokens/{created.json()['id']}", headers=auth)
        assert revoked.status_code == 204
        assert (await client.get("/api/tokens", headers=new_auth)).status_code == 401

    async def test_an_expired_token_leaves_the_list_and_is_deleted_a_day_later(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        runtime: Runtime,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Found by hand: every log-in's session token stayed listed after it expired, and
        no token was ever deleted."""
        created = await client.post(
            "/api/tokens", json={"name": "brief", "expires_in_s": 1}, headers=auth
        )
        brief = created.json()
        listed = await client.get("/api/tokens", headers=auth)
        assert [t["name"] for t in listed.json()] == ["brief", "signup"]
        await asyncio.sleep(1.05)
        listed = await client.get("/api/tokens", headers=auth)
        assert [t["name"] for t in listed.json()] == ["signup"]
        stored = hash_token(brief["token"])
        assert await prune_tokens_once(runtime) == 0  # ended under a day ago
        assert await runtime.store.get_token_by_hash(stored) is not None
        monkeypatch.setattr(retention, "TOKENS_KEPT_AFTER_END", timedelta(0))
        assert await prune_tokens_once(runtime) == 1
        assert await runtime.store.get_token_by_hash(stored) is None
        brief_auth = {"Authorization": f"Bearer {brief['token']}"}
        assert (await client.get("/api/tokens", headers=brief_auth)).status_code == 401
        assert (await client.get("/api/tokens", headers=auth)).status_code == 200

    async def test_other_tenants_token_is_404(self, client: httpx.AsyncClient) -> None:
        a = await signup(client, "a@example.com")
        b = await signup(client, "b@example.com")
        a.pop("tenant_id")
        b.pop("tenant_id")
        created = await client.post("/api/tokens", json={"name": "x"}, headers=a)
        response = await client.delete(f"/api/tokens/{created.json()['id']}", headers=b)
        assert response.status_code == 404
