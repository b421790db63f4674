from __future__ import annotations

import argon2
import argon2.profiles
import httpx

from ipaas.runtime import Runtime
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

    async def test_wrong_password_is_401(self, client: httpx.AsyncClient) -> None:
        await signup(client)
        response = await client.post(
            "/api/auth/token", data={"username": "ada@example.com", "password": "wrong-password"}
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"

    async def test_unknown_user_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/api/auth/token", data={"username": "nobody@example.com", "password": PASSWORD}
        )
        assert response.status_code == 401


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

    async def test_other_tenants_token_is_404(self, client: httpx.AsyncClient) -> None:
        a = await signup(client, "a@example.com")
        b = await signup(client, "b@example.com")
        a.pop("tenant_id")
        b.pop("tenant_id")
        created = await client.post("/api/tokens", json={"name": "x"}, headers=a)
        response = await client.delete(f"/api/tokens/{created.json()['id']}", headers=b)
        assert response.status_code == 404
