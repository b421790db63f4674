"""Behind a reverse proxy: the URLs handed out (``IPAAS_PUBLIC_URL``) and the forwarded
scheme and client of trusted proxies (``IPAAS_FORWARDED_ALLOW_IPS``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from ipaas.api.app import create_app
from ipaas.cli import main
from ipaas.config import Settings
from ipaas.runtime import Runtime
from ipaas.stores.memory import MemoryStore
from tests.conftest import signup
from tests.web.test_console import console_signup

PROXY = "10.0.0.1"
#: What nginx, Caddy and Traefik send upstream for a browser's HTTPS request.
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}


@asynccontextmanager
async def client_for(
    settings: Settings, *, peer: str = "127.0.0.1", seen: list[dict[str, Any]] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The app as a peer at ``peer`` reaches it; ``seen`` collects the scope of each request
    as the routes get it."""
    app = create_app(runtime=Runtime.build(settings, store=MemoryStore()), workers=False)
    if seen is not None:

        @app.middleware("http")
        async def record(request: Any, call_next: Any) -> Any:
            seen.append(dict(request.scope))
            return await call_next(request)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 51000))
        async with httpx.AsyncClient(transport=transport, base_url="http://ipaas:8080") as c:
            yield c


async def _workflow(
    client: httpx.AsyncClient, auth: dict[str, str], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/api/workflows",
        json={
            "name": "Orders",
            "trigger": {"type": "webhook"},
            "steps": [
                {
                    "id": "ping",
                    "type": "http_request",
                    "config": {"method": "POST", "url": "https://api.example.com/orders"},
                }
            ],
        },
        headers={**auth, **(headers or {})},
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _auth(headers: dict[str, str]) -> dict[str, str]:
    return {"Authorization": headers["Authorization"]}


class TestPublicUrl:
    async def test_the_urls_handed_out_start_with_it(self, settings: Settings) -> None:
        settings = settings.model_copy(update={"public_url": "https://hooks.example.com"})
        async with client_for(settings) as client:
            auth = _auth(await signup(client))
            workflow = await _workflow(client, auth)
            url = f"https://hooks.example.com/api/webhooks/{workflow['id']}"
            assert workflow["webhook_url"] == url
            listed = (await client.get("/api/workflows", headers=auth)).json()
            assert [w["webhook_url"] for w in listed] == [url]
            invited = await client.post(
                "/api/members", json={"email": "bob@example.com"}, headers=auth
            )
            assert invited.status_code == 201, invited.text
            assert invited.json()["invite_url"].startswith("https://hooks.example.com/invite#")
            # The URL works where the proxy sends it: the path is the server's own.
            fired = await client.post(url.removeprefix("https://hooks.example.com"), json={})
            assert fired.status_code == 202, fired.text

    async def test_the_console_shows_it(self, settings: Settings) -> None:
        settings = settings.model_copy(update={"public_url": "https://hooks.example.com"})
        async with client_for(settings) as client:
            await console_signup(client)  # this browser's session
            token = await client.post(
                "/api/auth/token",
                data={"username": "ada@example.com", "password": "correct horse battery"},
            )
            auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
            workflow = await _workflow(client, auth)
            page = await client.get(f"/workflows/{workflow['id']}")
            assert page.status_code == 200
            assert f"https://hooks.example.com/api/webhooks/{workflow['id']}" in page.text
            assert "http://ipaas:8080" not in page.text

    async def test_unset_the_request_says_where(self, settings: Settings) -> None:
        async with client_for(settings) as client:
            workflow = await _workflow(client, _auth(await signup(client)))
            assert workflow["webhook_url"] == f"http://ipaas:8080/api/webhooks/{workflow['id']}"

    @pytest.mark.parametrize(
        ("given", "kept"),
        [
            ("https://hooks.example.com", "https://hooks.example.com"),
            ("https://hooks.example.com/", "https://hooks.example.com"),
            ("http://10.1.2.3:8443", "http://10.1.2.3:8443"),
            ("", None),
        ],
    )
    def test_an_origin_is_kept_as_one(self, given: str, kept: str | None) -> None:
        assert Settings(public_url=given).public_url == kept

    @pytest.mark.parametrize(
        "bad",
        [
            "hooks.example.com",  # no scheme
            "ftp://hooks.example.com",
            "https://hooks.example.com/ipaas",  # the server answers at the root only
            "https://hooks.example.com/?a=1",
            "https://hooks.example.com/#top",
            "https://user:pass@hooks.example.com",
            "https://hooks.example.com:port",
        ],
    )
    def test_anything_else_stops_the_start(self, bad: str) -> None:
        with pytest.raises(ValidationError, match="IPAAS_PUBLIC_URL must be an origin"):
            Settings(public_url=bad)

    def test_the_message_does_not_repeat_a_password(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("IPAAS_PUBLIC_URL", "https://ops:hunter2@hooks.example.com")
        with pytest.raises(SystemExit) as exited:
            main(["migrate"])
        assert str(exited.value.code).splitlines()[1:] == [
            "  IPAAS_PUBLIC_URL must be an origin such as https://hooks.example.com, not "
            "'https://ops:***@hooks.example.com'"
        ]


class TestForwardedHeaders:
    async def test_a_trusted_proxy_sets_scheme_and_client(self, settings: Settings) -> None:
        settings = settings.model_copy(update={"forwarded_allow_ips": ["10.0.0.0/24"]})
        seen: list[dict[str, Any]] = []
        async with client_for(settings, peer=PROXY, seen=seen) as client:
            assert (await client.get("/healthz", headers=FORWARDED)).status_code == 200
            assert seen[-1]["scheme"] == "https"
            assert seen[-1]["client"] == ("203.0.113.7", 0)
            auth = _auth(await signup(client))
            workflow = await _workflow(client, auth, FORWARDED)
            assert workflow["webhook_url"] == f"https://ipaas:8080/api/webhooks/{workflow['id']}"
            # The console's cookies are Secure: the browser's connection was HTTPS.
            cookies = (await client.get("/login", headers=FORWARDED)).headers.get_list("set-cookie")
            assert cookies
            assert all("Secure" in c for c in cookies)
            # The intake, answered ahead of the app's routing, works behind it too.
            fired = await client.post(f"/api/webhooks/{workflow['id']}", json={}, headers=FORWARDED)
            assert fired.status_code == 202, fired.text

    @pytest.mark.parametrize(
        ("trusted", "peer"),
        [
            ([], PROXY),  # the default: nobody
            (["10.0.0.2"], PROXY),  # another proxy
            (["10.0.0.0/24"], "192.0.2.9"),  # a client past the proxy, straight to the port
        ],
    )
    async def test_anyone_else_is_not_believed(
        self, settings: Settings, trusted: list[str], peer: str
    ) -> None:
        settings = settings.model_copy(update={"forwarded_allow_ips": trusted})
        seen: list[dict[str, Any]] = []
        async with client_for(settings, peer=peer, seen=seen) as client:
            login = await client.get("/login", headers=FORWARDED)
            assert login.status_code == 200
            assert not any("Secure" in c for c in login.headers.get_list("set-cookie"))
            assert seen[-1]["scheme"] == "http"
            assert seen[-1]["client"] == (peer, 51000)
            workflow = await _workflow(client, _auth(await signup(client)), FORWARDED)
            assert workflow["webhook_url"].startswith("http://ipaas:8080/api/webhooks/")

    @pytest.mark.parametrize(("trusted", "logged"), [(["10.0.0.0/24"], "203.0.113.7"), ([], PROXY)])
    async def test_the_access_lines_name_the_client(
        self,
        settings: Settings,
        capsys: pytest.CaptureFixture[str],
        trusted: list[str],
        logged: str,
    ) -> None:
        settings = settings.model_copy(
            update={"forwarded_allow_ips": trusted, "log_format": "json", "log_level": "info"}
        )
        async with client_for(settings, peer=PROXY) as client:
            workflow = await _workflow(client, _auth(await signup(client)))
            capsys.readouterr()
            await client.post(f"/api/webhooks/{workflow['id']}", json={}, headers=FORWARDED)
            await client.get("/healthz", headers=FORWARDED)
        out = capsys.readouterr().err.splitlines()
        access = [e for e in map(json.loads, out) if e.get("event") == "request"]
        assert [(e["path"], e["client"]) for e in access] == [
            (f"/api/webhooks/{workflow['id']}", logged),
            ("/healthz", logged),
        ]

    def test_the_list_is_comma_separated(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("IPAAS_FORWARDED_ALLOW_IPS", "10.0.0.1, 172.16.0.0/12,*")
        assert Settings().forwarded_allow_ips == ["10.0.0.1", "172.16.0.0/12", "*"]

    @pytest.mark.parametrize("bad", ["10.0.0.300", "proxy.internal", "10.0.0.0/33"])
    def test_a_typo_stops_the_start(self, bad: str) -> None:
        with pytest.raises(ValidationError, match="IPAAS_FORWARDED_ALLOW_IPS"):
            Settings(forwarded_allow_ips=[bad])
