from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.process.conftest import ServerProcess
from tests.standins.server import StandinProcess
from tests.web import browser

if TYPE_CHECKING:
    from playwright.async_api import Page


def require_chromium() -> None:
    reason = browser.missing()
    if reason is None:
        return
    if os.environ.get("IPAAS_REQUIRE_SERVICES"):
        pytest.fail(f"browser tests cannot skip in CI: {reason}")
    pytest.skip(f"browser tests skipped: {reason}")


@pytest.fixture(scope="module")
def console_standin(chromium_present: None) -> Iterator[StandinProcess]:
    with StandinProcess() as process:
        yield process


@pytest.fixture(scope="module")
def chromium_present() -> None:
    require_chromium()


@pytest.fixture(scope="module")
def console_server(
    chromium_present: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One real ``ipaas serve`` (SQLite, embedded workers) for the module's browser tests."""
    data_dir: Path = tmp_path_factory.mktemp("console")
    server = ServerProcess(data_dir, env={"IPAAS_LOG_LEVEL": "warning"})
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def page(chromium_present: None) -> AsyncIterator[Page]:
    """A fresh browser per test, on the test's own event loop (Playwright's async API: its
    sync API would run a loop of its own under pytest-asyncio's)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        instance = await browser.launch(playwright)
        context = await instance.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        yield await context.new_page()
        await instance.close()
