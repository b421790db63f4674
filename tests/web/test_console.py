"""The console over ASGI (no browser): sessions, CSRF, secrets, tenant isolation, errors."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ipaas.config import Signup
from ipaas.engine import alerts as alert_engine
from ipaas.engine.alerts import alert_pass
from ipaas.engine.worker import Worker
from ipaas.executions.models import ExecutionStatus
from ipaas.kit.clock import utcnow
from ipaas.runtime import Runtime
from ipaas.stores import MemoryStore
from ipaas.web.session import CSRF_COOKIE, SESSION_COOKIE
from ipaas.workflows.models import Trigger
from tests.standins.oauth import CLIENT_ID, CLIENT_SECRET
from tests.standins.server import StandinServer

SECRET_URL = "http://127.0.0.1:9/services/T000/B000/SENTINELsecretXYZ"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


async def post_form(
    client: httpx.AsyncClient, page: str, action: str, data: dict[str, str]
) -> httpx.Response:
    """Submit a form the way a browser does: token from the page, cookies from the jar."""
    token = csrf_of(await client.get(page))
    return await client.post(action, data={"csrf_token": token, **data})


async def console_signup(client: httpx.AsyncClient, email: str = "ada@example.com") -> None:
    response = await post_form(
        client,
        "/signup",
        "/signup",
        {"email": email, "password": "correct horse battery", "tenant_name": "Acme"},
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/"


def new_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Another browser against the same app (its own cookie jar)."""
    return httpx.AsyncClient(transport=client._transport, base_url=client.base_url)


