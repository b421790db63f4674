from __future__ import annotations

from typing import Any

import httpx
import pytest

from ipaas.runtime import Runtime
from tests.conftest import signup

SLACK_URL = "https://hooks.slack.com/services/T000/B000/SENTINELsecretXYZ"


async def create(client: httpx.AsyncClient, auth: dict[str, str], **body: object) -> httpx.Response:
    return await client.post("/api/credentials", json=body, headers=auth)


#: A client credentials grant whose secret must never come back in an answer.
OAUTH2 = {
    "token_url": "https://login.example.com/oauth2/token",
    "client_id": "client-1",
    "client_secret": "SENTINEL-client-secret",
}


class TestCreate:
    @pytest.mark.parametrize(
        ("type_", "secret"),
        [
            ("slack", {"webhook_url": SLACK_URL}),
            ("slack", {"bot_token": "xoxb-1234-SENTINELsecretXYZ"}),
            ("discord", {"webhook_url": "https://discord.com/api/webhooks/1/SENTINELsecretXYZ"}),
            ("openweather", {"api_key": "SENTINELsecretXYZ"}),
            ("http", {"bearer_token": "SENTINELsecretXYZ", "base_url": "https://api.example.com"}),
            ("http", {"basic": {"username": "u", "password": "SENTINELsecretXYZ"}}),
        ],
    )
    async def test_secret_is_write_only_and_encrypted(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        runtime: Runtime,
        type_: str,
        secret: dict[str, object],
    ) -> None:
        response = await create(client, auth, name="main", type=type_, secret=secret)
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) == {"id", "name", "type", "created_at"}
        assert body["id"].startswith("cred_")
        for path in ("/api/credentials", f"/api/credentials/{body['id']}"):
            read = await client.get(path, headers=auth)
            assert read.status_code == 200
            assert "SENTINEL" not in read.text
        stored = next(iter(runtime.store.credentials.values()))  # type: ignore[attr-defined]
        assert "SENTINEL" not in stored.secret_ciphertext
        assert "SENTINEL" not in repr(stored)
        assert runtime.cipher.decrypt(stored.secret_ciphertext) == secret

    async def test_wrong_secret_shape_is_422_without_echo(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        response = await create(
            client, auth, name="x", type="slack", secret={"webhook_url": "not a url SENTINEL"}
        )
        assert response.status_code == 422
        assert "SENTINEL" not in response.text
        details = response.json()["error"]["details"]
        assert details[0]["loc"] == ["body", "secret", "webhook_url"]

    async def test_both_slack_kinds_is_422(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        response = await create(
            client,
            auth,
            name="x",
            type="slack",
            secret={"webhook_url": SLACK_URL, "bot_token": "xoxb-12345678"},
        )
        assert response.status_code == 422

    async def test_a_header_with_a_line_break_is_422_without_echo(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        secret = {"headers": {"X-Key": "SENTINELsecretXYZ\r\nX-Evil: 1"}}
        response = await create(client, auth, name="x", type="http", secret=secret)
        assert response.status_code == 422
        assert "SENTINEL" not in response.text
        assert response.json()["error"]["details"][0]["loc"] == ["body", "secret", "headers"]

    @pytest.mark.parametrize(
        ("type_", "secret", "loc", "message"),
        [
            # Not ASCII, or more than one line: before, stored, and every call with it
            # failed ("'ascii' codec can't encode").
            ("http", {"headers": {"X-Key": "SENTINELsecrét"}}, ["headers"], "ASCII"),
            ("http", {"bearer_token": "SENTINEL☃token"}, ["bearer_token"], "ASCII"),
            ("http", {"bearer_token": "SENTINEL\nX-Evil: 1"}, ["bearer_token"], "ASCII"),
            ("slack", {"bot_token": "xoxb-SENTINELé"}, ["bot_token"], "ASCII"),
            # A base_url's query or fragment came before each joined path.
            (
                "http",
                {"base_url": "https://api.example.com/v1?key=SENTINEL"},
                ["base_url"],
                "without a query",
            ),
            ("http", {"base_url": "https://api.example.com/#v1"}, ["base_url"], "or fragment"),
            (
                "openweather",
                {"api_key": "k", "base_url": "https://ow.example.com/?x=1"},
                ["base_url"],
                "without a query",
            ),
            # "Bearer " was sent with nothing after it, or twice.
            ("http", {"bearer_token": ""}, ["bearer_token"], "at least 1 character"),
            ("http", {"bearer_token": "Bearer SENTINEL"}, ["bearer_token"], "without spaces"),
            ("slack", {"bot_token": "xoxb-SENTINEL "}, ["bot_token"], "without spaces"),
            # RFC 7617: the first colon ends the user: "a:b" logged in as "a".
            (
                "http",
                {"basic": {"username": "ada:x", "password": "SENTINEL"}},
                ["basic", "username"],
                "cannot hold a colon",
            ),
            # Both were stored, and every step failed ("keep one"); or one replaced the other.
            (
                "http",
                {"bearer_token": "SENTINEL", "basic": {"username": "a", "password": "b"}},
                [],
                "not bearer_token and basic",
            ),
            (
                "http",
                {"bearer_token": "SENTINEL", "headers": {"authorization": "Token x"}},
                [],
                "not bearer_token and an Authorization header",
            ),
            (
                "http",
                {},
                [],
                "give at least one of base_url, headers, query, bearer_token, basic, oauth2 "
                "or signing",
            ),
            (
                "http",
                {"bearer_token": "SENTINEL", "oauth2": OAUTH2},
                [],
                "not bearer_token and oauth2",
            ),
            (
                "http",
                {"headers": {"Authorization": "Token SENTINEL"}, "oauth2": OAUTH2},
                [],
                "not oauth2 and an Authorization header",
            ),
            (
                "http",
                {"oauth2": {**OAUTH2, "token_url": "not a URL"}},
                ["oauth2", "token_url"],
                "URL",
            ),
            (
                "http",
                {"oauth2": {**OAUTH2, "client_secret": ""}},
                ["oauth2", "client_secret"],
                "at least 1",
            ),
            (
                "http",
                {"oauth2": {**OAUTH2, "client_auth": "jwt"}},
                ["oauth2", "client_auth"],
                "'basic' or 'body'",
            ),
            ("http", {"oauth2": {**OAUTH2, "grant": "password"}}, ["oauth2", "grant"], "Extra"),
            ("http", {"query": {" ": "SENTINEL"}}, ["query"], "a query parameter needs a name"),
            ("http", {"query": {"key": 5}}, ["query", "key"], "valid string"),
            ("http", {"headers": {"Content-Length": "5"}}, ["headers"], "set by the HTTP client"),
        ],
    )
    async def test_a_secret_that_cannot_work_is_422_without_echo(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        type_: str,
        secret: dict[str, Any],
        loc: list[str],
        message: str,
    ) -> None:
        response = await create(client, auth, name="x", type=type_, secret=secret)
        assert response.status_code == 422, response.text
        assert "SENTINEL" not in response.text
        (detail,) = response.json()["error"]["details"]
        assert detail["loc"] == ["body", "secret", *loc]
        assert message in detail["msg"]

    async def test_unknown_type_is_422(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        response = await create(client, auth, name="x", type="smtp", secret={})
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["loc"] == ["body", "type"]


class TestUpdate:
    async def test_rename_and_replace_the_secret(
        self, client: httpx.AsyncClient, auth: dict[str, str], runtime: Runtime
    ) -> None:
        cid = await _created(client, auth, "openweather", {"api_key": "first-key"})
        renamed = await client.patch(
            f"/api/credentials/{cid}", json={"name": "weather"}, headers=auth
        )
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["name"] == "weather"
        stored = runtime.store.credentials[cid]  # type: ignore[attr-defined]
        assert runtime.cipher.decrypt(stored.secret_ciphertext) == {"api_key": "first-key"}

        replaced = await client.patch(
            f"/api/credentials/{cid}",
            json={"secret": {"api_key": "SENTINELsecretXYZ"}},
            headers=auth,
        )
        assert replaced.status_code == 200, replaced.text
        assert set(replaced.json()) == {"id", "name", "type", "created_at"}
        assert "SENTINEL" not in replaced.text
        assert replaced.json()["name"] == "weather"
        stored = runtime.store.credentials[cid]  # type: ignore[attr-defined]
        assert "SENTINEL" not in stored.secret_ciphertext
        assert runtime.cipher.decrypt(stored.secret_ciphertext) == {"api_key": "SENTINELsecretXYZ"}

    @pytest.mark.parametrize(
        ("body", "loc"),
        [
            ({}, ["body"]),
            ({"secret": {"webhook_url": "https://discord.com/api/webhooks/1/x"}}, None),
            ({"type": "discord", "secret": {"api_key": "k"}}, ["body", "type"]),
            ({"name": ""}, ["body", "name"]),
            ({"secret": {"api_key": "SENTINELsecretXYZ", "extra": "SENTINEL"}}, None),
        ],
        ids=["empty", "another-types-secret", "type", "empty-name", "extra-field"],
    )
    async def test_bad_changes_are_422_and_change_nothing(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        runtime: Runtime,
        body: dict[str, object],
        loc: list[str] | None,
    ) -> None:
        cid = await _created(client, auth, "openweather", {"api_key": "first-key"})
        response = await client.patch(f"/api/credentials/{cid}", json=body, headers=auth)
        assert response.status_code == 422, response.text
        assert "SENTINEL" not in response.text
        if loc is not None:
            assert response.json()["error"]["details"][0]["loc"][: len(loc)] == loc
        else:
            assert response.json()["error"]["details"][0]["loc"][:2] == ["body", "secret"]
        stored = runtime.store.credentials[cid]  # type: ignore[attr-defined]
        assert stored.name == "openweather"
        assert runtime.cipher.decrypt(stored.secret_ciphertext) == {"api_key": "first-key"}


class TestIsolation:
    async def test_other_tenant_gets_404(self, client: httpx.AsyncClient) -> None:
        a = await signup(client, "a@example.com")
        b = await signup(client, "b@example.com")
        a.pop("tenant_id")
        b.pop("tenant_id")
        created = await create(client, a, name="x", type="openweather", secret={"api_key": "k"})
        cid = created.json()["id"]
        assert (await client.get(f"/api/credentials/{cid}", headers=b)).status_code == 404
        assert (await client.delete(f"/api/credentials/{cid}", headers=b)).status_code == 404
        stolen = await client.patch(f"/api/credentials/{cid}", json={"name": "mine"}, headers=b)
        assert stolen.status_code == 404
        assert (await client.get("/api/credentials", headers=b)).json() == []
        assert (await client.delete(f"/api/credentials/{cid}", headers=a)).status_code == 204
        assert (await client.get(f"/api/credentials/{cid}", headers=a)).status_code == 404


async def _created(
    client: httpx.AsyncClient, auth: dict[str, str], type_: str, secret: dict[str, str]
) -> str:
    response = await create(client, auth, name=type_, type=type_, secret=secret)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


class TestDeleteInUse:
    """A credential a workflow uses is not deleted: every run of the workflow would fail,
    and a webhook's signing secret would turn every delivery away."""

    async def _workflow(
        self, client: httpx.AsyncClient, auth: dict[str, str], name: str, **shape: object
    ) -> str:
        response = await client.post("/api/workflows", json={"name": name, **shape}, headers=auth)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def test_refused_while_a_step_or_a_trigger_uses_it(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        slack = await _created(client, auth, "slack", {"webhook_url": SLACK_URL})
        signing = await _created(client, auth, "webhook_secret", {"secret": "k" * 32})
        step = {"id": "notify", "type": "slack_message", "credential_id": slack}
        step["config"] = {"text": "hi"}
        by_step = await self._workflow(client, auth, "Orders", steps=[step])
        by_trigger = await self._workflow(
            client,
            auth,
            "Signed",
            trigger={
                "type": "webhook",
                "auth": {"scheme": "hmac_sha256", "credential_id": signing},
            },
            steps=[{"id": "s", "type": "http_request", "config": {"url": "https://example.com"}}],
        )
        for credential_id, workflow_id, name in (
            (slack, by_step, "Orders"),
            (signing, by_trigger, "Signed"),
        ):
            response = await client.delete(f"/api/credentials/{credential_id}", headers=auth)
            assert response.status_code == 409, response.text
            error = response.json()["error"]
            assert error["code"] == "credential_in_use"
            assert f"'{name}' ({workflow_id})" in error["message"]
            assert error["details"] == {"workflows": [{"id": workflow_id, "name": name}]}
            kept = await client.get(f"/api/credentials/{credential_id}", headers=auth)
            assert kept.status_code == 200

        # Once no current version uses it, it goes.
        replaced = {
            "id": "notify",
            "type": "http_request",
            "config": {"url": "https://example.com"},
        }
        response = await client.put(
            f"/api/workflows/{by_step}", json={"name": "Orders", "steps": [replaced]}, headers=auth
        )
        assert response.status_code == 200, response.text
        assert (
            await client.delete(f"/api/workflows/{by_trigger}", headers=auth)
        ).status_code == 204
        for credential_id in (slack, signing):
            response = await client.delete(f"/api/credentials/{credential_id}", headers=auth)
            assert response.status_code == 204, response.text

    async def test_the_message_names_three_and_counts_the_rest(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        cid = await _created(client, auth, "slack", {"webhook_url": SLACK_URL})
        step = {"id": "n", "type": "slack_message", "credential_id": cid, "config": {"text": "x"}}
        ids = [await self._workflow(client, auth, f"wf{n}", steps=[step]) for n in range(5)]
        response = await client.delete(f"/api/credentials/{cid}", headers=auth)
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["message"].count("(wf_") == 3
        assert "and 2 more" in error["message"]
        assert sorted(w["id"] for w in error["details"]["workflows"]) == sorted(ids)
