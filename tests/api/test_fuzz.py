"""schemathesis against ``/openapi.json``: every operation, authenticated as a tenant that owns
a credential, a workflow and executions, with every check schemathesis has. A response the
schema does not describe, or any 5xx, fails.

``make test`` runs a bounded, deterministic pass (``FUZZ_EXAMPLES`` per operation and phase);
``make fuzz`` sets ``IPAAS_FUZZ_EXAMPLES`` high and a random seed for a long run, on the memory
store and then, when ``IPAAS_TEST_POSTGRES_URL`` is set, on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from cryptography.fernet import Fernet
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi

from ipaas.api.app import create_app
from ipaas.config import Settings
from ipaas.runtime import Runtime
from ipaas.stores import create_store
from ipaas.stores.memory import MemoryStore
from ipaas.stores.sql import run_migrations
from tests.contracts.conftest import POSTGRES_URL, in_thread, postgres_database

#: Examples per operation in the fuzzing phase: enough to reach every schema branch once in
#: ``make test`` (the coverage phase adds its systematic cases on top).
FUZZ_EXAMPLES = int(os.environ.get("IPAAS_FUZZ_EXAMPLES", "8"))
#: ``make fuzz`` explores; ``make test`` replays the same cases every run.
DETERMINISTIC = "IPAAS_FUZZ_EXAMPLES" not in os.environ


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "generation": {
                "mode": "all",  # schema-valid and schema-violating data
                "max-examples": FUZZ_EXAMPLES,
                "deterministic": DETERMINISTIC,
            },
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
            },
            "checks": {"enabled": True},
            "operations": _SEMANTIC_422,
        }
    )


#: Where the API answers a schema-valid request with 422 by design, because validity depends
#: on the tenant's data or on a rule JSON Schema cannot state. For these operations (and only
#: these statuses) ``positive_data_acceptance`` also accepts 422 (or 400 for a cursor); every
#: other check applies unchanged, and any other status still fails the check:
#: - a credential's ``secret`` shape depends on its ``type`` (slack: ``webhook_url`` or
#:   ``bot_token``; webhook_secret: ``secret``), validated per type;
#: - a step's ``credential_id`` must name one of the tenant's credentials of the right kind,
#:   its ``config`` must pass the connector's own params, ``retry.max_delay_s`` must not be
#:   less than ``initial_delay_s``: a generated workflow passes these only by luck;
#: - sign-up and invitations refuse special-use email domains (``.test``, ``.invalid``) that
#:   ``format: email`` allows;
#: - an execution or workflow list's ``cursor`` is an opaque token the API issued; any other
#:   string is a 400;
#: - an execution window's ``until`` must be later than its ``since`` (the list's query, the
#:   bulk retry's body);
#: - the OAuth 2.0 callback's ``state`` is a note this server sealed (``authorize``); any
#:   other string is a 400 (``invalid_state``);
#: - a GET or OPTIONS of a webhook URL is one of several senders' checks, each with
#:   parameters of its own (Meta's ``hub.*``, Dropbox's ``challenge``, Okta's header,
#:   CloudEvents' ``WebHook-Request-Origin``): one with none of them is a 405 (webhooks are
#:   POSTed).
_SEMANTIC_422: list[dict[str, Any]] = [
    {
        "include-path-regex": path,
        **({"include-method": method} if method else {}),
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2XX", 401, 404, 409, *statuses]}
        },
    }
    for path, method, statuses in (
        ("^/api/credentials$", None, [422]),
        ("^/api/workflows$", None, [422, 400]),
        ("^/api/workflows/", None, [422]),
        ("^/api/auth/signup$", None, [422]),
        ("^/api/members$", None, [422]),
        ("^/api/executions$", None, [400, 422]),
        ("^/api/executions/retry$", None, [422]),
        ("^/api/oauth2/callback$", None, [400]),
        ("^/api/webhooks/", "GET", [405, 422]),
        ("^/api/webhooks/", "OPTIONS", [405, 422]),
    )
]


def _database_url() -> str:
    """``memory://``; with ``IPAAS_FUZZ_POSTGRES`` set (``make fuzz``'s second pass), a new,
    migrated PostgreSQL database at ``IPAAS_TEST_POSTGRES_URL``, dropped after the module
    (``auth_headers``): PostgreSQL refuses values SQLite and the memory store take (U+0000,
    32-bit integers...)."""
    if not os.environ.get("IPAAS_FUZZ_POSTGRES"):
        return "memory://"
    if not POSTGRES_URL:
        msg = "IPAAS_FUZZ_POSTGRES is set but IPAAS_TEST_POSTGRES_URL is not"
        raise RuntimeError(msg)
    url = _DATABASE.enter_context(postgres_database())
    in_thread(lambda: run_migrations(url))
    return url


_DATABASE = contextlib.ExitStack()
DATABASE_URL = _database_url()


def _app(data_dir: Path) -> Any:
    settings = Settings(
        env="test",
        database_url=DATABASE_URL,
        secret_key=Fernet.generate_key().decode(),
        data_dir=data_dir,
        log_format="console",
        log_level="critical",
        # Generated URLs must not leave the machine: nothing is allowed past the SSRF guard,
        # and the one name that resolves here (localhost) is refused by it.
        egress_allow=[],
        step_timeout_s=2,
    )
    store = MemoryStore() if DATABASE_URL == "memory://" else create_store(settings)
    return create_app(runtime=Runtime.build(settings, store=store), workers=False)


# Built at collection (``parametrize`` needs the operations); it starts (lifespan) on the
# first request. Nothing is written to the data directory: the store is in memory and the
# secret key is given. (``schemathesis.pytest.from_fixture`` would build it lazily, but it
# fails on pytest 9.)
APP = _app(Path(tempfile.gettempdir()))
schema = schemathesis.openapi.from_dict(APP.openapi(), config=_config())
schema.app = APP


@pytest.fixture(scope="module")
def auth_headers() -> Iterator[dict[str, str]]:
    """The seeded tenant's bearer token; the app stops after the module."""
    yield _seed(APP)
    asgi.shutdown_lifespans()
    _DATABASE.close()