class TestSignupSetting:
    """``IPAAS_SIGNUP`` in the console (the API's in tests/tenants/test_endpoints.py)."""

    async def test_closed_shows_why_and_no_form_and_no_link(
        self, client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(runtime.settings, "signup", Signup.closed)
        page = await client.get("/signup")
        assert page.status_code == 403
        assert "Sign-up is closed on this server" in page.text
        assert 'action="/signup"' not in page.text
        login = await client.get("/login")
        assert 'href="/signup"' not in login.text
        form = {"email": "eve@example.com", "password": "correct horse battery"}
        refused = await client.post(
            "/signup", data={"csrf_token": csrf_of(login), **form, "tenant_name": "Eve"}
        )
        assert refused.status_code == 403
        assert "Sign-up is closed on this server" in refused.text
        assert await runtime.store.list_tenant_ids() == []

    async def test_first_takes_the_first_only(
        self, client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(runtime.settings, "signup", Signup.first)
        assert 'href="/signup"' in (await client.get("/login")).text
        await console_signup(client)
        other = new_client(client)
        page = await other.get("/signup")
        assert page.status_code == 403
        assert "Sign-up is closed on this server" in page.text
        assert 'href="/signup"' not in page.text
        assert 'href="/signup"' not in (await other.get("/login")).text  # closed now


class TestSession:
    async def test_signup_sets_an_httponly_lax_session_cookie(
        self, client: httpx.AsyncClient
    ) -> None:
        token = csrf_of(await client.get("/signup"))
        response = await client.post(
            "/signup",
            data={
                "csrf_token": token,
                "email": "ada@example.com",
                "password": "correct horse battery",
                "tenant_name": "Acme",
            },
        )
        cookies = [c for c in response.headers.get_list("set-cookie") if SESSION_COOKIE in c]
        assert len(cookies) == 1
        assert "HttpOnly" in cookies[0]
        assert "SameSite=lax" in cookies[0]
        assert "Secure" not in cookies[0]  # plain HTTP here
        assert (await client.get("/")).status_code == 200

    async def test_cookies_are_secure_over_tls(self, client: httpx.AsyncClient) -> None:
        async with httpx.AsyncClient(
            transport=client._transport, base_url="https://ipaas.test"
        ) as tls:
            page = await tls.get("/login")
            assert "Secure" in page.headers["set-cookie"]

    async def test_without_a_session_pages_redirect_to_login(
        self, client: httpx.AsyncClient
    ) -> None:
        for path in ("/", "/workflows", "/credentials", "/executions", "/tokens", "/password"):
            response = await client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"] == "/login"

    async def test_changing_the_password_signs_out_the_other_browsers(
        self, client: httpx.AsyncClient
    ) -> None:
        await console_signup(client)
        async with new_client(client) as laptop:
            login = await post_form(
                laptop,
                "/login",
                "/login",
                {"email": "ada@example.com", "password": "correct horse battery"},
            )
            assert login.status_code == 303
            assert (await laptop.get("/workflows")).status_code == 200

            page = await client.get("/password")
            assert 'autocomplete="current-password"' in page.text
            mismatch = await post_form(
                client,
                "/password",
                "/password",
                {
                    "current_password": "correct horse battery",
                    "new_password": "a brand new password",
                    "confirm_password": "a different one",
                },
            )
            assert mismatch.status_code == 422
            assert "the two new passwords differ" in mismatch.text
            wrong = await post_form(
                client,
                "/password",
                "/password",
                {
                    "current_password": "not my password",
                    "new_password": "a brand new password",
                    "confirm_password": "a brand new password",
                },
            )
            assert wrong.status_code == 403
            assert "The current password is not correct" in wrong.text
            assert "not my password" not in wrong.text  # passwords are never drawn back
            assert (await laptop.get("/workflows")).status_code == 200

            changed = await post_form(
                client,
                "/password",
                "/password",
                {
                    "current_password": "correct horse battery",
                    "new_password": "a brand new password",
                    "confirm_password": "a brand new password",
                },
            )
            assert changed.status_code == 200, changed.text
            assert "Your password is changed." in changed.text
            assert "1 other session signed out" in changed.text
            assert (await client.get("/workflows")).status_code == 200  # this browser stays
            signed_out = await laptop.get("/workflows")
            assert signed_out.headers["location"] == "/login?expired=true"

    async def test_logout_ends_the_session_in_the_store(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        stolen = client.cookies[SESSION_COOKIE]
        response = await post_form(client, "/", "/logout", {})
        assert response.status_code == 303
        assert (await client.get("/")).status_code == 303
        # The cookie's token was revoked, not just forgotten: a copy of it is refused too,
        # by the console and by the API.
        async with new_client(client) as other:
            other.cookies.set(SESSION_COOKIE, stolen)
            response = await other.get("/workflows")
            assert response.status_code == 303
            assert response.headers["location"] == "/login?expired=true"
        api = await client.get("/api/workflows", headers={"Authorization": f"Bearer {stolen}"})
        assert api.status_code == 401

    async def test_expired_session_shows_a_clear_login_page(
        self, client: httpx.AsyncClient
    ) -> None:
        client.cookies.set(SESSION_COOKIE, "ipaas_not-a-live-token")
        response = await client.get("/executions", follow_redirects=True)
        assert response.status_code == 200
        assert "Your session has expired" in response.text
        assert "Traceback" not in response.text

    async def test_a_polled_fragment_answers_401_when_the_session_is_gone(
        self, client: httpx.AsyncClient
    ) -> None:
        client.cookies.set(SESSION_COOKIE, "ipaas_gone")
        assert (await client.get("/dashboard/live")).status_code == 401

    async def test_bad_login_is_refused_with_a_message(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        async with new_client(client) as other:
            response = await post_form(
                other, "/login", "/login", {"email": "ada@example.com", "password": "wrong!!!"}
            )
            assert response.status_code == 401
            assert "Incorrect email or password" in response.text
            good = await post_form(
                other,
                "/login",
                "/login",
                {"email": "ada@example.com", "password": "correct horse battery"},
            )
            assert good.status_code == 303
            assert (await other.get("/tokens")).status_code == 200


class TestCsrf:
    @pytest.mark.parametrize("token", [None, "", "forged-token"])
    async def test_signup_without_the_right_token_is_refused(
        self, client: httpx.AsyncClient, token: str | None
    ) -> None:
        await client.get("/signup")  # the browser holds a real CSRF cookie
        data = {"email": "x@example.com", "password": "correct horse", "tenant_name": "X"}
        if token is not None:
            data["csrf_token"] = token
        response = await client.post("/signup", data=data)
        assert response.status_code == 403
        assert "could not be verified" in response.text
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")

    async def test_every_signed_in_form_checks_the_token(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        for action in (
            "/logout",
            "/credentials",
            "/workflows/new",
            "/tokens",
            "/executions/ex_x/cancel",
            "/workflows/wf_x/active",
        ):
            response = await client.post(action, data={"csrf_token": "forged"})
            assert response.status_code == 403, action
        # ...and the session survived the forged logout.
        assert (await client.get("/")).status_code == 200

    async def test_a_token_from_another_browser_does_not_work(
        self, client: httpx.AsyncClient
    ) -> None:
        await console_signup(client)
        async with new_client(client) as attacker:
            foreign = csrf_of(await attacker.get("/login"))
        response = await client.post("/tokens", data={"csrf_token": foreign, "name": "x"})
        assert response.status_code == 403

    async def test_the_header_works_for_scripts(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        token = client.cookies[CSRF_COOKIE]
        response = await client.post(
            "/tokens", data={"name": "ci"}, headers={"X-CSRF-Token": token}
        )
        assert response.status_code == 200
        assert "shown only once" in response.text


class TestSecrets:
    async def test_a_stored_secret_is_never_rendered(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        response = await post_form(
            client,
            "/credentials",
            "/credentials",
            {"name": "team-slack", "type": "slack", "secret.slack.webhook_url": SECRET_URL},
        )
        assert response.status_code == 303, response.text
        page = await client.get("/credentials")
        assert "team-slack" in page.text
        assert "SENTINEL" not in page.text
        new = await client.get("/workflows/new")
        assert "team-slack" in new.text
        assert "SENTINEL" not in new.text

    async def test_edit_renames_and_replaces_the_secret_without_showing_it(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        edit = f"/credentials/{credential_id}/edit"
        assert f'href="{edit}"' in (await client.get("/credentials")).text
        page = await client.get(edit)
        assert page.status_code == 200
        assert "SENTINEL" not in page.text
        assert 'value="team-slack"' in page.text

        renamed = await post_form(client, edit, edit, {"name": "ops-slack"})
        assert renamed.status_code == 303, renamed.text
        stored = runtime.store.credentials[credential_id]  # type: ignore[attr-defined]
        assert stored.name == "ops-slack"
        assert runtime.cipher.decrypt(stored.secret_ciphertext) == {"webhook_url": SECRET_URL}

        refused = await post_form(
            client,
            edit,
            edit,
            {"name": "ops-slack", "secret.webhook_url": "not a url SENTINEL"},
        )
        assert refused.status_code == 422
        assert 'id="err-secret-webhook_url"' in refused.text
        assert "SENTINEL" not in refused.text
        new_url = "https://hooks.slack.com/services/T1/B1/NEWsecret"
        replaced = await post_form(
            client, edit, edit, {"name": "ops-slack", "secret.webhook_url": new_url}
        )
        assert replaced.status_code == 303, replaced.text
        stored = runtime.store.credentials[credential_id]  # type: ignore[attr-defined]
        assert runtime.cipher.decrypt(stored.secret_ciphertext) == {"webhook_url": new_url}
        assert "NEWsecret" not in (await client.get(edit)).text

    async def test_a_refused_secret_is_not_echoed_back(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        response = await post_form(
            client,
            "/credentials",
            "/credentials",
            {
                "name": "bad",
                "type": "slack",
                "secret.slack.webhook_url": SECRET_URL,
                "secret.slack.bot_token": "SENTINELbotTOKEN",  # both: refused
            },
        )
        assert response.status_code == 422
        assert "exactly one of webhook_url or bot_token" in response.text
        assert "SENTINEL" not in response.text

    async def test_the_api_error_is_shown_next_to_the_field(
        self, client: httpx.AsyncClient
    ) -> None:
        await console_signup(client)
        response = await post_form(
            client,
            "/credentials",
            "/credentials",
            {"name": "d", "type": "discord", "secret.discord.webhook_url": "not a url"},
        )
        assert response.status_code == 422
        assert 'id="err-secret-webhook_url"' in response.text
        assert 'aria-describedby="err-secret-webhook_url"' in response.text


class TestCredentialTest:
    async def test_the_list_shows_what_the_test_found(
        self, client: httpx.AsyncClient, runtime: Runtime, clean_standin: StandinServer
    ) -> None:
        await console_signup(client)
        hook = f"{clean_standin.url}/api/webhooks/123/unknown-token"
        await post_form(
            client,
            "/credentials",
            "/credentials",
            {"name": "alerts", "type": "discord", "secret.discord.webhook_url": hook},
        )
        listed = await client.get("/credentials")
        action = re.search(r'action="(/credentials/cred_[^/"]+/test)"', listed.text)
        assert action is not None
        page = await post_form(client, "/credentials", action.group(1), {})
        assert page.status_code == 200, page.text
        assert "Test of alerts:</strong>" in page.text
        assert "it does not work. Discord answered HTTP 404: Unknown Webhook" in page.text
        assert "unknown-token" not in page.text  # the webhook's token is a secret


class TestConnect:
    async def test_an_account_is_connected_from_the_list(
        self, client: httpx.AsyncClient, clean_standin: StandinServer
    ) -> None:
        """The Connect button sends the browser to the provider's consent page; the
        provider's redirect connects the account, and the list says so."""
        await console_signup(client)
        oauth2 = {
            "grant_type": "authorization_code",
            "authorize_url": f"{clean_standin.url}/oauth/authorize",
            "token_url": f"{clean_standin.url}/oauth/token",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        }
        created = await post_form(
            client,
            "/credentials",
            "/credentials",
            {"name": "crm", "type": "http", "secret.http.oauth2": json.dumps(oauth2)},
        )
        assert created.status_code == 303, created.text
        listed = await client.get("/credentials")
        assert "not connected" in listed.text
        action = re.search(r'action="(/credentials/cred_[^/"]+/connect)"', listed.text)
        assert action is not None
        assert "http://ipaas.test/api/oauth2/callback" in listed.text  # to register
        sent = await post_form(client, "/credentials", action.group(1), {})
        assert sent.status_code == 303, sent.text
        consent = sent.headers["location"]
        assert consent.startswith(f"{clean_standin.url}/oauth/authorize?")
        async with httpx.AsyncClient() as browser:
            back = (await browser.get(consent)).headers["location"]
        landed = await client.get(back, headers={"accept": "text/html"})
        assert landed.status_code == 200, landed.text
        assert 'href="/credentials"' in landed.text
        listed = await client.get("/credentials")
        assert "account connected" in listed.text
        assert ">Reconnect<" in listed.text
        token = clean_standin.requests(kind="oauth_token")
        assert len(token) == 1
        assert "rt-" not in listed.text  # no token is ever rendered


def _workflow_form(credential_id: str = "", **extra: str) -> dict[str, str]:
    return {
        "mode": "form",
        "slots": "1",
        "name": "Orders to Slack",
        "active": "true",
        "trigger.type": "webhook",
        "steps.0.id": "notify",
        "steps.0.type": "slack_message",
        "steps.0.credential_id": credential_id,
        "steps.0.config.slack_message.text": "Order {{ trigger.body.id }}",
        **extra,
    }


async def _drain(runtime: Runtime) -> None:
    """Run what the webhooks queued, as a worker process would, then stop."""
    worker = Worker(runtime)
    try:
        await worker.run_until_empty()
    finally:
        await worker.stop(grace_s=0)


async def _credential(client: httpx.AsyncClient) -> str:
    await post_form(
        client,
        "/credentials",
        "/credentials",
        {"name": "team-slack", "type": "slack", "secret.slack.webhook_url": SECRET_URL},
    )
    listed = await client.get("/credentials")
    found = re.search(r"<code>(cred_[^<]+)</code>", listed.text)
    assert found
    return found.group(1)


class TestWorkflowForm:
    async def test_create_from_the_generated_form(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        response = await post_form(
            client, "/workflows/new", "/workflows/new", _workflow_form(credential_id)
        )
        assert response.status_code == 303, response.text
        page = await client.get(response.headers["location"])
        assert "Orders to Slack" in page.text
        assert "/api/webhooks/wf_" in page.text
        assert "curl -X POST" in page.text

    async def test_choose_the_workflow_a_failure_runs(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        alerts = await post_form(
            client,
            "/workflows/new",
            "/workflows/new",
            _workflow_form(credential_id, name="Tell ops"),
        )
        alerts_id = alerts.headers["location"].rsplit("/", 1)[1]
        form = _workflow_form(credential_id, error_workflow_id=alerts_id)
        created = await post_form(client, "/workflows/new", "/workflows/new", form)
        assert created.status_code == 303, created.text
        detail = await client.get(created.headers["location"])
        assert f'On failure: runs <a href="/workflows/{alerts_id}">Tell ops</a>' in detail.text
        edit = created.headers["location"] + "/edit"
        page = await client.get(edit)
        assert f'<option value="{alerts_id}" selected>Tell ops</option>' in page.text
        own_id = created.headers["location"].rsplit("/", 1)[1]
        assert f'<option value="{own_id}"' not in page.text  # not its own
        assert f'"error_workflow_id": "{alerts_id}"' in page.text.replace("&#34;", '"')
        # Saved from the form without touching it: kept. Set to nothing: removed.
        renamed = _workflow_form(credential_id, error_workflow_id=alerts_id, name="renamed")
        saved = await post_form(client, edit, edit, renamed)
        assert saved.status_code == 303, saved.text
        assert "On failure: runs" in (await client.get(saved.headers["location"])).text
        saved = await post_form(client, edit, edit, _workflow_form(credential_id))
        assert "On failure" not in (await client.get(saved.headers["location"])).text

    async def test_an_alerts_page_links_the_failed_execution(
        self, client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        alerts = await post_form(
            client, "/workflows/new", "/workflows/new", _workflow_form(credential_id)
        )
        alerts_id = alerts.headers["location"].rsplit("/", 1)[1]
        form = _workflow_form(credential_id, error_workflow_id=alerts_id)
        watched = await post_form(client, "/workflows/new", "/workflows/new", form)
        watched_id = watched.headers["location"].rsplit("/", 1)[1]
        fired = await client.post(f"/api/webhooks/{watched_id}", json={})
        failed_id = fired.json()["execution_id"]
        store = runtime.store
        assert isinstance(store, MemoryStore)
        now = utcnow()
        claimed = await store.claim_execution(
            failed_id, owner="w", now=now, lease_until=now, timeout_s=60, tenant_cap=None
        )
        assert claimed is not None
        assert await store.finish_execution(
            failed_id, owner="w", status=ExecutionStatus.failed, error="boom", finished_at=now
        )
        assert await alert_pass(runtime) == 1
        [alert_id] = [e.id for e in store.executions.values() if e.workflow_id == alerts_id]
        page = await client.get(f"/executions/{alert_id}")
        assert f'alert of the failed <a href="/executions/{failed_id}">' in page.text
        assert "failures since the previous alert" not in page.text
        assert "alert of the failed" not in (await client.get(f"/executions/{failed_id}")).text

        # Two more within the interval: held, then one digest when it is up. They finish a
        # millisecond apart: the digest names the latest (equal times would leave it to ids).
        for ms in (1, 2):
            fired = await client.post(f"/api/webhooks/{watched_id}", json={})
            failed_id = fired.json()["execution_id"]
            assert await store.claim_execution(
                failed_id, owner="w", now=now, lease_until=now, timeout_s=60, tenant_cap=None
            )
            finished_at = now + timedelta(milliseconds=ms)
            assert await store.finish_execution(
                failed_id,
                owner="w",
                status=ExecutionStatus.failed,
                error="boom",
                finished_at=finished_at,
            )
        assert await alert_pass(runtime) == 0
        later = utcnow() + timedelta(seconds=runtime.settings.alert_interval_s)
        monkeypatch.setattr(alert_engine, "utcnow", lambda: later)
        assert await alert_pass(runtime) == 1
        [digest_id] = [
            e.id
            for e in store.executions.values()
            if e.workflow_id == alerts_id and e.id != alert_id
        ]
        page = await client.get(f"/executions/{digest_id}")
        assert (
            f'alert of the failed <a href="/executions/{failed_id}">{failed_id}</a>, '
            "the latest of 2 failures since the previous alert"
        ) in page.text

    async def test_an_unknown_error_workflow_is_flagged_on_its_field(
        self, client: httpx.AsyncClient
    ) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        form = _workflow_form(credential_id, error_workflow_id="wf_gone")
        response = await post_form(client, "/workflows/new", "/workflows/new", form)
        assert response.status_code == 422
        assert 'id="err-error_workflow_id"' in response.text
        assert "workflow not found" in response.text

    async def test_deleting_a_credential_in_use_shows_why_not(
        self, client: httpx.AsyncClient
    ) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        created = await post_form(
            client, "/workflows/new", "/workflows/new", _workflow_form(credential_id)
        )
        assert created.status_code == 303, created.text
        response = await post_form(
            client, "/credentials", f"/credentials/{credential_id}/delete", {}
        )
        assert response.status_code == 409
        assert response.headers["content-type"].startswith("text/html")
        assert "Conflict" in response.text
        assert "used by &#39;Orders to Slack&#39; (wf_" in response.text
        assert credential_id in (await client.get("/credentials")).text

    async def test_editing_in_the_form_keeps_what_it_does_not_show(
        self, client: httpx.AsyncClient
    ) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        definition = {
            "trigger": {"type": "webhook", "idempotency": {"body_path": "id"}},
            "steps": [
                {
                    "id": "notify",
                    "name": "Tell the team",
                    "type": "slack_message",
                    "credential_id": credential_id,
                    "config": {"text": "hi"},
                    "retry": {"max_attempts": 2},
                    "timeout_s": 5,
                }
            ],
        }
        created = await post_form(
            client,
            "/workflows/new",
            "/workflows/new",
            {"mode": "json", "name": "w", "active": "true", "definition": json.dumps(definition)},
        )
        assert created.status_code == 303, created.text
        edit = created.headers["location"] + "/edit"
        form = _workflow_form(credential_id, slots="2", name="renamed")
        saved = await post_form(client, edit, edit, form)
        assert saved.status_code == 303, saved.text
        page = await client.get(edit)
        for kept in (
            '"body_path": "id"',
            '"name": "Tell the team"',
            '"max_attempts": 2',
        ):
            assert kept in page.text.replace("&#34;", '"'), kept
        assert "Order {{ trigger.body.id }}" in page.text

    async def test_a_loop_made_and_edited_in_the_form(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        form = _workflow_form(credential_id)
        form["steps.0.for_each"] = "{{ trigger.body.lines }}"
        form["steps.0.config.slack_message.text"] = "{{ index }}: {{ item.sku }}"
        created = await post_form(client, "/workflows/new", "/workflows/new", form)
        assert created.status_code == 303, created.text
        workflow_id = created.headers["location"].rsplit("/", 1)[1]
        stored = runtime.store.workflows[workflow_id]  # type: ignore[attr-defined]
        assert stored.steps[0].for_each == "{{ trigger.body.lines }}"
        edit = created.headers["location"] + "/edit"
        page = await client.get(edit)
        assert 'value="{{ trigger.body.lines }}"' in page.text
        form["steps.0.for_each"] = '["a", "b"]'  # a list, as JSON
        saved = await post_form(client, edit, edit, form)
        assert saved.status_code == 303, saved.text
        stored = runtime.store.workflows[workflow_id]  # type: ignore[attr-defined]
        assert stored.steps[0].for_each == ["a", "b"]
        form["steps.0.for_each"] = "trigger.body.lines"
        refused = await post_form(client, edit, edit, form)
        assert refused.status_code == 422
        assert 'id="err-steps-0-for_each"' in refused.text
        assert "a template that gives one" in refused.text

    async def test_editing_in_the_form_drops_trigger_keys_saving_now_refuses(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        """A trigger stored before its keys were checked (``"auht"``, a misspelled ``auth``)
        would make every save of the form a 422 the form cannot show or fix."""
        await console_signup(client)
        credential_id = await _credential(client)
        created = await post_form(
            client, "/workflows/new", "/workflows/new", _workflow_form(credential_id)
        )
        assert created.status_code == 303, created.text
        workflow_id = created.headers["location"].rsplit("/", 1)[-1]
        stored = runtime.store.workflows[workflow_id]  # type: ignore[attr-defined]
        stored.trigger = Trigger.model_validate(
            {"type": "webhook", "auht": {"scheme": "x"}, "idempotency": {"header": "X-Id"}}
        )
        edit = created.headers["location"] + "/edit"
        saved = await post_form(client, edit, edit, _workflow_form(credential_id, name="renamed"))
        assert saved.status_code == 303, saved.text
        trigger = runtime.store.workflows[workflow_id].trigger  # type: ignore[attr-defined]
        assert trigger.model_dump() == {"type": "webhook", "idempotency": {"header": "X-Id"}}

    async def test_saving_over_an_edit_made_since_the_page_opened_asks_first(
        self, client: httpx.AsyncClient
    ) -> None:
        """Two tabs open the editor; the second to save is told, and its save is not made
        until it saves again (then deliberately over the other)."""
        await console_signup(client)
        credential_id = await _credential(client)
        created = await post_form(
            client, "/workflows/new", "/workflows/new", _workflow_form(credential_id)
        )
        edit = created.headers["location"] + "/edit"
        detail = created.headers["location"]

        def base_of(page: httpx.Response) -> str:
            found = re.search(r'name="base" value="([^"]*)"', page.text)
            assert found is not None
            return html.unescape(found.group(1))

        first_tab = base_of(await client.get(edit))
        second_tab = base_of(await client.get(edit))
        assert first_tab == second_tab
        saved = await post_form(
            client, edit, edit, _workflow_form(credential_id, name="theirs", base=first_tab)
        )
        assert saved.status_code == 303, saved.text

        stale = await post_form(
            client, edit, edit, _workflow_form(credential_id, name="mine", base=second_tab)
        )
        assert stale.status_code == 409, stale.text
        assert "Someone else saved this workflow" in stale.text
        assert 'value="mine"' in stale.text  # what was typed is still there
        assert "<h1>theirs" in (await client.get(detail)).text

        again = await post_form(
            client, edit, edit, _workflow_form(credential_id, name="mine", base=base_of(stale))
        )
        assert again.status_code == 303, again.text
        assert "<h1>mine" in (await client.get(detail)).text

    async def test_the_service_error_sits_next_to_its_field(
        self, client: httpx.AsyncClient
    ) -> None:
        await console_signup(client)
        response = await post_form(
            client, "/workflows/new", "/workflows/new", _workflow_form("cred_nope")
        )
        assert response.status_code == 422
        assert 'id="err-steps-0-credential_id"' in response.text
        assert "credential not found" in response.text

    async def test_a_bad_param_is_flagged_on_the_param(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        form = _workflow_form(credential_id, **{"steps.0.config.slack_message.blocks": "[oops"})
        response = await post_form(client, "/workflows/new", "/workflows/new", form)
        assert response.status_code == 422
        assert 'id="err-steps-0-config-blocks"' in response.text
        assert "not valid JSON" in response.text

    async def test_the_json_editor_reports_its_errors(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        response = await post_form(
            client,
            "/workflows/new",
            "/workflows/new",
            {"mode": "json", "name": "j", "definition": '{"steps": []}'},
        )
        assert response.status_code == 422
        assert "steps" in response.text
        assert 'class="alert"' in response.text


class TestHistory:
    async def saved_twice(self, client: httpx.AsyncClient) -> tuple[str, str]:
        """A workflow saved as version 1 (text ``Order ...``) then 2 (``v2 ...``)."""
        await console_signup(client)
        credential_id = await _credential(client)
        created = await post_form(
            client, "/workflows/new", "/workflows/new", _workflow_form(credential_id)
        )
        workflow_path = created.headers["location"]
        edit = f"{workflow_path}/edit"
        v2 = _workflow_form(
            credential_id, **{"steps.0.config.slack_message.text": "v2 {{ trigger.body.x }}"}
        )
        saved = await post_form(client, edit, edit, v2)
        assert saved.status_code == 303, saved.text
        return workflow_path, credential_id

    async def test_history_diff_and_restore(self, client: httpx.AsyncClient) -> None:
        workflow_path, _ = await self.saved_twice(client)
        page = await client.get(workflow_path)
        assert f'<a href="{workflow_path}/versions">history</a>' in page.text
        history = await client.get(f"{workflow_path}/versions")
        assert history.status_code == 200
        assert "Version 2</a> <strong>(current)</strong>" in history.text
        assert f'<a href="{workflow_path}/versions/1">Version 1</a></td>' in history.text

        old = await client.get(f"{workflow_path}/versions/1")
        assert old.status_code == 200
        assert _changed_lines(old) == [
            '- "text": "v2 {{ trigger.body.x }}"',
            '+ "text": "Order {{ trigger.body.id }}"',
        ]
        assert "Restore version 1" in old.text
        current = await client.get(f"{workflow_path}/versions/2")
        assert "This is the current version." in current.text
        assert "Restore version" not in current.text

        restored = await post_form(
            client,
            f"{workflow_path}/versions/1",
            f"{workflow_path}/versions/1/restore",
            {"base": _base_of(old)},
        )
        assert restored.status_code == 303, restored.text
        assert restored.headers["location"] == workflow_path
        page = await client.get(workflow_path)
        assert "Version 3" in page.text
        assert "Order {{ trigger.body.id }}" in html.unescape(page.text)

    async def test_a_restore_from_a_stale_page_saves_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        workflow_path, credential_id = await self.saved_twice(client)
        opened = await client.get(f"{workflow_path}/versions/1")
        edit = f"{workflow_path}/edit"
        v3 = _workflow_form(credential_id, **{"steps.0.config.slack_message.text": "v3"})
        assert (await post_form(client, edit, edit, v3)).status_code == 303
        stale = await client.post(
            f"{workflow_path}/versions/1/restore",
            data={"csrf_token": csrf_of(opened), "base": _base_of(opened)},
        )
        assert stale.status_code == 409, stale.text
        assert "nothing was restored" in stale.text
        assert _changed_lines(stale)[0] == '- "text": "v3"'  # the diff against what is now
        assert "Version 3" in (await client.get(workflow_path)).text
        # Restoring from the page it answered with goes through.
        again = await client.post(
            f"{workflow_path}/versions/1/restore",
            data={"csrf_token": csrf_of(stale), "base": _base_of(stale)},
        )
        assert again.status_code == 303, again.text
        assert "Version 4" in (await client.get(workflow_path)).text

    async def test_a_version_whose_credential_is_gone_says_why(
        self, client: httpx.AsyncClient
    ) -> None:
        workflow_path, old_credential = await self.saved_twice(client)
        other = await post_form(
            client,
            "/credentials",
            "/credentials",
            {"name": "other", "type": "slack", "secret.slack.webhook_url": SECRET_URL},
        )
        assert other.status_code in (200, 303), other.text
        listed = (await client.get("/credentials")).text
        new_credential = next(
            c for c in re.findall(r"<code>(cred_[^<]+)</code>", listed) if c != old_credential
        )
        edit = f"{workflow_path}/edit"
        moved = _workflow_form(new_credential, **{"steps.0.config.slack_message.text": "v3"})
        assert (await post_form(client, edit, edit, moved)).status_code == 303
        deleted = await post_form(
            client, "/credentials", f"/credentials/{old_credential}/delete", {}
        )
        assert deleted.status_code == 303, deleted.text
        page = await client.get(f"{workflow_path}/versions/1")
        refused = await client.post(
            f"{workflow_path}/versions/1/restore",
            data={"csrf_token": csrf_of(page), "base": _base_of(page)},
        )
        assert refused.status_code == 422, refused.text
        assert "This version can no longer be saved: steps.0.credential_id" in refused.text
        assert "Version 3" in (await client.get(workflow_path)).text

    async def test_an_execution_links_the_version_it_ran(self, client: httpx.AsyncClient) -> None:
        workflow_path, _ = await self.saved_twice(client)
        workflow_id = workflow_path.rsplit("/", 1)[1]
        fired = await client.post(f"/api/webhooks/{workflow_id}", json={"id": 1})
        page = await client.get(f"/executions/{fired.json()['execution_id']}")
        assert f'<a href="{workflow_path}/versions/2">v2</a>' in page.text

    async def test_another_tenants_history_is_not_found(self, client: httpx.AsyncClient) -> None:
        workflow_path, _ = await self.saved_twice(client)
        async with new_client(client) as other:
            await console_signup(other, "b@example.com")
            for path in (f"{workflow_path}/versions", f"{workflow_path}/versions/1"):
                assert (await other.get(path)).status_code == 404, path
            restore = await post_form(other, "/", f"{workflow_path}/versions/1/restore", {})
            assert restore.status_code == 404
        assert "Version 2" in (await client.get(workflow_path)).text
        missing = await client.get(f"{workflow_path}/versions/9")
        assert missing.status_code == 404


def _changed_lines(page: httpx.Response) -> list[str]:
    """The lines a version page's diff removes (``-``) and adds (``+``), indentation cut."""
    diff = re.search(r'<pre class="diff" data-diff>(.*?)</pre>', page.text, re.S)
    assert diff is not None, page.text
    lines = html.unescape(re.sub(r"<[^>]+>", "\n", diff.group(1))).split("\n")
    return [
        f"{line[0]} {line[1:].strip()}"
        for line in lines
        if line[:1] in "+-" and line[:3] not in ("+++", "---") and line
    ]


def _base_of(page: httpx.Response) -> str:
    found = re.search(r'name="base" value="([^"]*)"', page.text)
    assert found, page.text
    return html.unescape(found.group(1))


class TestMembers:
    async def invite(self, client: httpx.AsyncClient, email: str, role: str = "member") -> str:
        page = await post_form(client, "/members", "/members", {"email": email, "role": role})
        assert page.status_code == 201, page.text
        found = re.search(r'id="invite-link" type="text" readonly value="([^"]+)"', page.text)
        assert found, page.text
        return html.unescape(found.group(1))

    async def join(self, other: httpx.AsyncClient, link: str, password: str) -> httpx.Response:
        token = link.split("#", 1)[1]  # what the page's script fills in from the fragment
        form = {"invite_token": token, "password": password, "confirm_password": password}
        return await post_form(other, "/invite", "/invite", form)

    async def test_invite_join_and_share(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        link = await self.invite(client, "bob@example.com")
        assert link.startswith("http://ipaas.test/invite#ipaas_invite_")
        page = (await client.get("/members")).text
        assert "invited, until" in page
        assert link not in page  # shown once
        async with new_client(client) as bob:
            joined = await self.join(bob, link, "bob's long password")
            assert joined.status_code == 303, joined.text
            assert joined.headers["location"] == "/"
            page = (await bob.get("/members")).text
            assert "bob@example.com <em>(you)</em>" in page
            assert "Invite someone" not in page  # a member does not manage
            assert "Make owner" not in page
            refused = await post_form(bob, "/members", "/members", {"email": "eve@example.com"})
            assert refused.status_code == 403
            assert "Only an owner" in refused.text
        page = (await client.get("/members")).text
        assert page.count(">active<") == 2

    async def test_the_tokens_page_shows_a_member_its_own_and_an_owner_whose(
        self, client: httpx.AsyncClient
    ) -> None:
        await console_signup(client)
        link = await self.invite(client, "bob@example.com")
        async with new_client(client) as bob:
            assert (await self.join(bob, link, "bob's long password")).status_code == 303
            page = (await bob.get("/tokens")).text
            assert page.count("/revoke") == 1  # its session only, not ada's
            assert "(this session)" in page
            assert ">Member<" not in page  # all its own: no column saying whose
        page = (await client.get("/tokens")).text
        assert page.count("/revoke") == 2
        assert ">Member<" in page
        assert "<td>bob@example.com</td>" in page
        assert "<td>ada@example.com</td>" in page

    async def test_a_wrong_or_used_invitation_and_differing_passwords(
        self, client: httpx.AsyncClient
    ) -> None:
        await console_signup(client)
        link = await self.invite(client, "bob@example.com")
        async with new_client(client) as bob:
            page = await bob.get("/invite")
            assert page.status_code == 200
            assert 'id="f-invite_token"' in page.text
            token = link.split("#", 1)[1]
            differ = await post_form(
                bob,
                "/invite",
                "/invite",
                {"invite_token": token, "password": "long enough 1", "confirm_password": "x"},
            )
            assert differ.status_code == 422
            assert "the two passwords differ" in differ.text
            wrong = await self.join(bob, link + "x", "long enough 1")
            assert wrong.status_code == 404
            assert 'id="err-invite_token"' in wrong.text
            assert (await self.join(bob, link, "long enough 1")).status_code == 303
        async with new_client(client) as eve:
            assert (await self.join(eve, link, "taking it over")).status_code == 404

    async def test_roles_removal_and_the_last_owner(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        link = await self.invite(client, "bob@example.com")
        async with new_client(client) as bob:
            assert (await self.join(bob, link, "bob's long password")).status_code == 303
            page = await client.get("/members")
            me, bob_id = re.findall(r'data-member="(usr_[^"]+)"', page.text)
            alone = await post_form(client, "/members", f"/members/{me}/remove", {})
            assert alone.status_code == 409
            assert "The tenant needs an owner who can log in" in alone.text
            made = await post_form(client, "/members", f"/members/{bob_id}/role", {"role": "owner"})
            assert made.status_code == 303, made.text
            page = (await bob.get("/members")).text
            assert "Invite someone" in page  # an owner now
            removed = await post_form(bob, "/members", f"/members/{me}/remove", {})
            assert removed.status_code == 303
            assert "ada@example.com" not in (await bob.get("/members")).text
        # Ada's session went with her.
        gone = await client.get("/members")
        assert gone.status_code == 303
        assert gone.headers["location"].startswith("/login")

    async def test_a_bad_invitation_is_shown_on_its_field(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        page = await post_form(client, "/members", "/members", {"email": "nope", "role": "member"})
        assert page.status_code == 422
        assert 'id="err-email"' in page.text
        taken = await post_form(
            client, "/members", "/members", {"email": "ada@example.com", "role": "member"}
        )
        assert taken.status_code == 409
        assert "already exists" in taken.text


class TestIsolation:
    async def test_another_tenants_pages_are_not_found(self, client: httpx.AsyncClient) -> None:
        await console_signup(client, "a@example.com")
        credential_id = await _credential(client)
        created = await post_form(
            client, "/workflows/new", "/workflows/new", _workflow_form(credential_id)
        )
        workflow_path = created.headers["location"]
        workflow_id = workflow_path.rsplit("/", 1)[1]
        fired = await client.post(f"/api/webhooks/{workflow_id}", json={"id": 1})
        execution_id = fired.json()["execution_id"]

        async with new_client(client) as other:
            await console_signup(other, "b@example.com")
            for path in (workflow_path, f"{workflow_path}/edit", f"/executions/{execution_id}"):
                response = await other.get(path)
                assert response.status_code == 404, path
                assert response.headers["content-type"].startswith("text/html")
            for path in ("/workflows", "/executions", "/credentials", "/"):
                page = await other.get(path)
                assert page.status_code == 200
                for foreign in (workflow_id, execution_id, credential_id, "Orders to Slack"):
                    assert foreign not in page.text, (path, foreign)
            for action in (
                f"/executions/{execution_id}/cancel",
                f"/credentials/{credential_id}/delete",
                f"{workflow_path}/active",
            ):
                response = await post_form(other, "/", action, {"active": "false"})
                assert response.status_code == 404, action
        # Untouched for its owner.
        assert "Orders to Slack" in (await client.get("/workflows")).text
        assert credential_id in (await client.get("/credentials")).text


class TestPages:
    async def test_unknown_page_is_a_page_and_the_api_stays_json(
        self, client: httpx.AsyncClient
    ) -> None:
        page = await client.get("/no/such/page")
        assert page.status_code == 404
        assert page.headers["content-type"].startswith("text/html")
        assert "Not found" in page.text
        assert "Log out" not in page.text
        api = await client.get("/api/no/such")
        assert api.status_code == 404
        assert api.json()["error"]["code"] == "not_found"
        await console_signup(client)
        signed_in = await client.get("/no/such/page")
        assert signed_in.status_code == 404
        assert "Log out" in signed_in.text

    async def test_a_filter_step_made_in_the_form_says_where_it_stopped(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        form = _workflow_form(credential_id) | {
            "slots": "2",
            "steps.0.id": "only_paid",
            "steps.0.type": "filter",
            "steps.0.credential_id": "",
            "steps.0.config.filter.condition": "{{ trigger.body.paid }}",
            "steps.1.id": "notify",
            "steps.1.type": "slack_message",
            "steps.1.credential_id": credential_id,
            "steps.1.config.slack_message.text": "Paid {{ trigger.body.id }}",
        }
        created = await post_form(client, "/workflows/new", "/workflows/new", form)
        assert created.status_code == 303, created.text
        workflow_id = created.headers["location"].rsplit("/", 1)[1]
        fired = await client.post(f"/api/webhooks/{workflow_id}", json={"id": 1, "paid": False})
        await _drain(runtime)
        page = await client.get(f"/executions/{fired.json()['execution_id']}")
        assert "The condition did not hold: the execution stopped here" in page.text
        assert 'data-step="notify"' not in page.text

    async def test_a_delay_step_made_in_the_form_says_until_when_it_waits(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        form = _workflow_form(credential_id) | {
            "slots": "2",
            "steps.0.id": "later",
            "steps.0.type": "delay",
            "steps.0.credential_id": "",
            "steps.0.config.delay.seconds": "{{ trigger.body.wait_s }}",
            "steps.1.id": "notify",
            "steps.1.type": "slack_message",
            "steps.1.credential_id": credential_id,
            "steps.1.config.slack_message.text": "Reminder {{ trigger.body.id }}",
        }
        created = await post_form(client, "/workflows/new", "/workflows/new", form)
        assert created.status_code == 303, created.text
        workflow_id = created.headers["location"].rsplit("/", 1)[1]
        edit = await client.get(f"/workflows/{workflow_id}/edit")
        assert 'name="steps.0.config.delay.until"' in edit.text
        fired = await client.post(f"/api/webhooks/{workflow_id}", json={"id": 1, "wait_s": 3600})
        await _drain(runtime)
        listed = await client.get("/executions")
        assert re.search(r'data-status="queued">queued</span> <small>until ', listed.text)
        page = await client.get(f"/executions/{fired.json()['execution_id']}")
        assert "waiting until" in page.text
        assert "goes on" in page.text
        assert 'data-step="notify"' not in page.text

    async def test_a_transform_step_made_in_the_form_keeps_its_json(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await console_signup(client)
        form = _workflow_form() | {
            "steps.0.id": "shape",
            "steps.0.type": "transform",
            "steps.0.config.transform.value": '{"who": "{{ trigger.body.name }}", "n": 1}',
        }
        created = await post_form(client, "/workflows/new", "/workflows/new", form)
        assert created.status_code == 303, created.text
        workflow_id = created.headers["location"].rsplit("/", 1)[1]
        fired = await client.post(f"/api/webhooks/{workflow_id}", json={"name": "Ada"})
        await _drain(runtime)
        page = await client.get(f"/executions/{fired.json()['execution_id']}")
        assert "&#34;who&#34;: &#34;Ada&#34;" in page.text  # the output, escaped

    async def test_a_loop_s_items_at_once_made_in_the_form(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        loop = {"steps.0.for_each": "{{ trigger.body.items }}"}
        form = _workflow_form(credential_id) | loop | {"steps.0.concurrency": "4"}
        created = await post_form(client, "/workflows/new", "/workflows/new", form)
        assert created.status_code == 303, created.text
        workflow_id = created.headers["location"].rsplit("/", 1)[1]
        edit = await client.get(f"/workflows/{workflow_id}/edit")  # shows the stored step
        assert 'name="steps.0.concurrency" type="text" value="4"' in edit.text
        for typed, words in (("four", "valid integer"), ("40", "less than or equal to 10")):
            refused = await post_form(
                client,
                "/workflows/new",
                "/workflows/new",
                _workflow_form(credential_id) | loop | {"steps.0.concurrency": typed},
            )
            assert refused.status_code == 422, refused.text
            assert 'id="err-steps-0-concurrency"' in refused.text
            assert words in refused.text

    async def test_a_run_workflow_step_made_in_the_form_starts_the_other_workflow(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        child = await post_form(
            client, "/workflows/new", "/workflows/new", _workflow_form(credential_id)
        )
        child_id = child.headers["location"].rsplit("/", 1)[1]
        form = _workflow_form() | {
            "name": "Start the other",
            "steps.0.id": "sub",
            "steps.0.type": "run_workflow",
            "steps.0.config.run_workflow.workflow_id": child_id,
            "steps.0.config.run_workflow.body": '{"id": "{{ trigger.body.n }}"}',
            "steps.0.config.run_workflow.wait": "false",
        }
        created = await post_form(client, "/workflows/new", "/workflows/new", form)
        assert created.status_code == 303, created.text
        parent_id = created.headers["location"].rsplit("/", 1)[1]
        fired = await client.post(f"/api/webhooks/{parent_id}", json={"n": 7})
        await _drain(runtime)
        page = await client.get(f"/executions/{fired.json()['execution_id']}")
        assert 'data-status="succeeded"' in page.text
        store = runtime.store
        assert isinstance(store, MemoryStore)
        (started,) = [e for e in store.executions.values() if e.workflow_id == child_id]
        assert (started.trigger.type, started.trigger.body) == ("workflow", {"id": 7})
        assert f'Started <a href="/executions/{started.id}">' in page.text
        child_page = await client.get(f"/executions/{started.id}")
        parent_link = f'started by <a href="/executions/{fired.json()["execution_id"]}">'
        assert parent_link in child_page.text
        unknown = form | {"steps.0.config.run_workflow.workflow_id": "wf_nope"}
        refused = await post_form(client, "/workflows/new", "/workflows/new", unknown)
        assert refused.status_code == 422, refused.text
        assert "workflow not found" in refused.text

    async def test_a_step_s_when_made_in_the_form_says_it_did_not_run(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        form = _workflow_form(credential_id) | {
            "steps.0.when": "{{ trigger.body.paid }}",
        }
        created = await post_form(client, "/workflows/new", "/workflows/new", form)
        assert created.status_code == 303, created.text
        workflow_id = created.headers["location"].rsplit("/", 1)[1]
        edit = await client.get(f"/workflows/{workflow_id}/edit")
        assert 'value="{{ trigger.body.paid }}"' in edit.text
        fired = await client.post(f"/api/webhooks/{workflow_id}", json={"id": 1, "paid": False})
        await _drain(runtime)
        page = await client.get(f"/executions/{fired.json()['execution_id']}")
        assert "this step did not run" in page.text
        assert 'data-status="skipped"' in page.text

    async def test_dashboard_counts_the_last_hour(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        created = await post_form(
            client, "/workflows/new", "/workflows/new", _workflow_form(credential_id)
        )
        workflow_id = created.headers["location"].rsplit("/", 1)[1]
        for n in range(3):
            fired = await client.post(f"/api/webhooks/{workflow_id}", json={"id": n})
            assert fired.status_code == 202
        live = await client.get("/dashboard/live")
        assert re.search(r'data-metric="total">3<', live.text)
        # No worker runs in these tests: all three wait in the queue.
        assert re.search(r'data-metric="queue">3<', live.text)
        assert "queued 3" in live.text

    async def test_dashboard_names_the_destinations_held_back(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await console_signup(client)
        live = await client.get("/dashboard/live")
        assert "None: every destination is being called." in live.text
        store = runtime.store
        assert isinstance(store, MemoryStore)
        (tenant_id,) = store.tenants
        now = datetime.now(UTC)
        retry_at = now + timedelta(seconds=30)
        await runtime.store.record_circuit_failure(
            tenant_id, "hooks.down.example", now=now, threshold=1, retry_at=retry_at
        )
        await runtime.store.record_circuit_failure(
            tenant_id, "flaky.example", now=now, threshold=5, retry_at=retry_at
        )  # one failure of five: still closed
        await runtime.store.record_circuit_failure(
            "tn_someone_else", "theirs.example", now=now, threshold=1, retry_at=retry_at
        )
        live = await client.get("/dashboard/live")
        assert "<code>hooks.down.example</code></td><td>open</td><td>1</td>" in live.text
        assert "flaky.example" not in live.text
        assert "theirs.example" not in live.text

    async def test_token_is_shown_once(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        created = await post_form(client, "/tokens", "/tokens", {"name": "ci"})
        token = re.search(r'value="(ipaas_[^"]+)"', created.text)
        assert token
        api = await client.get(
            "/api/workflows", headers={"Authorization": f"Bearer {token.group(1)}"}
        )
        assert api.status_code == 200
        page = (await client.get("/tokens")).text
        assert token.group(1) not in page
        assert page.count("(this session)") == 1
        assert "(a sign-in" not in page  # "ci" was made on purpose
        async with new_client(client) as other:
            await post_form(
                other,
                "/login",
                "/login",
                {"email": "ada@example.com", "password": "correct horse battery"},
            )
        page = (await client.get("/tokens")).text
        assert page.count("(a sign-in: ends when the password changes)") == 1

    async def test_names_holding_nul_are_refused(self, client: httpx.AsyncClient) -> None:
        """A form field may carry ``%00``; PostgreSQL cannot store it (a 500 before)."""
        await console_signup(client)
        token = await post_form(client, "/tokens", "/tokens", {"name": "ci\x00"})
        assert token.status_code == 422
        assert "give a name of 1 to 200 characters, without NUL" in token.text
        credential = await post_form(
            client,
            "/credentials",
            "/credentials",
            {
                "name": "s\x00",
                "type": "slack",
                "secret.slack.webhook_url": "https://hooks.slack.com/services/T/B/X",
            },
        )
        assert credential.status_code == 422
        assert "must not contain the NUL character" in credential.text

    async def test_version_numbers_beyond_what_the_stores_hold(
        self, client: httpx.AsyncClient
    ) -> None:
        """A 500 on PostgreSQL before (its INTEGER is 32 bits)."""
        await console_signup(client)
        page = await client.get(f"/workflows/wf_x/versions/{2**31}")
        assert page.status_code == 422

    async def test_pages_are_not_cached_or_framed(self, client: httpx.AsyncClient) -> None:
        page = await client.get("/login")
        headers: dict[str, Any] = dict(page.headers)
        assert headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]


class TestExecutionFilters:
    async def test_any_status_and_a_bad_status(self, client: httpx.AsyncClient) -> None:
        await console_signup(client)
        # The filter form sends empty values for "all workflows" / "any status".
        assert (await client.get("/executions?workflow_id=&status=")).status_code == 200
        assert (await client.get("/executions/rows?workflow_id=&status=")).status_code == 200
        bad = await client.get("/executions?status=bogus")
        assert bad.status_code == 400
        assert "Unknown status" in bad.text
        assert bad.headers["content-type"].startswith("text/html")

    async def test_the_created_filter(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        created = await post_form(
            client, "/workflows/new", "/workflows/new", _workflow_form(credential_id)
        )
        workflow_id = created.headers["location"].rsplit("/", 1)[1]
        store = runtime.store
        assert isinstance(store, MemoryStore)
        fired = []
        for age_h in (0, 3, 30):
            response = await client.post(f"/api/webhooks/{workflow_id}", json={"age": age_h})
            execution_id = response.json()["execution_id"]
            store.executions[execution_id].created_at -= timedelta(hours=age_h)
            fired.append(execution_id)

        def listed(page: httpx.Response) -> list[str]:
            return [e for e in fired if f"/executions/{e}" in page.text]

        assert listed(await client.get("/executions?workflow_id=&status=&hours=")) == fired
        assert listed(await client.get("/executions?hours=1")) == fired[:1]
        last_day = await client.get("/executions?hours=24")
        assert listed(last_day) == fired[:2]
        assert '<option value="24" selected>in the last 24 hours</option>' in last_day.text
        assert (
            listed(await client.get("/executions/rows?workflow_id=&status=&hours=6")) == (fired[:2])
        )
        for bad in ("2", "x", "-1"):
            refused = await client.get(f"/executions?hours={bad}")
            assert refused.status_code == 400
            assert "Unknown period" in refused.text

    async def test_search_the_triggers(self, client: httpx.AsyncClient) -> None:
        _, fired = await self._three_fired(client)
        found = await client.get("/executions?q=%22id%22%3A+1")  # "id": 1 as typed
        assert found.status_code == 200
        assert [e for e in fired if f"/executions/{e}" in found.text] == []  # JSON has no space
        found = await client.get('/executions?q="id":1')
        assert [e for e in fired if f"/executions/{e}" in found.text] == [fired[1]]
        assert 'value="&#34;id&#34;:1"' in found.text
        assert "data-live" not in found.text  # a search is not run again every 2 s
        assert "data-live" in (await client.get("/executions")).text
        short = await client.get("/executions?q=ab")
        assert short.status_code == 400
        assert "at least 3 characters" in short.text

    @staticmethod
    async def _three_fired(client: httpx.AsyncClient) -> tuple[str, list[str]]:
        """A console user's workflow and the ids of three webhooks it was sent."""
        await console_signup(client)
        credential_id = await _credential(client)
        created = await post_form(
            client, "/workflows/new", "/workflows/new", _workflow_form(credential_id)
        )
        workflow_id = created.headers["location"].rsplit("/", 1)[1]
        fired = []
        for n in range(3):
            response = await client.post(f"/api/webhooks/{workflow_id}", json={"id": n})
            fired.append(response.json()["execution_id"])
        return workflow_id, fired

    async def test_retry_what_the_failed_filter_shows(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        workflow_id, fired = await self._three_fired(client)
        store = runtime.store
        assert isinstance(store, MemoryStore)
        for execution_id in fired[:2]:
            store.executions[execution_id].status = ExecutionStatus.failed
        old = store.executions[fired[0]]
        old.created_at = old.created_at - timedelta(hours=2)  # outside a 1-hour window

        assert "Retry them" not in (await client.get("/executions")).text  # any status
        page = await client.get(f"/executions?workflow_id={workflow_id}&status=failed")
        assert "Retry every failed execution of this workflow from the last" in page.text
        form = {"status": "failed", "workflow_id": workflow_id, "hours": "1"}
        done = await post_form(client, "/executions?status=failed", "/executions/retry", form)
        assert done.status_code == 303
        assert "retried=1" in done.headers["location"]
        assert "1 execution queued again." in (await client.get(done.headers["location"])).text
        statuses = [store.executions[e].status for e in fired]
        assert statuses == [ExecutionStatus.failed, ExecutionStatus.queued, ExecutionStatus.queued]
        refused = await post_form(
            client, "/executions", "/executions/retry", form | {"status": "succeeded"}
        )
        assert refused.status_code == 400
        refused = await post_form(client, "/executions", "/executions/retry", form | {"hours": "5"})
        assert refused.status_code == 400
        assert store.executions[fired[0]].status is ExecutionStatus.failed

    async def test_a_deleted_workflows_failed_run_offers_no_retry(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        workflow_id, fired = await self._three_fired(client)
        store = runtime.store
        assert isinstance(store, MemoryStore)
        store.executions[fired[0]].status = ExecutionStatus.failed
        retry_form = f'action="/executions/{fired[0]}/retry"'
        assert retry_form in (await client.get(f"/executions/{fired[0]}")).text
        await store.delete_workflow(store.executions[fired[0]].tenant_id, workflow_id)
        page = (await client.get(f"/executions/{fired[0]}")).text
        assert f"{workflow_id} (deleted)" in page
        assert retry_form not in page  # the retry would be refused (409)

    async def test_cancel_every_pending_one_the_filter_shows(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        workflow_id, fired = await self._three_fired(client)
        store = runtime.store
        assert isinstance(store, MemoryStore)
        store.executions[fired[0]].status = ExecutionStatus.succeeded

        assert "Cancel them all" not in (await client.get("/executions")).text  # any status
        page = await client.get(f"/executions?workflow_id={workflow_id}&status=queued")
        assert "every queued and running execution of this workflow" in page.text
        form = {"status": "queued", "workflow_id": workflow_id}
        done = await post_form(client, "/executions?status=queued", "/executions/cancel", form)
        assert done.status_code == 303
        shown = await client.get(done.headers["location"])
        assert "2 queued executions cancelled; 0 running ones stopping." in shown.text
        statuses = [store.executions[e].status for e in fired]
        assert statuses == [ExecutionStatus.succeeded] + [ExecutionStatus.cancelled] * 2
        refused = await post_form(
            client, "/executions", "/executions/cancel", form | {"status": "failed"}
        )
        assert refused.status_code == 400


class TestWorkflowList:
    async def test_each_row_shows_its_last_run_and_success_rate(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await console_signup(client)
        credential_id = await _credential(client)
        ids = []
        for name in ("busy", "idle"):
            form = _workflow_form(credential_id, name=name)
            created = await post_form(client, "/workflows/new", "/workflows/new", form)
            ids.append(created.headers["location"].rsplit("/", 1)[1])
        fired = []
        for n in range(4):
            response = await client.post(f"/api/webhooks/{ids[0]}", json={"id": n})
            assert response.status_code == 202
            fired.append(response.json()["execution_id"])
        store = runtime.store
        assert isinstance(store, MemoryStore)
        outcomes = [ExecutionStatus.succeeded, ExecutionStatus.failed, ExecutionStatus.succeeded]
        for execution_id, status in zip(fired, outcomes, strict=False):
            store.executions[execution_id].status = status  # the last one stays queued

        page = await client.get("/workflows")

        idle, busy = page.text.split(">idle</a>")[1].split(">busy</a>")  # newest first
        assert f'href="/executions/{fired[-1]}"' in busy  # the latest run, still queued
        assert '67% <span class="help">of last 3</span>' in busy
        assert "never" in idle

    async def test_workflows_come_in_pages(
        self, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from ipaas.web.pages import workflows as workflow_pages

        monkeypatch.setattr(workflow_pages, "PAGE", 2)
        await console_signup(client)
        credential_id = await _credential(client)
        for n in range(3):
            form = _workflow_form(credential_id, name=f"flow {n}")
            created = await post_form(client, "/workflows/new", "/workflows/new", form)
            assert created.status_code == 303, created.text
        first = await client.get("/workflows")
        assert re.findall(r">flow (\d)</a>", first.text) == ["2", "1"]
        older = re.search(r'<a href="(/workflows\?cursor=[^"]+)">Older workflows</a>', first.text)
        assert older
        second = await client.get(older.group(1).replace("&amp;", "&"))
        assert re.findall(r">flow (\d)</a>", second.text) == ["0"]
        assert "Older workflows" not in second.text
        # Every workflow is still offered by the executions filter, newest first.
        filters = await client.get("/executions")
        assert re.findall(r'<option value="wf_[^"]+">flow (\d)</option>', filters.text) == [
            "2",
            "1",
            "0",
        ]
