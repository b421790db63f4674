"""A tenant's members through the API: invite, accept, roles, removal, and who may do it."""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import timedelta
from typing import Any

import httpx
import pytest

from ipaas.runtime import Runtime
from ipaas.stores import MemoryStore
from tests.conftest import signup

PASSWORD = "another horse battery"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def invite(
    client: httpx.AsyncClient, owner: dict[str, str], email: str, role: str = "member"
) -> dict[str, Any]:
    r = await client.post("/api/members", json={"email": email, "role": role}, headers=owner)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def join(client: httpx.AsyncClient, invite_token: str) -> dict[str, str]:
    r = await client.post(
        "/api/auth/invite", json={"invite_token": invite_token, "password": PASSWORD}
    )
    assert r.status_code == 200, r.text
    return bearer(r.json()["access_token"])


async def members(client: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = await client.get("/api/members", headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json())


@pytest.fixture
async def owner(client: httpx.AsyncClient) -> dict[str, str]:
    headers = await signup(client, "owner@example.com")
    headers.pop("tenant_id")
    return headers


class TestInvite:
    async def test_an_invited_member_joins_and_shares_the_tenant(
        self, client: httpx.AsyncClient, owner: dict[str, str]
    ) -> None:
        [me] = await members(client, owner)
        assert (me["email"], me["role"], me["status"]) == ("owner@example.com", "owner", "active")
        invited = await invite(client, owner, "Bob@Example.com")
        assert (invited["email"], invited["role"], invited["status"]) == (
            "bob@example.com",
            "member",
            "invited",
        )
        assert invited["invite_token"].startswith("ipaas_invite_")
        assert invited["invite_url"] == f"http://ipaas.test/invite#{invited['invite_token']}"
        listed = await members(client, owner)
        assert [m["status"] for m in listed] == ["active", "invited"]
        assert all("invite_token" not in m for m in listed)  # shown once

        # No password logs in before the invitation is accepted.
        refused = await client.post(
            "/api/auth/token", data={"username": "bob@example.com", "password": ""}
        )
        assert refused.status_code == 422
        refused = await client.post(
            "/api/auth/token", data={"username": "bob@example.com", "password": "x"}
        )
        assert refused.status_code == 401

        bob = await join(client, invited["invite_token"])
        workflows = await client.get("/api/workflows", headers=bob)
        assert workflows.status_code == 200
        credential = await client.post(
            "/api/credentials",
            json={"name": "s", "type": "slack", "secret": {"webhook_url": "https://x.test/s"}},
            headers=bob,
        )
        assert credential.status_code == 201
        mine = await client.get("/api/credentials", headers=owner)
        assert [c["id"] for c in mine.json()] == [credential.json()["id"]]
        assert [m["status"] for m in await members(client, bob)] == ["active", "active"]
        login = await client.post(
            "/api/auth/token", data={"username": "bob@example.com", "password": PASSWORD}
        )
        assert login.status_code == 200

    async def test_an_invitation_is_used_once(
        self, client: httpx.AsyncClient, owner: dict[str, str]
    ) -> None:
        invited = await invite(client, owner, "bob@example.com")
        await join(client, invited["invite_token"])
        again = await client.post(
            "/api/auth/invite",
            json={"invite_token": invited["invite_token"], "password": "taken over!"},
        )
        assert again.status_code == 404
        assert again.json()["error"]["code"] == "invite_not_found"
        login = await client.post(
            "/api/auth/token", data={"username": "bob@example.com", "password": PASSWORD}
        )
        assert login.status_code == 200

    @pytest.mark.parametrize(
        "token", ["ipaas_invite_nope", "nope", "ipaas_" + "x" * 40, "ipaas_invite_" + "x" * 43]
    )
    async def test_an_unknown_invitation_is_404(
        self, client: httpx.AsyncClient, owner: dict[str, str], token: str
    ) -> None:
        await invite(client, owner, "bob@example.com")
        r = await client.post(
            "/api/auth/invite", json={"invite_token": token, "password": PASSWORD}
        )
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "invite_not_found"

    async def test_an_expired_invitation_is_404_and_listed_expired(
        self, client: httpx.AsyncClient, owner: dict[str, str], runtime: Runtime
    ) -> None:
        invited = await invite(client, owner, "bob@example.com")
        store = runtime.store
        assert isinstance(store, MemoryStore)
        user = store.users[invited["id"]]
        assert user.invite_expires_at is not None
        user.invite_expires_at -= timedelta(days=8)
        r = await client.post(
            "/api/auth/invite",
            json={"invite_token": invited["invite_token"], "password": PASSWORD},
        )
        assert r.status_code == 404
        assert [m["status"] for m in await members(client, owner)] == ["active", "expired"]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"email": "not an email"}, "email"),
            ({"email": "bob@example.com", "role": "admin"}, "role"),
            ({}, "email"),
        ],
    )
    async def test_a_bad_invitation_is_422(
        self, client: httpx.AsyncClient, owner: dict[str, str], body: dict[str, str], field: str
    ) -> None:
        r = await client.post("/api/members", json=body, headers=owner)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"][0]["loc"] == ["body", field]
        assert len(await members(client, owner)) == 1

    async def test_a_short_password_is_422(
        self, client: httpx.AsyncClient, owner: dict[str, str]
    ) -> None:
        invited = await invite(client, owner, "bob@example.com")
        r = await client.post(
            "/api/auth/invite", json={"invite_token": invited["invite_token"], "password": "x"}
        )
        assert r.status_code == 422
        assert (await members(client, owner))[1]["status"] == "invited"

    async def test_an_email_with_an_account_anywhere_is_409(
        self, client: httpx.AsyncClient, owner: dict[str, str]
    ) -> None:
        await signup(client, "carol@example.com")
        for email in ("carol@example.com", "OWNER@example.com"):
            r = await client.post("/api/members", json={"email": email}, headers=owner)
            assert r.status_code == 409, r.text
            assert r.json()["error"]["code"] == "email_taken"
        await invite(client, owner, "bob@example.com")
        r = await client.post("/api/members", json={"email": "bob@example.com"}, headers=owner)
        assert r.status_code == 409


