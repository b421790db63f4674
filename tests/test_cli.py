from __future__ import annotations

import asyncio
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
