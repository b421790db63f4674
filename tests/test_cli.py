from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from ipaas.cli import main
from ipaas.config import Settings
from ipaas.stores import create_store
from ipaas.tenants import service as tenant_service
from tests.conftest import TEST_KEY


def test_migrate_then_token_create_prints_a_working_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("IPAAS_DATABASE_URL", url)
    monkeypatch.setenv("IPAAS_SECRET_KEY", TEST_KEY)
    assert main(["migrate"]) == 0
    settings = Settings()

    async def sign_up() -> None:
        store = create_store(settings)
        await store.startup()
        try:
            await tenant_service.signup(
                store,
                email="ops@example.com",
                password="long enough pw",
                tenant_name="Ops",
                token_ttl_s=60,
            )
        finally:
            await store.shutdown()

    asyncio.run(sign_up())
    capsys.readouterr()
    assert main(["token", "create", "--email", "OPS@example.com", "--name", "deploy"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("ipaas_")

    async def check() -> str:
        store = create_store(settings)
        await store.startup()
        try:
            return (await tenant_service.authenticate(store, token)).tenant_id
        finally:
            await store.shutdown()

    assert asyncio.run(check()).startswith("tn_")
    assert main(["token", "create", "--email", "nobody@example.com"]) == 1


def test_tenant_limits_are_set_shown_and_cleared_by_the_operator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("IPAAS_DATABASE_URL", url)
    monkeypatch.setenv("IPAAS_SECRET_KEY", TEST_KEY)
    monkeypatch.setenv("IPAAS_TENANT_MAX_QUEUED", "1000")
    assert main(["migrate"]) == 0
    settings = Settings()

    async def sign_up() -> str:
        store = create_store(settings)
        await store.startup()
        try:
            tenant, _ = await tenant_service.signup(
                store,
                email="a@example.com",
                password="long enough pw",
                tenant_name="A",
                token_ttl_s=60,
            )
        finally:
            await store.shutdown()
        return tenant.id

    tenant_id = asyncio.run(sign_up())
    capsys.readouterr()
    argv = [
        "tenant",
        "limits",
        tenant_id,
        "--rate",
        "2.5",
        "--burst",
        "20",
        "--max-concurrency",
        "4",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["overrides"] == {
        "rate_limit": 2.5,
        "rate_burst": 20,
        "max_queued": None,
        "max_concurrency": 4,
    }
    assert report["effective"]["max_queued"] == 1000
    # Only the options given change; "default" clears one.
    assert main(["tenant", "limits", tenant_id, "--burst", "default", "--max-queued", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["overrides"] == {
        "rate_limit": 2.5,
        "rate_burst": None,
        "max_queued": 5,
        "max_concurrency": 4,
    }
    assert report["effective"]["rate_burst"] == 3  # one second's worth of 2.5/s
    assert main(["tenant", "limits", tenant_id]) == 0
    assert json.loads(capsys.readouterr().out)["overrides"]["max_queued"] == 5
    assert main(["tenant", "limits", "tn_missing", "--rate", "1"]) == 1
    with pytest.raises(SystemExit):
        main(["tenant", "limits", tenant_id, "--rate", "-1"])
    with pytest.raises(SystemExit):
        main(["tenant", "limits", tenant_id, "--burst", "lots"])