class TestOwnersOnly:
    async def test_a_member_reads_but_does_not_manage(
        self, client: httpx.AsyncClient, owner: dict[str, str]
    ) -> None:
        bob = await join(client, (await invite(client, owner, "bob@example.com"))["invite_token"])
        me = (await members(client, owner))[0]["id"]
        for r in (
            await client.post("/api/members", json={"email": "eve@example.com"}, headers=bob),
            await client.patch(f"/api/members/{me}", json={"role": "member"}, headers=bob),
            await client.delete(f"/api/members/{me}", headers=bob),
        ):
            assert r.status_code == 403, r.text
            assert r.json()["error"]["code"] == "owners_only"
        assert [m["role"] for m in await members(client, owner)] == ["owner", "member"]

    async def test_an_owner_can_make_another_owner_who_then_manages(
        self, client: httpx.AsyncClient, owner: dict[str, str]
    ) -> None:
        invited = await invite(client, owner, "bob@example.com")
        bob = await join(client, invited["invite_token"])
        r = await client.patch(
            f"/api/members/{invited['id']}", json={"role": "owner"}, headers=owner
        )
        assert r.status_code == 200, r.text
        assert (r.json()["role"], r.json()["status"]) == ("owner", "active")
        assert (await invite(client, bob, "eve@example.com"))["role"] == "member"

    async def test_a_token_of_no_user_is_refused(
        self, client: httpx.AsyncClient, owner: dict[str, str], runtime: Runtime
    ) -> None:
        from ipaas.tenants import service as tenant_service

        tenant_id = (await client.get("/api/tenant", headers=owner)).json()["id"]
        _, token = await tenant_service.create_token(runtime.store, tenant_id=tenant_id, name="x")
        r = await client.post(
            "/api/members", json={"email": "eve@example.com"}, headers=bearer(token)
        )
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "token_has_no_user"


class TestTokens:
    """Found by hand: every member listed every token of the tenant (sessions included, not
    saying whose) and could revoke any, an owner's or an integration's."""

    async def test_a_member_lists_and_revokes_only_its_own(
        self, client: httpx.AsyncClient, owner: dict[str, str], runtime: Runtime
    ) -> None:
        from ipaas.tenants import service as tenant_service

        invited = await invite(client, owner, "bob@example.com")
        bob = await join(client, invited["invite_token"])
        owners = (await client.get("/api/tokens", headers=owner)).json()
        assert [t["name"] for t in owners] == ["invite", "signup"]  # newest first
        owner_id = next(m["id"] for m in await members(client, owner) if m["role"] == "owner")
        assert [t["user_id"] for t in owners] == [invited["id"], owner_id]
        tenant_id = (await client.get("/api/tenant", headers=owner)).json()["id"]
        _, no_ones = await tenant_service.create_token(
            runtime.store, tenant_id=tenant_id, name="ci"
        )

        bobs = (await client.get("/api/tokens", headers=bob)).json()
        assert [(t["name"], t["user_id"]) for t in bobs] == [("invite", invited["id"])]
        for other in [t["id"] for t in owners if t["user_id"] == owner_id] + [
            t["id"]
            for t in (await client.get("/api/tokens", headers=owner)).json()
            if t["user_id"] is None
        ]:
            r = await client.delete(f"/api/tokens/{other}", headers=bob)
            assert r.status_code == 404, r.text
        assert (await client.get("/api/tenant", headers=owner)).status_code == 200
        assert (await client.get("/api/tenant", headers=bearer(no_ones))).status_code == 200

        # Its own, yes; and the owner may revoke any.
        made = (await client.post("/api/tokens", json={"name": "bob-ci"}, headers=bob)).json()
        assert made["user_id"] == invited["id"]
        assert (await client.delete(f"/api/tokens/{made['id']}", headers=bob)).status_code == 204
        bobs_session = bobs[0]["id"]
        r = await client.delete(f"/api/tokens/{bobs_session}", headers=owner)
        assert r.status_code == 204
        assert (await client.get("/api/tokens", headers=bob)).status_code == 401

    async def test_a_token_of_no_user_lists_only_the_no_ones(
        self, client: httpx.AsyncClient, owner: dict[str, str], runtime: Runtime
    ) -> None:
        from ipaas.tenants import service as tenant_service

        tenant_id = (await client.get("/api/tenant", headers=owner)).json()["id"]
        _, token = await tenant_service.create_token(runtime.store, tenant_id=tenant_id, name="ci")
        listed = (await client.get("/api/tokens", headers=bearer(token))).json()
        assert [(t["name"], t["user_id"]) for t in listed] == [("ci", None)]