def _seed(app: Any) -> dict[str, str]:
    """A tenant with a credential, a workflow, a queued and a cancelled execution."""
    with asgi.get_client(app) as client:
        response = client.post(
            "/api/auth/signup",
            json={"email": "fuzz@example.com", "password": "correct horse", "tenant_name": "F"},
        )
        assert response.status_code == 201, response.text
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        credential = client.post(
            "/api/credentials",
            headers=headers,
            json={
                "name": "slack",
                "type": "slack",
                "secret": {"webhook_url": "https://hooks.slack.invalid/services/T/B/X"},
            },
        ).json()["id"]
        workflow = client.post(
            "/api/workflows",
            headers=headers,
            json={
                "name": "fuzzed",
                "steps": [
                    {
                        "id": "notify",
                        "type": "slack_message",
                        "credential_id": credential,
                        "config": {"text": "{{ trigger.body }}"},
                    }
                ],
            },
        ).json()["id"]
        for _ in range(2):
            response = client.post(f"/api/webhooks/{workflow}", json={"n": 1})
            assert response.status_code == 202, response.text
        cancelled = response.json()["execution_id"]
        response = client.post(f"/api/executions/{cancelled}/cancel", headers=headers)
        assert response.status_code == 200, response.text
    return headers


@schema.parametrize()
def test_api_conforms_to_its_schema(case: Any, auth_headers: dict[str, str]) -> None:
    # A case whose headers are the invalid part (its Authorization header) keeps them: with
    # the tenant's token put back, the request was valid and its 200 failed the
    # negative-data check (``make fuzz`` reported GET /api/stats so).
    header = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    negative_headers = header is not None and header.mode is GenerationMode.NEGATIVE
    headers = None if negative_headers else auth_headers
    case.call_and_validate(headers=headers, base_url=f"http://{asgi.HOST}")


def test_make_fuzz_is_documented() -> None:
    root = Path(__file__).resolve().parents[2]
    assert "fuzz:" in (root / "Makefile").read_text()
    assert "make fuzz" in (root / "README.md").read_text()
