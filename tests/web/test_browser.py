"""The console in a real browser (Debian's Chromium) against a real ``ipaas serve`` and the
local stand-ins: what a user does, click by click. Skipped, with the reason, when Chromium is
absent, except in CI (``IPAAS_REQUIRE_SERVICES=1``), where that is a failure."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING
from uuid import uuid4

import httpx
import pytest
from playwright.async_api import expect as pw_expect

from tests.process.conftest import ServerProcess
from tests.standins.server import StandinProcess
from tests.web.browser import PASSWORD

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = pytest.mark.process


async def sign_up(page: Page, server: ServerProcess) -> str:
    email = f"user-{uuid4().hex[:8]}@example.com"
    await page.goto(f"{server.url}/signup")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password (8 characters or more)").fill(PASSWORD)
    await page.get_by_label("Organisation name").fill("Acme")
    await page.get_by_role("button", name="Create account").click()
    await page.wait_for_url(f"{server.url}/")
    return email


async def add_slack_credential(page: Page, server: ServerProcess, hook: str) -> None:
    await page.goto(f"{server.url}/credentials")
    await page.get_by_label("Name").fill("team-slack")
    await page.get_by_label("Type").select_option("slack")
    await page.locator("#f-secret-slack-webhook_url").fill(hook)
    await page.get_by_role("button", name="Save credential").click()
    await page.wait_for_url(f"{server.url}/credentials")
    await pw_expect(page.get_by_role("cell", name="team-slack", exact=True)).to_be_visible()
    assert hook not in await page.content()


async def test_slack_workflow_from_form_to_timeline(
    page: Page, console_server: ServerProcess, console_standin: StandinProcess
) -> None:
    server = console_server
    hook = f"{console_standin.url}/services/T000/B000/SECRETpart"
    await sign_up(page, server)
    await add_slack_credential(page, server, hook)

    # Build the workflow in the generated form.
    await page.goto(f"{server.url}/workflows/new")
    await page.locator("#f-name").fill("Orders to Slack")
    await page.locator("#f-steps-0-type").select_option("slack_message")
    await pw_expect(page.locator("#f-steps-0-config-slack_message-text")).to_be_visible()
    await pw_expect(page.locator("#f-steps-0-config-discord_message-content")).to_be_hidden()
    await page.locator("#f-steps-0-credential_id").select_option(label="team-slack (slack)")
    await page.locator("#f-steps-0-config-slack_message-text").fill(
        "Order {{ trigger.body.order.id }} for {{ trigger.body.order.total }} EUR"
    )
    await page.get_by_role("button", name="Save workflow").click()
    await page.wait_for_url(re.compile(r"/workflows/wf_[^/]+$"))
    webhook_url = await page.locator("#webhook-url").input_value()
    assert webhook_url.startswith(f"{server.url}/api/webhooks/wf_")
    await pw_expect(page.locator("#curl")).to_contain_text(f"curl -X POST {webhook_url}")

    # Simulate: the exact request that would go out, nothing sent.
    await page.get_by_label("Sample webhook body (JSON)").fill('{"order": {"id": 7, "total": 5}}')
    await page.get_by_role("button", name="Simulate").click()
    result = page.locator("#dry-run-result")
    await pw_expect(result).to_contain_text("simulated")
    await pw_expect(result.locator("[data-request]")).to_contain_text("Order 7 for 5 EUR")
    assert "SECRETpart" not in await result.inner_text()
    assert not [r for r in _standin_requests(console_standin) if "Order 7" in json.dumps(r)]

    # Dry run: really sent, nothing saved.
    await page.get_by_label("Sample webhook body (JSON)").fill('{"order": {"id": 8, "total": 6}}')
    await page.get_by_role("button", name="Dry run").click()
    await pw_expect(page.locator("#dry-run-result")).to_contain_text("succeeded")
    assert [r for r in _standin_requests(console_standin) if "Order 8" in json.dumps(r)]

    # Watch the executions list while the webhook fires: it updates without a reload.
    await page.goto(f"{server.url}/executions")
    fired = httpx.post(webhook_url, json={"order": {"id": 1042, "total": 99.5}}, timeout=10)
    assert fired.status_code == 202, fired.text
    execution_id = fired.json()["execution_id"]
    row = page.locator(f'[data-execution="{execution_id}"]')
    await pw_expect(row.locator('[data-status="succeeded"]')).to_be_visible()

    # Its timeline.
    await row.get_by_role("link").click()
    await page.wait_for_url(f"{server.url}/executions/{execution_id}")
    step = page.locator('[data-step="notify"]')
    await pw_expect(step).to_contain_text("succeeded")
    await step.get_by_text("Input (secrets masked)").click()
    await pw_expect(step).to_contain_text("Order 1042 for 99.5 EUR")
    await pw_expect(page.get_by_role("button", name="Cancel execution")).to_have_count(0)


def _standin_requests(standin: StandinProcess) -> list[dict[str, object]]:
    response = httpx.get(f"{standin.url}/_standin/requests", timeout=10)
    response.raise_for_status()
    found: list[dict[str, object]] = response.json()
    return found


async def test_cancel_a_slow_execution(
    page: Page, console_server: ServerProcess, console_standin: StandinProcess
) -> None:
    server = console_server
    await sign_up(page, server)
    call_id = uuid4().hex[:8]
    definition = {
        "trigger": {"type": "webhook"},
        "steps": [
            {
                "id": "slow",
                "type": "http_request",
                "config": {
                    "url": f"{console_standin.url}/slow",
                    "query": {"seconds": "30", "id": call_id},
                },
            }
        ],
    }
    # This one is written in the JSON editor.
    await page.goto(f"{server.url}/workflows/new")
    await page.get_by_text("JSON editor").click()
    await page.locator("#f-json-name").fill("Slow call")
    await page.get_by_label("Definition (JSON)").fill(json.dumps(definition))
    await page.get_by_role("button", name="Save from JSON").click()
    await page.wait_for_url(re.compile(r"/workflows/wf_[^/]+$"))
    webhook_url = await page.locator("#webhook-url").input_value()

    fired = httpx.post(webhook_url, json={"n": 1}, timeout=10)
    execution_id = fired.json()["execution_id"]
    await page.goto(f"{server.url}/executions/{execution_id}")
    await pw_expect(page.locator('#execution [data-status="running"]').first).to_be_visible()
    await page.get_by_role("button", name="Cancel execution").click()
    await pw_expect(page.locator('#execution [data-status="cancelled"]').first).to_be_visible()
    await pw_expect(page.get_by_role("button", name="Retry from the failed step")).to_be_visible()


async def test_bad_input_and_missing_pages_in_the_browser(
    page: Page, console_server: ServerProcess
) -> None:
    server = console_server
    await sign_up(page, server)
    await page.goto(f"{server.url}/workflows/new")
    await page.locator("#f-name").fill("Broken")
    await page.locator("#f-steps-0-type").select_option("slack_message")
    await page.get_by_role("button", name="Save workflow").click()
    error = page.locator("#err-steps-0-credential_id")
    await pw_expect(error).to_contain_text("needs a credential")
    credential = page.locator("#f-steps-0-credential_id")
    await pw_expect(credential).to_have_attribute("aria-invalid", "true")

    await page.goto(f"{server.url}/executions/ex_missing")
    await pw_expect(page.get_by_role("heading", name="Not found")).to_be_visible()

    # Logging out ends the session: the back button does not bring the pages back.
    await page.goto(f"{server.url}/")
    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url(f"{server.url}/login")
    await page.goto(f"{server.url}/workflows")
    await page.wait_for_url(f"{server.url}/login")


async def test_keyboard_reaches_the_form_with_a_visible_focus(
    page: Page, console_server: ServerProcess
) -> None:
    await page.set_viewport_size({"width": 375, "height": 800})
    await page.goto(f"{console_server.url}/login")
    await page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    await pw_expect(skip).to_be_focused()
    assert await skip.evaluate("e => getComputedStyle(e).outlineStyle") == "solid"
    # Tab on to the email field: every control on the way is reachable and labelled.
    for _ in range(10):
        await page.keyboard.press("Tab")
        if await page.get_by_label("Email").evaluate("e => e === document.activeElement"):
            break
    email = page.get_by_label("Email")
    await pw_expect(email).to_be_focused()
    assert await email.evaluate("e => getComputedStyle(e).outlineStyle") == "solid"
    # Nothing is wider than a phone's screen.
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375


async def test_an_invitation_link_fills_itself_in(
    page: Page, console_server: ServerProcess
) -> None:
    """The token rides in the link's fragment (never sent to the server); the page's script
    puts it in the field and takes it out of the address bar."""
    server = console_server
    await sign_up(page, server)
    await page.goto(f"{server.url}/members")
    invitee = f"member-{uuid4().hex[:8]}@example.com"
    await page.get_by_label("Email").fill(invitee)
    await page.get_by_role("button", name="Invite").click()
    link = await page.locator("#invite-link").input_value()
    assert link.startswith(f"{server.url}/invite#ipaas_invite_")

    browser = page.context.browser
    assert browser is not None
    other = await (await browser.new_context()).new_page()
    await other.goto(link)
    await pw_expect(other.locator("#f-invite_token")).to_have_value(link.split("#", 1)[1])
    assert other.url == f"{server.url}/invite"
    await other.get_by_label("Password (8 characters or more)").fill(PASSWORD)
    await other.get_by_label("The same password again").fill(PASSWORD)
    await other.get_by_role("button", name="Join").click()
    await other.wait_for_url(f"{server.url}/")
    await other.goto(f"{server.url}/members")
    await pw_expect(other.get_by_role("cell", name=f"{invitee} (you)")).to_be_visible()
    await pw_expect(other.get_by_role("button", name="Invite")).to_have_count(0)