class TestRemove:
    async def test_a_removed_member_is_signed_out_everywhere(
        self, client: httpx.AsyncClient, owner: dict[str, str], logs: list[MutableMapping[str, Any]]
    ) -> None:
        invited = await invite(client, owner, "bob@example.com")
        bob = await join(client, invited["invite_token"])
        made = await client.post("/api/tokens", json={"name": "bob's ci"}, headers=bob)
        ci = bearer(made.json()["token"])
        assert (await client.get("/api/workflows", headers=ci)).status_code == 200
        r = await client.delete(f"/api/members/{invited['id']}", headers=owner)
        assert r.status_code == 204, r.text
        for headers in (bob, ci):
            assert (await client.get("/api/workflows", headers=headers)).status_code == 401
        login = await client.post(
            "/api/auth/token", data={"username": "bob@example.com", "password": PASSWORD}
        )
        assert login.status_code == 401
        assert len(await members(client, owner)) == 1
        assert made.json()["id"] not in {
            t["id"] for t in (await client.get("/api/tokens", headers=owner)).json()
        }
        assert [e["user_id"] for e in logs if e["event"] == "member_removed"] == [invited["id"]]
        # Gone: the email can be invited again.
        again = await invite(client, owner, "bob@example.com")
        assert again["id"] != invited["id"]

    async def test_an_invitation_is_withdrawn_by_removing_it(
        self, client: httpx.AsyncClient, owner: dict[str, str]
    ) -> None:
        invited = await invite(client, owner, "bob@example.com")
        assert (
            await client.delete(f"/api/members/{invited['id']}", headers=owner)
        ).status_code == 204
        r = await client.post(
            "/api/auth/invite",
            json={"invite_token": invited["invite_token"], "password": PASSWORD},
        )
        assert r.status_code == 404

    async def test_the_last_owner_stays(
        self, client: httpx.AsyncClient, owner: dict[str, str]
    ) -> None:
        me = (await members(client, owner))[0]["id"]
        # An invited owner who has not accepted does not count: they cannot log in yet.
        await invite(client, owner, "bob@example.com", role="owner")
        for r in (
            await client.delete(f"/api/members/{me}", headers=owner),
            await client.patch(f"/api/members/{me}", json={"role": "member"}, headers=owner),
        ):
            assert r.status_code == 409, r.text
            assert r.json()["error"]["code"] == "last_owner"
        assert (await members(client, owner))[0]["role"] == "owner"

    async def test_an_owner_leaves_once_another_owner_exists(
        self, client: httpx.AsyncClient, owner: dict[str, str]
    ) -> None:
        me = (await members(client, owner))[0]["id"]
        invited = await invite(client, owner, "bob@example.com", role="owner")
        bob = await join(client, invited["invite_token"])
        r = await client.delete(f"/api/members/{me}", headers=owner)
        assert r.status_code == 204, r.text
        assert (await client.get("/api/members", headers=owner)).status_code == 401
        assert [m["email"] for m in await members(client, bob)] == ["bob@example.com"]

    async def test_another_tenants_member_is_not_found(
        self, client: httpx.AsyncClient, owner: dict[str, str]
    ) -> None:
        other = await signup(client, "carol@example.com")
        other.pop("tenant_id")
        carol = (await members(client, other))[0]["id"]
        for r in (
            await client.delete(f"/api/members/{carol}", headers=owner),
            await client.patch(f"/api/members/{carol}", json={"role": "member"}, headers=owner),
        ):
            assert r.status_code == 404, r.text
            assert r.json()["error"]["code"] == "member_not_found"
        assert [m["email"] for m in await members(client, owner)] == ["owner@example.com"]
        assert (await members(client, other))[0]["role"] == "owner"
