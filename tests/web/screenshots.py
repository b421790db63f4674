"""``python -m tests.web.screenshots [DIR]`` (``make screenshots``): every console page at
375 and 1280 px wide, as PNGs in ``DIR`` (``docs/screenshots``).

Starts a real ``ipaas serve`` and the stand-ins in a temporary directory, fills it with a
little of everything (a Slack workflow with successful runs, a failing one, a slow one
still running) and photographs each page in Debian's Chromium, as the browser tests do.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from tests.process.conftest import Api, ServerProcess, wait_for
from tests.standins.server import StandinProcess
from tests.web import browser

WIDTHS = (375, 1280)
#: The first pages of ``shoot``'s list are taken before logging in.
PUBLIC = 3
EMAIL = "ada@example.com"


def seed(server: ServerProcess, standin: StandinProcess) -> dict[str, str]:
    api = Api(server.url).signup(EMAIL)
    credential = api.credential("slack", {"webhook_url": f"{standin.url}/services/T0/B0/XX"})
    text = "New order {{ trigger.body.order.id }} for {{ trigger.body.order.total }} EUR"
    slack = api.workflow(
        [
            {
                "id": "notify",
                "type": "slack_message",
                "credential_id": credential,
                "config": {"text": text},
            }
        ],
        name="Orders to Slack",
    )
    executions = [api.fire(slack, {"order": {"id": 1000 + n, "total": 10 * n}}) for n in range(6)]
    failing = api.workflow(
        [{"id": "sync", "type": "http_request", "config": {"url": f"{standin.url}/missing"}}],
        name="Sync to billing",
    )
    api.fire(failing, {"n": 1})
    slow = api.workflow(
        [
            {
                "id": "slow",
                "type": "http_request",
                "config": {"url": f"{standin.url}/slow", "query": {"seconds": "60"}},
            }
        ],
        name="Nightly export",
    )
    wait_for(
        lambda: {api.execution(e)["status"] for e in executions},
        until=lambda s: s == {"succeeded"},
        timeout_s=30,
        what="seed executions finished",
    )
    # A second version, so the history and a version's changes have something to show.
    edited = text.replace(" EUR", " {{ trigger.body.order.currency }}")
    step = {"id": "notify", "type": "slack_message", "credential_id": credential}
    response = api.patch(
        f"/api/workflows/{slack}", json={"steps": [step | {"config": {"text": edited}}]}
    )
    assert response.status_code == 200, response.text
    invited = api.post("/api/members", json={"email": "bob@example.com"})
    assert invited.status_code == 201, invited.text
    running = api.fire(slow, {"n": 1})
    api.close()
    return {
        "workflow": slack,
        "execution": executions[-1],
        "running": running,
        "credential": credential,
    }


async def shoot(server: ServerProcess, ids: dict[str, str], out: Path) -> list[Path]:
    from playwright.async_api import async_playwright

    pages = [
        ("login", "/login"),
        ("signup", "/signup"),
        ("invite", "/invite"),
        ("dashboard", "/"),
        ("workflows", "/workflows"),
        ("workflow-new", "/workflows/new"),
        ("workflow", f"/workflows/{ids['workflow']}"),
        ("workflow-edit", f"/workflows/{ids['workflow']}/edit"),
        ("workflow-history", f"/workflows/{ids['workflow']}/versions"),
        ("workflow-version", f"/workflows/{ids['workflow']}/versions/1"),
        ("credentials", "/credentials"),
        ("credential-edit", f"/credentials/{ids['credential']}/edit"),
        ("executions", "/executions"),
        ("execution", f"/executions/{ids['execution']}"),
        ("execution-running", f"/executions/{ids['running']}"),
        ("tokens", "/tokens"),
        ("members", "/members"),
        ("password", "/password"),
        ("not-found", "/executions/ex_missing"),
    ]
    saved = []
    async with async_playwright() as playwright:
        chromium = await browser.launch(playwright)
        for width in WIDTHS:
            context = await chromium.new_context(viewport={"width": width, "height": 900})
            page = await context.new_page()
            for name, path in pages[:PUBLIC]:
                await page.goto(server.url + path)
                saved.append(await _save(page, out, name, width))
            await page.goto(server.url + "/login")
            await page.get_by_label("Email").fill(EMAIL)
            await page.get_by_label("Password").fill(browser.PASSWORD)
            await page.get_by_role("button", name="Log in").click()
            await page.wait_for_url(server.url + "/")
            for name, path in pages[PUBLIC:]:
                await page.goto(server.url + path)
                if name == "workflow":
                    await page.get_by_role("button", name="Simulate").click()
                    await page.locator("#dry-run-result").wait_for()
                saved.append(await _save(page, out, name, width))
            await page.goto(server.url + "/tokens")
            await page.get_by_label("Name").fill("ci")
            await page.get_by_role("button", name="Create token").click()
            await page.locator("#new-token").wait_for()
            saved.append(await _save(page, out, "token-created", width))
            await context.close()
        await chromium.close()
    return saved


async def _save(page: object, out: Path, name: str, width: int) -> Path:
    path = out / f"{name}-{width}.png"
    await page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots").resolve()
    reason = browser.missing()
    if reason is not None:
        sys.exit(f"cannot take screenshots: {reason}")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, StandinProcess() as standin:
        server = ServerProcess(Path(tmp), env={"IPAAS_LOG_LEVEL": "warning"})
        server.start()
        try:
            ids = seed(server, standin)
            saved = asyncio.run(shoot(server, ids, out))
        finally:
            server.stop()
    for path in saved:
        print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)


if __name__ == "__main__":
    main()
