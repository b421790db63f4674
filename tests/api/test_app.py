from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from pydantic import ValidationError

from ipaas.api.app import create_app
from ipaas.config import Settings
from ipaas.runtime import Runtime
from ipaas.stores.memory import MemoryStore


@asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime=Runtime.build(settings, store=MemoryStore()), workers=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


PREFLIGHT = {
    "Origin": "https://console.example.com",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


class TestCors:
    async def test_closed_by_default(self, settings: Settings) -> None:
        async with client_for(settings) as client:
            r = await client.options("/api/workflows", headers=PREFLIGHT)
            assert "access-control-allow-origin" not in r.headers
            r = await client.get("/healthz", headers={"Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in r.headers

    async def test_configured_origins_only(self, settings: Settings) -> None:
        settings = settings.model_copy(update={"cors_origins": ["https://console.example.com"]})
        async with client_for(settings) as client:
            r = await client.options("/api/workflows", headers=PREFLIGHT)
            assert r.status_code == 200
            assert r.headers["access-control-allow-origin"] == "https://console.example.com"
            r = await client.options(
                "/api/workflows", headers={**PREFLIGHT, "Origin": "https://evil.example"}
            )
            assert r.status_code == 400
            assert "access-control-allow-origin" not in r.headers

    async def test_origins_are_compared_as_browsers_send_them(self, settings: Settings) -> None:
        """Found by hand: ``https://App.example.com/`` matched no browser's ``Origin`` (the
        preflight was a 400) and nothing said so."""
        given = "https://App.Example.com/, http://localhost:5173, https://b.example:443, *"
        origins = Settings(cors_origins=given).cors_origins
        assert origins == [
            "https://app.example.com",
            "http://localhost:5173",
            "https://b.example",
            "*",
        ]
        settings = settings.model_copy(update={"cors_origins": origins[:1]})
        async with client_for(settings) as client:
            headers = {**PREFLIGHT, "Origin": "https://app.example.com"}
            r = await client.options("/api/workflows", headers=headers)
            assert r.status_code == 200
            assert r.headers["access-control-allow-origin"] == "https://app.example.com"

    @pytest.mark.parametrize(
        "value",
        ["app.example.com", "https://app.example.com/console", "https://u:p@a.example", "ftp://a"],
    )
    def test_a_value_that_is_no_origin_is_refused(self, value: str) -> None:
        with pytest.raises(ValidationError, match="is not an origin such as https://app"):
            Settings(cors_origins=value)

    def test_env_list_is_comma_separated(self, monkeypatch: object) -> None:
        import os

        os.environ["IPAAS_CORS_ORIGINS"] = "https://a.example, https://b.example"
        try:
            assert Settings().cors_origins == ["https://a.example", "https://b.example"]
        finally:
            del os.environ["IPAAS_CORS_ORIGINS"]


class TestErrors:
    async def test_unknown_route_and_method_are_json(self, settings: Settings) -> None:
        async with client_for(settings) as client:
            r = await client.get("/api/nope")
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "not_found"
            r = await client.delete("/api/auth/signup")
            assert r.status_code == 405
            assert r.json()["error"]["code"] == "method_not_allowed"

    async def test_malformed_json_is_422(self, settings: Settings) -> None:
        async with client_for(settings) as client:
            r = await client.post(
                "/api/auth/signup", content=b"{", headers={"content-type": "application/json"}
            )
            assert r.status_code == 422
            error = r.json()["error"]
            assert error["code"] == "validation_error"
            # The parser's reason (where, and what it expected), never the input.
            assert (
                error["message"]
                == "Body is not valid JSON: EOF while parsing an object at line 1 column 1"
            )
            assert error["details"] == [
                {
                    "loc": ["body"],
                    "msg": "EOF while parsing an object at line 1 column 1",
                    "type": "json_invalid",
                }
            ]

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            ("NaN", "expected value"),
            ('"\\ud800"', "hex escape"),
            ("[" * 3000 + "]" * 3000, "nested more than 200 levels deep"),
        ],
        ids=["nan", "lone-surrogate", "deep"],
    )
    async def test_json_no_store_can_hold_is_422_on_every_route(
        self, settings: Settings, value: str, reason: str
    ) -> None:
        """FastAPI parses bodies with json.loads, which took these: a step config holding
        a lone surrogate was a 500, and NaN could not be written to PostgreSQL's json."""
        async with client_for(settings) as client:
            signed_up = await client.post(
                "/api/auth/signup",
                json={"email": "j@example.com", "password": "pw pw pw pw", "tenant_name": "J"},
            )
            auth = {
                "Authorization": f"Bearer {signed_up.json()['access_token']}",
                "content-type": "application/json",
            }
            config = '{"url": "http://x.test", "json": ' + value + "}"
            step = '{"id": "n", "type": "http_request", "config": ' + config + "}"
            workflow = '{"name": "w", "steps": [' + step + "]}"
            bodies = {
                "/api/workflows": workflow,
                "/api/workflows/dry-run": workflow,
                "/api/credentials": '{"name": "c", "type": "http", "secret": {"token": '
                + value
                + "}}",
            }
            for path, body in bodies.items():
                r = await client.post(path, content=body, headers=auth)
                assert r.status_code == 422, (path, r.text)
                assert r.json()["error"]["details"][0]["type"] == "json_invalid"
                assert reason in r.json()["error"]["message"]
            listed = await client.get("/api/workflows", headers=auth)
            assert listed.json() == []

    async def test_request_id_is_returned(self, settings: Settings) -> None:
        async with client_for(settings) as client:
            r = await client.get("/healthz")
            assert r.headers["x-request-id"].startswith("req_")
            r = await client.get("/readyz", headers={"X-Request-ID": "abc"})
            assert r.headers["x-request-id"] == "abc"
            assert r.json() == {"status": "ready", "checks": {"store": "ok", "queue": "ok"}}


class TestSettings:
    def test_production_refuses_a_missing_secret_key(self) -> None:
        import pytest
        from pydantic import ValidationError

        with pytest.raises(ValidationError, match="IPAAS_SECRET_KEY"):
            Settings(env="production", secret_key=None)

    def test_development_key_is_generated_once(self, tmp_path: object) -> None:
        from pathlib import Path

        data = Path(str(tmp_path))
        first = Settings(data_dir=data).fernet_key
        assert Settings(data_dir=data).fernet_key == first
        assert (data / ".ipaas-secret-key").stat().st_mode & 0o777 == 0o600


async def test_openapi_documents_every_route_including_intake(settings: Settings) -> None:
    async with client_for(settings) as client:
        schema = (await client.get("/openapi.json")).json()
    intake = schema["paths"]["/api/webhooks/{workflow_id}"]["post"]
    assert set(intake["responses"]) == {
        "200",
        "202",
        "2XX",  # the trigger's own ``response``
        "3XX",  # its redirect
        "401",
        "404",
        "408",
        "413",
        "415",
        "422",
        "429",
        "502",  # a ``response`` that waits: the execution failed
        "503",
    }
    assert set(intake["responses"]["429"]["headers"]) == {
        "Retry-After",
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
        "RateLimit-Policy",
    }
    assert "Retry-After" in intake["responses"]["503"]["headers"]
    # 200: a duplicate's execution, or a sender's check of the URL answered.
    answered = intake["responses"]["200"]["content"]
    duplicate, challenge, zoom, event_grid = answered["application/json"]["schema"]["oneOf"]
    assert "duplicate" in duplicate["properties"]
    assert challenge["required"] == ["challenge"]
    assert zoom["required"] == ["plainToken", "encryptedToken"]
    assert event_grid["required"] == ["validationResponse"]
    assert answered["text/plain"]["schema"] == {"type": "string"}  # Microsoft Graph's token
    for path in (
        "/api/workflows",
        "/api/executions/{execution_id}/cancel",
        "/api/auth/signup",
        "/api/tenant",
    ):
        assert path in schema["paths"]


async def test_readyz_reports_a_store_that_does_not_answer(settings: Settings) -> None:
    runtime = Runtime.build(settings, store=MemoryStore())
    app = create_app(runtime=runtime, workers=False)
    async with app.router.lifespan_context(app):

        async def down() -> bool:
            raise ConnectionError("database unreachable")

        runtime.store.ping = down  # type: ignore[method-assign]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/readyz")
            assert r.status_code == 503
            assert r.json() == {"status": "unavailable", "checks": {"store": "down", "queue": "ok"}}
            assert (await client.get("/healthz")).status_code == 200


class TestDocumentedErrors:
    """Found by schemathesis (tests/api/test_fuzz.py): each is pinned here by name."""

    async def test_every_authenticated_route_documents_401_and_its_error_body(
        self, settings: Settings
    ) -> None:
        async with client_for(settings) as client:
            schema = (await client.get("/openapi.json")).json()
        public = {
            "/api/auth/signup",
            "/api/auth/token",
            "/api/auth/invite",
            "/api/webhooks/{workflow_id}",
            # The provider's redirect back: its sealed state names the credential.
            "/api/oauth2/callback",
        }
        for path, item in schema["paths"].items():
            for method, operation in item.items():
                responses = operation["responses"]
                if path.startswith("/api/") and path not in public:
                    assert "401" in responses, (method, path)
                if "{" in path:
                    assert "404" in responses, (method, path)
                for status, response in responses.items():
                    if status.startswith(("4", "5")) and path != "/readyz":
                        body = response["content"]["application/json"]["schema"]
                        assert body == {"$ref": "#/components/schemas/Error"}, (path, status)

    async def test_405_allows_every_method_of_the_path(self, client: httpx.AsyncClient) -> None:
        response = await client.request("OPTIONS", "/api/workflows/wf_x")
        assert response.status_code == 405
        assert response.headers["allow"] == "DELETE, GET, PATCH, PUT"

    async def test_token_lifetime_past_a_datetime_is_422_not_500(
        self, client: httpx.AsyncClient, auth: dict[str, str]
    ) -> None:
        response = await client.post(
            "/api/tokens", headers=auth, json={"expires_in_s": 18479889688682700099026944}
        )
        assert response.status_code == 422, response.text

    @pytest.mark.parametrize("lifetime", [True, "3600", 3600.5])
    async def test_a_token_lifetime_must_be_an_integer(
        self, client: httpx.AsyncClient, auth: dict[str, str], lifetime: object
    ) -> None:
        # Read as a number, ``true`` was a token that expired one second later (make fuzz).
        response = await client.post("/api/tokens", headers=auth, json={"expires_in_s": lifetime})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["message"] == "Invalid request: expires_in_s"
        for integer in (3600, 3600.0):  # both integers to JSON Schema
            response = await client.post(
                "/api/tokens", headers=auth, json={"expires_in_s": integer}
            )
            assert response.status_code == 201, response.text

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"timeout_s": True}, "steps.0.timeout_s"),
            ({"timeout_s": "5"}, "steps.0.timeout_s"),
            ({"retry": {"max_attempts": True}}, "steps.0.retry.max_attempts"),
            ({"retry": {"initial_delay_s": "1"}}, "steps.0.retry.initial_delay_s"),
        ],
    )
    async def test_step_numbers_must_be_numbers(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        change: dict[str, object],
        field: str,
    ) -> None:
        step = {"id": "s", "type": "http_request", "config": {"url": "https://example.com"}}
        body = {"name": "w", "steps": [step | change]}
        response = await client.post("/api/workflows", headers=auth, json=body)
        assert response.status_code == 422, response.text
        assert field in response.json()["error"]["message"]
        body = {"name": "w", "active": "yes", "steps": [step | {"timeout_s": 5}]}
        response = await client.post("/api/workflows", headers=auth, json=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["message"] == "Invalid request: active"
        response = await client.post("/api/workflows", headers=auth, json=body | {"active": True})
        assert response.status_code == 201, response.text


def test_documented_step_types_are_the_registry() -> None:
    from ipaas.engine.connectors import REGISTRY
    from ipaas.workflows.models import STEP_TYPES

    assert sorted(REGISTRY) == list(STEP_TYPES)


async def test_a_misspelled_execution_filter_is_refused(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    # Ignored, it would list every execution as though the filter had matched.
    response = await client.get("/api/executions", headers=auth, params={"stauts": "failed"})
    assert response.status_code == 422, response.text
    response = await client.get("/api/executions", headers=auth, params={"status": "failed"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("query", ["window=60", "=60"])
async def test_a_misspelled_stats_window_is_refused(
    client: httpx.AsyncClient, auth: dict[str, str], query: str
) -> None:
    # Ignored, it would answer for the default hour (make fuzz sent ``?=false``).
    response = await client.get(f"/api/stats?{query}", headers=auth)
    assert response.status_code == 422, response.text
    where = "window" if query.startswith("window") else "query"  # a parameter without a name
    assert response.json()["error"]["message"] == f"Invalid request: {where}"
    response = await client.get("/api/stats?window_s=60", headers=auth)
    assert response.status_code == 200, response.text


def test_the_embedded_server_loads_no_redis_client_and_hashes_nothing_at_start(
    tmp_path: object,
) -> None:
    """Memory (issue 2's RSS target): the embedded server has no Redis, so it does not load
    the client, and no argon2 hash (64 MiB while it runs) is made before someone logs in."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from ipaas.api.app import create_app\n"
        "from ipaas.config import Settings\n"
        f"create_app(Settings(env='test', database_url='sqlite+aiosqlite:///{tmp_path}/x.db',"
        f" data_dir='{tmp_path}'))\n"
        "import ipaas.tenants.service as s\n"
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))\n"
        "print(s._dummy_hash.cache_info().currsize)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split("\n")[:2] == ["[]", "0"], done.stdout + done.stderr


async def test_on_started_runs_once_everything_has_started(settings: Settings) -> None:
    calls: list[bool] = []
    runtime = Runtime.build(settings, store=MemoryStore())
    app = create_app(runtime=runtime, workers=True, on_started=lambda: calls.append(True))
    async with app.router.lifespan_context(app):
        assert calls == [True]
        assert app.state.worker is not None


def test_settle_after_startup_freezes_and_raises_the_young_threshold() -> None:
    """In a child process: a frozen heap stays frozen for the rest of the process."""
    import subprocess
    import sys

    script = (
        "import gc\n"
        "from ipaas.kit.heap import YOUNG_THRESHOLD, settle_after_startup\n"
        "before = gc.get_freeze_count()\n"
        "settle_after_startup()\n"
        "print(before, gc.get_freeze_count() > 1_000, gc.get_threshold()[0] == YOUNG_THRESHOLD)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["0", "True", "True"], done.stdout + done.stderr
