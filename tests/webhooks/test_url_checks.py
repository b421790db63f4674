"""Senders' unsigned checks of a webhook URL (``webhooks/checks.py``): Microsoft Graph,
Azure Event Grid (and CloudEvents' OPTIONS), Dropbox, Okta and Trello each ask before they
send a first event, and
send none until they get the answer they wait for. Before, Graph's check was taken as an
event (202, an execution with no body), and the others were a 405."""

from __future__ import annotations

import httpx
import pytest

from ipaas.runtime import Runtime
from tests.webhooks.conftest import NewWorkflow, executions_of
from tests.webhooks.test_endpoints import _client, _webhook_url
from tests.webhooks.test_signatures import signed_workflow

#: As Microsoft Graph sends it ("Receive change notifications through webhooks").
GRAPH_TOKEN = "Validation: Testing client application reachability for subscription Request-Id: 1"
#: As Event Grid sends it ("Endpoint validation with Event Grid events").
EVENT_GRID_CHECK = [
    {
        "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
        "topic": "/subscriptions/xx/resourceGroups/rg/providers/Microsoft.Storage/x",
        "subject": "",
        "data": {
            "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
            "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/x",
        },
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2018-01-25T22:12:19.4556811Z",
        "metadataVersion": "1",
        "dataVersion": "1",
    }
]
EVENT_GRID_HEADERS = {"aeg-event-type": "SubscriptionValidation"}


@pytest.fixture
async def workflow_id(new_workflow: NewWorkflow) -> str:
    return await new_workflow()


def assert_text(response: httpx.Response, text: str) -> None:
    assert response.status_code == 200, response.text
    assert response.text == text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-content-type-options"] == "nosniff"


