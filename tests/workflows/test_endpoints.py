from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from ipaas.engine import templating
from tests.conftest import signup

SLACK_URL = "https://hooks.slack.com/services/T000/B000/XXXX"


async def slack_credential(client: httpx.AsyncClient, auth: dict[str, str]) -> str:
    response = await client.post(
        "/api/credentials",
        json={"name": "slack", "type": "slack", "secret": {"webhook_url": SLACK_URL}},
        headers=auth,
    )
    return str(response.json()["id"])


def general(credential_id: str, text: str = "Order {{ trigger.body.id }}") -> dict[str, object]:
    return {
        "name": "Orders to Slack",
        "trigger": {"type": "webhook"},
        "steps": [
            {
                "id": "notify",
                "type": "slack_message",
                "credential_id": credential_id,
                "config": {"text": text},
            }
        ],
    }


class TestCreate:
    async def test_general_shape(self, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
        cid = await slack_credential(client, auth)
        response = await client.post("/api/workflows", json=general(cid), headers=auth)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["id"].startswith("wf_")
        assert body["active"] is True
        assert body["version"] == 1
        assert body["webhook_url"] == f"http://ipaas.test/api/webhooks/{body['id']}"
        assert body["steps"][0]["config"] == {"text": "Order {{ trigger.body.id }}"}

    async def test_seed_shape_is_stored_as_general_shape(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        cid = await slack_credential(client, auth)
        # The seed's dry-run example, verbatim but for the credential id.
        seed = {
            "name": "Test Slack",
            "trigger_type": "webhook",
            "action_type": "slack_message",
            "config_json": json.dumps({"credential_id": cid, "slack_message": "Test"}),
        }
        response = await client.post("/api/workflows", json=seed, headers=auth)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["trigger"] == {"type": "webhook"}
        assert body["steps"] == [
            {
                "id": "action",
                "type": "slack_message",
                "name": None,
                "credential_id": cid,
                "config": {"slack_message": "Test"},
                "timeout_s": None,
                "retry": None,
                "for_each": None,
                "concurrency": None,
                "when": None,
            }
        ]

    async def test_seed_shape_with_bad_config_json_is_422(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        seed = {
            "name": "x",
            "trigger_type": "webhook",
            "action_type": "slack_message",
            "config_json": "{not json",
        }
        response = await client.post("/api/workflows", json=seed, headers=auth)
        assert response.status_code == 422
        assert "config_json" in response.text

    async def test_bad_step_config_is_422_naming_the_field(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        cid = await slack_credential(client, auth)
        body = general(cid)
        body["steps"][0]["config"] = {"text": "hi", "colour": "red"}  # type: ignore[index]
        response = await client.post("/api/workflows", json=body, headers=auth)
        assert response.status_code == 422
        details = response.json()["error"]["details"]
        assert ["body", "steps", 0, "config", "colour"] in [d["loc"] for d in details]

    async def test_templated_values_are_checked_after_rendering(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        response = await client.post(
            "/api/workflows",
            json={
                "name": "weather",
                "steps": [
                    {
                        "id": "w",
                        "type": "http_request",
                        "config": {"url": "http://example.com", "method": "{{ trigger.body.m }}"},
                    }
                ],
            },
            headers=auth,
        )
        assert response.status_code == 201, response.text

    async def test_unknown_type_missing_credential_and_bad_template(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        response = await client.post(
            "/api/workflows",
            json={
                "name": "x",
                "steps": [
                    {"id": "a", "type": "fax_message", "config": {}},
                    {"id": "b", "type": "slack_message", "config": {"text": "hi"}},
                    {"id": "c", "type": "http_request", "config": {"url": "{{ oops"}},
                ],
            },
            headers=auth,
        )
        assert response.status_code == 422
        locs = {tuple(d["loc"]) for d in response.json()["error"]["details"]}
        assert ("body", "steps", 0, "type") in locs
        assert ("body", "steps", 1, "credential_id") in locs
        assert ("body", "steps", 2, "url") in locs

    async def test_a_template_naming_what_no_execution_has_is_422(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        """Each rendered as nothing, or failed, in every execution; now refused at save, by
        create, PUT, PATCH and dry run alike (``templating.check_references``)."""
        credential_id = await slack_credential(client, auth)
        body = general(credential_id)
        first = body["steps"][0]  # type: ignore[index]
        second = {**first, "id": "echo", "config": {"text": "{{ steps.notify.output }}"}}
        body["steps"] = [
            {**first, "config": {"text": "{{ steps.echo.output }}", "blocks": "{{ trigerr }}"}},
            {**second, "config": {"text": "{{ steps.notify.outptu }} {{ trigger.bdy }}"}},
        ]
        expected = [
            (["body", "steps", 0, "text"], "steps.echo runs after this step"),
            (["body", "steps", 0, "blocks"], "unknown name 'trigerr'"),
            (["body", "steps", 1, "text"], "steps.notify has no 'outptu'"),
            (["body", "steps", 1, "text"], "trigger has no 'bdy'"),
        ]
        created = await client.post("/api/workflows", json=general(credential_id), headers=auth)
        path = f"/api/workflows/{created.json()['id']}"
        for method, url, sent in (
            ("POST", "/api/workflows", body),
            ("PUT", path, body),
            ("PATCH", path, {"steps": body["steps"]}),
            ("POST", "/api/workflows/dry-run", body | {"mode": "simulate"}),
        ):
            response = await client.request(method, url, json=sent, headers=auth)
            assert response.status_code == 422, (method, url, response.text)
            details = response.json()["error"]["details"]
            assert [d["type"] for d in details] == ["template_reference"] * 4
            assert [
                (d["loc"], says in d["msg"]) for d, (_, says) in zip(details, expected, strict=True)
            ] == [(loc, True) for loc, _ in expected], details
        # The same steps, each naming what comes before it, are a workflow.
        second["config"] = {"text": "{{ steps.notify.output }} {{ trigger.body }}"}
        body["steps"] = [first, second]
        response = await client.put(path, json=body, headers=auth)
        assert response.status_code == 200, response.text
        assert response.json()["version"] == 2

    async def test_credential_of_wrong_type_or_tenant_is_422(
        self, client: httpx.AsyncClient
    ) -> None:
        a = await signup(client, "a@example.com")
        b = await signup(client, "b@example.com")
        a.pop("tenant_id")
        b.pop("tenant_id")
        a_cred = await slack_credential(client, a)
        response = await client.post("/api/workflows", json=general(a_cred), headers=b)
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["type"] == "credential_not_found"


async def follow_links(
    client: httpx.AsyncClient, auth: dict[str, str], url: str
) -> list[list[dict[str, Any]]]:
    """Every page of a list, from ``url`` along its ``Link: <...>; rel="next"`` headers."""
    pages: list[list[dict[str, Any]]] = []
    next_url: str | None = url
    while next_url is not None:
        page = await client.get(next_url, headers=auth)
        assert page.status_code == 200, page.text
        pages.append(page.json())
        link = page.headers.get("link")
        next_url = None if link is None else link.split(">")[0].lstrip("<")
        if link is not None:
            assert link.endswith('>; rel="next"')
            assert next_url.startswith(f"http://ipaas.test{url.split('?')[0]}?")
    return pages


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("   ", "must hold something besides white space"),
        ("a\x00b", "must not contain the NUL character"),
        ("x" * 201, "at most 200 characters"),
    ],
)
async def test_a_step_name_follows_the_rules_of_names(
    client: httpx.AsyncClient, auth: dict[str, str], name: str, why: str
) -> None:
    """Found by hand: a step named "   " (or 5,000 characters, or holding NUL) was saved."""
    cid = await slack_credential(client, auth)
    body = general(cid)
    body["steps"] = [{**body["steps"][0], "name": name}]  # type: ignore[index]
    for method, url in (("POST", "/api/workflows"), ("POST", "/api/workflows/dry-run")):
        response = await client.request(method, url, json=body, headers=auth)
        assert response.status_code == 422, response.text
        (detail,) = response.json()["error"]["details"]
        assert detail["loc"] == ["body", "steps", 0, "name"]
        assert why in detail["msg"]
    body["steps"] = [{**body["steps"][0], "name": "Tell #orders"}]  # type: ignore[index]
    assert (await client.post("/api/workflows", json=body, headers=auth)).status_code == 201


class TestUpdate:
    async def test_put_makes_a_new_version_and_patch_deactivates(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        cid = await slack_credential(client, auth)
        wf = (await client.post("/api/workflows", json=general(cid), headers=auth)).json()
        put = await client.put(
            f"/api/workflows/{wf['id']}",
            json=general(cid, "v2 {{ trigger.body.id }}"),
            headers=auth,
        )
        assert put.status_code == 200
        assert put.json()["version"] == 2
        renamed = await client.patch(
            f"/api/workflows/{wf['id']}", json={"name": "renamed"}, headers=auth
        )
        assert renamed.json()["version"] == 2  # a rename is not a new version
        off = await client.patch(f"/api/workflows/{wf['id']}", json={"active": False}, headers=auth)
        assert off.status_code == 200
        assert off.json()["active"] is False
        got = await client.get(f"/api/workflows/{wf['id']}", headers=auth)
        assert got.json()["name"] == "renamed"
        assert got.json()["steps"][0]["config"]["text"].startswith("v2")

    async def test_list_in_pages_follows_the_link_header(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        cid = await slack_credential(client, auth)
        for n in range(7):
            body = general(cid) | {"name": f"wf {n}"}
            assert (await client.post("/api/workflows", json=body, headers=auth)).status_code == 201
        everything = await client.get("/api/workflows", headers=auth)
        assert "link" not in everything.headers
        names = [w["name"] for w in everything.json()]
        assert names == [f"wf {n}" for n in range(6, -1, -1)]

        pages = [
            [w["name"] for w in page]
            for page in await follow_links(client, auth, "/api/workflows?limit=3")
        ]
        assert [len(p) for p in pages] == [3, 3, 1]
        assert [name for page in pages for name in page] == names

    @pytest.mark.parametrize(
        ("query", "status"),
        [("limit=0", 422), ("limit=501", 422), ("limit=x", 422), ("cursor=%21%21", 400)],
    )
    async def test_bad_page_parameters(
        self, client: httpx.AsyncClient, auth: dict[str, str], query: str, status: int
    ) -> None:
        response = await client.get(f"/api/workflows?{query}", headers=auth)
        assert response.status_code == status, response.text
        assert "error" in response.json()

    async def test_etag_and_if_match(self, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
        """Two people edit from the same copy: the second edit gets 412 instead of
        overwriting the first; ``*`` and the current tag go through."""
        cid = await slack_credential(client, auth)
        created = await client.post("/api/workflows", json=general(cid), headers=auth)
        wf_id = created.json()["id"]
        first = created.headers["etag"]
        got = await client.get(f"/api/workflows/{wf_id}", headers=auth)
        assert got.headers["etag"] == first
        assert first.startswith('"1-')
        assert first.endswith('"')

        alice = await client.patch(
            f"/api/workflows/{wf_id}", json={"name": "alice"}, headers=auth | {"If-Match": first}
        )
        assert alice.status_code == 200, alice.text
        second = alice.headers["etag"]
        assert second != first
        bob = await client.put(
            f"/api/workflows/{wf_id}",
            json=general(cid, "bob {{ trigger.body.id }}"),
            headers=auth | {"If-Match": first},
        )
        assert bob.status_code == 412, bob.text
        error = bob.json()["error"]
        assert error["code"] == "precondition_failed"
        assert error["details"] == {"etag": second}
        now = (await client.get(f"/api/workflows/{wf_id}", headers=auth)).json()
        assert (now["name"], now["version"]) == ("alice", 1)

        # A list holding the current tag, a weak tag (never matches), and "*".
        listed = await client.put(
            f"/api/workflows/{wf_id}",
            json=general(cid, "v2 {{ trigger.body.id }}"),
            headers=auth | {"If-Match": f'"nope", {second}'},
        )
        assert listed.status_code == 200, listed.text
        assert listed.json()["version"] == 2
        weak = await client.patch(
            f"/api/workflows/{wf_id}",
            json={"name": "weak"},
            headers=auth | {"If-Match": "W/" + listed.headers["etag"]},
        )
        assert weak.status_code == 412
        star = await client.patch(
            f"/api/workflows/{wf_id}", json={"name": "any"}, headers=auth | {"If-Match": "*"}
        )
        assert star.status_code == 200

        stale_delete = await client.delete(
            f"/api/workflows/{wf_id}", headers=auth | {"If-Match": first}
        )
        assert stale_delete.status_code == 412
        current = star.headers["etag"]
        deleted = await client.delete(
            f"/api/workflows/{wf_id}", headers=auth | {"If-Match": current}
        )
        assert deleted.status_code == 204
        gone = await client.patch(
            f"/api/workflows/{wf_id}", json={"name": "x"}, headers=auth | {"If-Match": "*"}
        )
        assert gone.status_code == 404

    @pytest.mark.parametrize("value", ["3-17", '"unterminated', '"a" "b"', "", 'W/ "a"'])
    async def test_malformed_if_match_is_400(
        self, client: httpx.AsyncClient, auth: dict[str, str], value: str
    ) -> None:
        cid = await slack_credential(client, auth)
        wf = (await client.post("/api/workflows", json=general(cid), headers=auth)).json()
        for send in (client.patch, client.put):
            body = {"name": "x"} if send is client.patch else general(cid)
            response = await send(
                f"/api/workflows/{wf['id']}", json=body, headers=auth | {"If-Match": value}
            )
            assert response.status_code == 400, (value, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_if_match"
            assert "quoted entity tags as sent in ETag" in error["message"]
        refused = await client.delete(
            f"/api/workflows/{wf['id']}", headers=auth | {"If-Match": value}
        )
        assert refused.status_code == 400
        assert (await client.get(f"/api/workflows/{wf['id']}", headers=auth)).json()["name"] == (
            "Orders to Slack"
        )

    async def test_delete_then_404(self, client: httpx.AsyncClient, auth: dict[str, str]) -> None:
        cid = await slack_credential(client, auth)
        wf = (await client.post("/api/workflows", json=general(cid), headers=auth)).json()
        assert (await client.delete(f"/api/workflows/{wf['id']}", headers=auth)).status_code == 204
        assert (await client.get(f"/api/workflows/{wf['id']}", headers=auth)).status_code == 404
        assert (await client.post(f"/api/webhooks/{wf['id']}", json={})).status_code == 404

    async def test_other_tenant_gets_404_everywhere(self, client: httpx.AsyncClient) -> None:
        a = await signup(client, "a@example.com")
        b = await signup(client, "b@example.com")
        a.pop("tenant_id")
        b.pop("tenant_id")
        cid = await slack_credential(client, a)
        wf = (await client.post("/api/workflows", json=general(cid), headers=a)).json()
        path = f"/api/workflows/{wf['id']}"
        assert (await client.get(path, headers=b)).status_code == 404
        assert (await client.patch(path, json={"active": False}, headers=b)).status_code == 404
        assert (await client.put(path, json=general(cid), headers=b)).status_code == 404
        assert (await client.delete(path, headers=b)).status_code == 404
        assert (await client.post(f"{path}/run", headers=b)).status_code == 404
        assert (await client.post(f"{path}/dry-run", headers=b)).status_code == 404
        assert (await client.get(f"{path}/versions", headers=b)).status_code == 404
        assert (await client.get(f"{path}/versions/1", headers=b)).status_code == 404
        assert (await client.post(f"{path}/versions/1/restore", headers=b)).status_code == 404
        assert (await client.get("/api/workflows", headers=b)).json() == []


def texts(versions: list[dict[str, object]]) -> list[str]:
    return [v["steps"][0]["config"]["text"] for v in versions]  # type: ignore[index]


class TestVersions:
    async def edited(
        self, client: httpx.AsyncClient, auth: dict[str, str], n: int
    ) -> tuple[str, str]:
        """A workflow saved ``n`` times (texts v1 .. vn); its id and credential."""
        cid = await slack_credential(client, auth)
        created = await client.post("/api/workflows", json=general(cid, "v1"), headers=auth)
        wf_id = created.json()["id"]
        for i in range(2, n + 1):
            put = await client.put(
                f"/api/workflows/{wf_id}", json=general(cid, f"v{i}"), headers=auth
            )
            assert put.json()["version"] == i
        return wf_id, cid

    async def test_history_newest_first_in_pages(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        wf_id, _ = await self.edited(client, auth, 5)
        await client.patch(f"/api/workflows/{wf_id}", json={"name": "renamed"}, headers=auth)
        everything = await client.get(f"/api/workflows/{wf_id}/versions", headers=auth)
        assert everything.status_code == 200, everything.text
        assert "link" not in everything.headers
        versions = everything.json()
        assert [(v["version"], v["current"]) for v in versions] == [
            (5, True),
            (4, False),
            (3, False),
            (2, False),
            (1, False),
        ]
        assert texts(versions) == ["v5", "v4", "v3", "v2", "v1"]
        assert versions[0]["trigger"] == {"type": "webhook"}
        assert versions[0]["created_at"] >= versions[1]["created_at"]

        pages = await follow_links(client, auth, f"/api/workflows/{wf_id}/versions?limit=2")
        assert [[v["version"] for v in page] for page in pages] == [[5, 4], [3, 2], [1]]

        one = await client.get(f"/api/workflows/{wf_id}/versions/2", headers=auth)
        assert one.status_code == 200, one.text
        assert (one.json()["version"], texts([one.json()]), one.json()["current"]) == (
            2,
            ["v2"],
            False,
        )

    @pytest.mark.parametrize(
        ("path", "status", "code"),
        [
            ("versions/9", 404, "version_not_found"),
            ("versions/0", 422, "validation_error"),
            ("versions/x", 422, "validation_error"),
            ("versions?limit=0", 422, "validation_error"),
            ("versions?limit=501", 422, "validation_error"),
            ("versions?before=0", 422, "validation_error"),
            ("versions/9/restore", 404, "version_not_found"),
        ],
    )
    async def test_refused(
        self, client: httpx.AsyncClient, auth: dict[str, str], path: str, status: int, code: str
    ) -> None:
        wf_id, _ = await self.edited(client, auth, 2)
        send = client.post if path.endswith("restore") else client.get
        response = await send(f"/api/workflows/{wf_id}/{path}", headers=auth)
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        missing = await client.get("/api/workflows/wf_missing/versions", headers=auth)
        assert missing.json()["error"]["code"] == "workflow_not_found"
        now = (await client.get(f"/api/workflows/{wf_id}", headers=auth)).json()
        assert now["version"] == 2

    async def test_restore_saves_the_old_steps_as_a_new_version(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        wf_id, _ = await self.edited(client, auth, 3)
        patched = await client.patch(
            f"/api/workflows/{wf_id}", json={"name": "kept", "active": False}, headers=auth
        )
        restored = await client.post(f"/api/workflows/{wf_id}/versions/1/restore", headers=auth)
        assert restored.status_code == 200, restored.text
        body = restored.json()
        assert (body["version"], body["name"], body["active"]) == (4, "kept", False)
        assert body["steps"][0]["config"]["text"] == "v1"
        assert restored.headers["etag"] not in (patched.headers["etag"], None)
        versions = (await client.get(f"/api/workflows/{wf_id}/versions", headers=auth)).json()
        assert texts(versions) == ["v1", "v3", "v2", "v1"]
        # The current version again: nothing to save.
        again = await client.post(f"/api/workflows/{wf_id}/versions/4/restore", headers=auth)
        assert again.status_code == 200
        assert again.json()["version"] == 4

    async def test_restore_honours_if_match(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        wf_id, cid = await self.edited(client, auth, 2)
        seen = (await client.get(f"/api/workflows/{wf_id}", headers=auth)).headers["etag"]
        await client.put(f"/api/workflows/{wf_id}", json=general(cid, "v3"), headers=auth)
        stale = await client.post(
            f"/api/workflows/{wf_id}/versions/1/restore", headers=auth | {"If-Match": seen}
        )
        assert stale.status_code == 412, stale.text
        assert stale.json()["error"]["code"] == "precondition_failed"
        bad = await client.post(
            f"/api/workflows/{wf_id}/versions/1/restore", headers=auth | {"If-Match": "3-1"}
        )
        assert bad.status_code == 400
        now = (await client.get(f"/api/workflows/{wf_id}", headers=auth)).json()
        assert (now["version"], now["steps"][0]["config"]["text"]) == (3, "v3")

    async def test_a_version_whose_credential_is_gone_is_not_restored(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        wf_id, old_cid = await self.edited(client, auth, 1)
        new_cid = await slack_credential(client, auth)
        await client.put(f"/api/workflows/{wf_id}", json=general(new_cid, "v2"), headers=auth)
        assert (await client.delete(f"/api/credentials/{old_cid}", headers=auth)).status_code == 204
        refused = await client.post(f"/api/workflows/{wf_id}/versions/1/restore", headers=auth)
        assert refused.status_code == 422, refused.text
        [detail] = refused.json()["error"]["details"]
        assert detail["loc"] == ["body", "steps", 0, "credential_id"]
        assert (await client.get(f"/api/workflows/{wf_id}", headers=auth)).json()["version"] == 2


def scheduled(credential_id: str, trigger: dict[str, object]) -> dict[str, object]:
    return {**general(credential_id), "name": "Every five minutes", "trigger": trigger}


class TestScheduleTrigger:
    async def test_valid_schedule_is_201_and_has_no_webhook_url(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        cid = await slack_credential(client, auth)
        trigger = {"type": "schedule", "cron": "*/5 * * * *", "timezone": "Europe/Berlin"}
        response = await client.post("/api/workflows", json=scheduled(cid, trigger), headers=auth)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["trigger"] == trigger
        # Only webhook workflows take webhooks. Before, the read showed a URL all the same,
        # and it answered 404.
        assert body["webhook_url"] is None
        assert (await client.post(f"/api/webhooks/{body['id']}", json={})).status_code == 404

    async def test_only_a_webhook_trigger_has_a_webhook_url(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        cid = await slack_credential(client, auth)
        manual = {**general(cid), "trigger": {"type": "manual"}}
        made = (await client.post("/api/workflows", json=manual, headers=auth)).json()
        assert made["webhook_url"] is None
        listed = (await client.get("/api/workflows", headers=auth)).json()
        assert [w["webhook_url"] for w in listed] == [None]
        patched = await client.patch(
            f"/api/workflows/{made['id']}", json={"trigger": {"type": "webhook"}}, headers=auth
        )
        url = f"http://ipaas.test/api/webhooks/{made['id']}"
        assert patched.json()["webhook_url"] == url
        assert (await client.post(url, json={})).status_code == 202
        # What a read gave back, null included, is taken in a write.
        read = (await client.get(f"/api/workflows/{made['id']}", headers=auth)).json()
        sent_back = {**read, "trigger": {"type": "manual"}}
        put = await client.put(f"/api/workflows/{made['id']}", json=sent_back, headers=auth)
        assert put.status_code == 200, put.text
        assert put.json()["webhook_url"] is None

    async def test_timezone_defaults_to_utc(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        cid = await slack_credential(client, auth)
        trigger = {"type": "schedule", "cron": "0 9 * * 1-5"}
        response = await client.post("/api/workflows", json=scheduled(cid, trigger), headers=auth)
        assert response.status_code == 201, response.text
        assert response.json()["trigger"] == {**trigger, "timezone": "UTC"}

    @pytest.mark.parametrize(
        ("trigger", "field"),
        [
            ({"type": "schedule"}, "cron"),
            ({"type": "schedule", "cron": "not cron"}, "cron"),
            ({"type": "schedule", "cron": "61 * * * *"}, "cron"),
            ({"type": "schedule", "cron": "0 0 9 * * *"}, "cron"),  # six fields: seconds
            ({"type": "schedule", "cron": 5}, "cron"),
            ({"type": "schedule", "cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
            ({"type": "schedule", "cron": "* * * * *", "timezone": "../../etc/passwd"}, "timezone"),
            # Found by hand, each a 500: a directory of the zone database, and a name longer
            # than a file name may be.
            ({"type": "schedule", "cron": "* * * * *", "timezone": "Europe"}, "timezone"),
            ({"type": "schedule", "cron": "* * * * *", "timezone": "A" * 5000}, "timezone"),
            # Found by hand: 20,000 minutes took 75 ms to check, and as long at each tick.
            ({"type": "schedule", "cron": "1," * 20000 + "1 * * * *"}, "cron"),
            # Valid cron that never fires: before, it was saved, and croniter's failure to
            # find its tick stopped the scheduler's passes for every tenant.
            ({"type": "schedule", "cron": "0 0 30 2 *"}, "cron"),
            ({"type": "schedule", "cron": "0 0 31 4,6,9,11 *"}, "cron"),
        ],
    )
    async def test_bad_cron_or_timezone_is_422_naming_the_field(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        trigger: dict[str, object],
        field: str,
    ) -> None:
        cid = await slack_credential(client, auth)
        response = await client.post("/api/workflows", json=scheduled(cid, trigger), headers=auth)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert [d["loc"] for d in error["details"]] == [["body", "trigger", field]]
        assert f"trigger.{field}" in error["message"]
        assert (await client.get("/api/workflows", headers=auth)).json() == []

    @pytest.mark.parametrize(
        "cron",
        [
            "0 0 29 2 *",  # every leap year
            "0 0 30 2 1",  # day 30 or Monday, as cron reads both: every Monday in February
            "0 0 31 * *",  # the months that have one
        ],
    )
    async def test_rare_but_real_days_are_saved(
        self, client: httpx.AsyncClient, auth: dict[str, str], cron: str
    ) -> None:
        cid = await slack_credential(client, auth)
        trigger = {"type": "schedule", "cron": cron}
        response = await client.post("/api/workflows", json=scheduled(cid, trigger), headers=auth)
        assert response.status_code == 201, response.text

    async def test_a_cron_that_never_fires_says_why(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        cid = await slack_credential(client, auth)
        trigger = {"type": "schedule", "cron": "0 9 30 2 *"}
        response = await client.post("/api/workflows", json=scheduled(cid, trigger), headers=auth)
        (detail,) = response.json()["error"]["details"]
        assert "never fires" in detail["msg"]
        assert "February 30" in detail["msg"]

    async def test_put_and_patch_check_the_schedule_too(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        cid = await slack_credential(client, auth)
        wf = (await client.post("/api/workflows", json=general(cid), headers=auth)).json()
        path = f"/api/workflows/{wf['id']}"
        bad = {"type": "schedule", "cron": "every minute"}
        put = await client.put(path, json=scheduled(cid, bad), headers=auth)
        patch = await client.patch(path, json={"trigger": bad}, headers=auth)
        assert put.status_code == patch.status_code == 422
        assert [d["loc"] for d in patch.json()["error"]["details"]] == [["body", "trigger", "cron"]]
        good = {"type": "schedule", "cron": "@hourly", "timezone": "Asia/Tokyo"}
        patched = await client.patch(path, json={"trigger": good}, headers=auth)
        assert patched.status_code == 200, patched.text
        assert patched.json()["trigger"] == good
        assert patched.json()["version"] == 2


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What Jinja is asked to compile from now on (none cached): counted, not timed, so
    that a busy machine does not fail a test."""
    sources: list[str] = []
    templating._compile.cache_clear()
    env = templating._ENV
    for name in ("from_string", "compile_expression"):
        original = getattr(env, name)

        def counting(source: str, *args: Any, _original: Any = original, **kw: Any) -> Any:
            sources.append(source)
            return _original(source, *args, **kw)

        monkeypatch.setattr(env, name, counting)
    return sources


class TestTemplateCost:
    """What a workflow's templates may cost to compile, on the event loop, at create, dry
    run and first run in each process. Found by hand on the embedded server, with a step
    text of 45,000 ``{{ }}`` (945 KB, under the API's body limit): 5.5 s to create, other
    requests waiting (``/healthz`` 3.5 s), the server's peak RSS 190 -> 840 MB. And a 500 for
    each template Jinja or Python could not compile."""

    async def post(
        self, client: httpx.AsyncClient, auth: dict[str, str], path: str, text: str
    ) -> httpx.Response:
        cid = await slack_credential(client, auth)
        step = {"id": "s", "type": "slack_message", "credential_id": cid, "config": {"text": text}}
        return await client.post(path, json={"name": "t", "steps": [step]}, headers=auth)

    @pytest.mark.parametrize(
        ("text", "counted"),
        [
            ("{{ trigger.body.a }} " * 45_000, "45000 template tags of 900000 characters"),
            ("{{ [" + ",".join(["1"] * 20_000) + "] }}", "1 template tags of 40007 characters"),
        ],
    )
    async def test_too_much_template_code_is_refused_before_compiling(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        text: str,
        counted: str,
        compiled: list[str],
    ) -> None:
        for path in ("/api/workflows", "/api/workflows/dry-run"):
            response = await self.post(client, auth, path, text)
            assert compiled == []
            assert response.status_code == 422, response.text
            (detail,) = response.json()["error"]["details"]
            assert detail["loc"] == ["body", "steps"]
            assert detail["type"] == "templates_too_large"
            assert counted in detail["msg"]
        # Within the bounds (19,981 characters of code), with long literal text: taken.
        fits = "{{ trigger.body.a }}" * 998 + "x" * 400_000 + "{% if 1 %}{% endif %}"
        assert (await self.post(client, auth, "/api/workflows", fits)).status_code == 201
        assert fits in compiled  # the count above sees what is compiled

    async def test_a_waiting_answer_s_body_is_bounded_before_compiling_too(
        self, client: httpx.AsyncClient, auth: dict[str, str], compiled: list[str]
    ) -> None:
        """Found by review: ``response.body`` (up to 64 KiB) was compiled whatever its size."""
        body = "{{ [" + ",".join(["1"] * 12_000) + "] }}"  # 24,007 characters of code
        workflow = {
            "name": "t",
            "trigger": {"type": "webhook", "response": {"wait_s": 5, "body": body}},
            "steps": [{"id": "t", "type": "transform", "config": {"value": 1}}],
        }
        r = await client.post("/api/workflows", json=workflow, headers=auth)
        assert r.status_code == 422, r.text
        assert compiled == []
        (detail,) = r.json()["error"]["details"]
        assert detail["loc"] == ["body", "trigger", "response", "body"]
        assert detail["type"] == "templates_too_large"
        assert "1 template tags of 24007 characters" in detail["msg"]
        workflow["trigger"]["response"]["body"] = "{{ steps.t.output }}" + "x" * 60_000
        assert (await client.post("/api/workflows", json=workflow, headers=auth)).status_code == 201
        assert compiled != []

    @pytest.mark.parametrize(
        "text",
        [
            "{{ " + "+".join(["a"] * 5000) + " }}",  # RecursionError in Jinja's parser
            "{{ " + "(" * 200 + "a" + ")" * 200 + " }}",  # idem
            "{% for i in a %}" * 30 + "x" + "{% endfor %}" * 30,  # too many nested blocks
            "{% if a %}" * 200 + "x" + "{% endif %}" * 200,  # IndentationError
        ],
    )
    async def test_a_template_too_complex_to_compile_is_a_422(
        self, client: httpx.AsyncClient, auth: dict[str, str], text: str
    ) -> None:
        for path in ("/api/workflows", "/api/workflows/dry-run"):
            response = await self.post(client, auth, path, text)
            assert response.status_code == 422, response.text
            (detail,) = response.json()["error"]["details"]
            assert detail["loc"] == ["body", "steps", 0, "text"]
            assert "too deeply nested or too long to compile" in detail["msg"]