class TestMicrosoftGraph:
    async def test_the_validation_token_is_answered_as_text(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        for url in (f"/api/webhooks/{workflow_id}", f"/api/webhooks/{workflow_id}/"):
            response = await client.post(
                url,
                params={"validationToken": GRAPH_TOKEN},
                headers={"content-type": "text/plain; charset=utf-8"},
            )
            assert_text(response, GRAPH_TOKEN)  # decoded, as Graph wants it back
        assert executions_of(runtime, workflow_id) == []
        # Then the notifications, a JSON body: events.
        notification = {"value": [{"subscriptionId": "s", "clientState": "secretClientValue"}]}
        response = await client.post(f"/api/webhooks/{workflow_id}", json=notification)
        assert response.status_code == 202, response.text
        assert len(executions_of(runtime, workflow_id)) == 1

    async def test_answered_for_a_workflow_that_checks_signatures(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        new_workflow: NewWorkflow,
    ) -> None:
        # Graph signs nothing (its notifications carry clientState): the check is unsigned.
        signed = await signed_workflow(
            client, auth, new_workflow, "hmac_sha256", {"secret": "s3cret-s3cret"}
        )
        response = await client.post(
            f"/api/webhooks/{signed}", params={"validationToken": GRAPH_TOKEN}
        )
        assert_text(response, GRAPH_TOKEN)

    async def test_on_the_routed_path_too(self, runtime: Runtime) -> None:
        runtime.settings.cors_origins = ["https://console.example.com"]
        async with _client(runtime) as client:
            url, _ = await _webhook_url(client)
            origin = {"Origin": "https://console.example.com"}
            response = await client.post(
                url, params={"validationToken": GRAPH_TOKEN}, headers=origin
            )
        assert_text(response, GRAPH_TOKEN)

    async def test_a_token_given_twice_is_refused(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        response = await client.post(
            f"/api/webhooks/{workflow_id}?validationToken=a&validationToken=b"
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_challenge"
        assert executions_of(runtime, workflow_id) == []

    async def test_a_post_with_a_body_is_an_event(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        response = await client.post(
            f"/api/webhooks/{workflow_id}", params={"validationToken": "x"}, json={"n": 1}
        )
        assert response.status_code == 202
        (execution,) = executions_of(runtime, workflow_id)
        assert execution.trigger.query == {"validationToken": "x"}


class TestEventGrid:
    async def test_the_validation_code_is_answered(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        response = await client.post(
            f"/api/webhooks/{workflow_id}", json=EVENT_GRID_CHECK, headers=EVENT_GRID_HEADERS
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
        assert executions_of(runtime, workflow_id) == []

    async def test_notifications_after_it_are_events(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        event = [{**EVENT_GRID_CHECK[0], "eventType": "Microsoft.Storage.BlobCreated"}]
        headers = {"aeg-event-type": "Notification"}
        response = await client.post(f"/api/webhooks/{workflow_id}", json=event, headers=headers)
        assert response.status_code == 202
        # Said to be a validation, but not one: an event as well.
        response = await client.post(
            f"/api/webhooks/{workflow_id}", json=event, headers=EVENT_GRID_HEADERS
        )
        assert response.status_code == 202
        assert len(executions_of(runtime, workflow_id)) == 2

    async def test_a_validation_without_its_code_is_refused(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        check = [{**EVENT_GRID_CHECK[0], "data": {"validationUrl": "https://x.example"}}]
        response = await client.post(
            f"/api/webhooks/{workflow_id}", json=check, headers=EVENT_GRID_HEADERS
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_challenge"
        assert executions_of(runtime, workflow_id) == []


class TestGets:
    async def test_dropbox_challenge_is_answered_as_text(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        response = await client.get(
            f"/api/webhooks/{workflow_id}", params={"challenge": "b7Hp2x-9"}
        )
        assert_text(response, "b7Hp2x-9")
        assert executions_of(runtime, workflow_id) == []

    async def test_okta_verification_is_answered(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        headers = {"X-Okta-Verification-Challenge": "kRxXcc1v3XPKCP1Xfn2Rg-rN0vBk6NSCdE5Rk"}
        response = await client.get(f"/api/webhooks/{workflow_id}/", headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == {"verification": "kRxXcc1v3XPKCP1Xfn2Rg-rN0vBk6NSCdE5Rk"}
        assert executions_of(runtime, workflow_id) == []

    async def test_trello_head_is_answered(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        response = await client.head(f"/api/webhooks/{workflow_id}")
        assert response.status_code == 200
        assert response.content == b""
        assert executions_of(runtime, workflow_id) == []

    async def test_cloudevents_abuse_protection_is_answered(
        self, client: httpx.AsyncClient, runtime: Runtime, workflow_id: str
    ) -> None:
        # As Event Grid sends it for a CloudEvents subscription (the spec's section 4.1).
        headers = {"WebHook-Request-Origin": "eventemitter.example.com"}
        response = await client.options(f"/api/webhooks/{workflow_id}", headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["webhook-allowed-origin"] == "eventemitter.example.com"
        assert response.headers["webhook-allowed-rate"] == "*"
        assert executions_of(runtime, workflow_id) == []
        # Without it, an OPTIONS is no check.
        response = await client.options(f"/api/webhooks/{workflow_id}")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD, OPTIONS, POST"
        # Sent back in a header: only a host name is.
        headers = {"WebHook-Request-Origin": "evil.example.com X-Injected: 1"}
        response = await client.options(f"/api/webhooks/{workflow_id}", headers=headers)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_challenge"
        assert "webhook-allowed-origin" not in response.headers

    @pytest.mark.parametrize(
        "params", [{"challenge": ""}, {"challenge": "x" * 1025}, [("challenge", "a")] * 2]
    )
    async def test_a_challenge_that_cannot_be_echoed_is_refused(
        self, client: httpx.AsyncClient, workflow_id: str, params: object
    ) -> None:
        response = await client.get(f"/api/webhooks/{workflow_id}", params=params)  # type: ignore[arg-type]
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_challenge"

    async def test_unknown_inactive_or_another_kind_of_workflow_is_404(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        new_workflow: NewWorkflow,
        workflow_id: str,
    ) -> None:
        manual = await new_workflow(trigger={"type": "manual"})
        await client.patch(f"/api/workflows/{workflow_id}", json={"active": False}, headers=auth)
        for target in ("wf_nope", manual, workflow_id):
            url = f"/api/webhooks/{target}"
            assert (await client.head(url)).status_code == 404
            checked = await client.get(url, params={"challenge": "abc"})
            assert checked.status_code == 404
            assert checked.json()["error"]["code"] == "workflow_not_found"
            graph = await client.post(url, params={"validationToken": GRAPH_TOKEN})
            assert graph.status_code == 404
            origin = {"WebHook-Request-Origin": "eventemitter.example.com"}
            assert (await client.options(url, headers=origin)).status_code == 404
