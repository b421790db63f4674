from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from ipaas.engine.connectors import REGISTRY, ConnectorError, Endpoints, StepContext
from ipaas.engine.connectors.slack import SlackMessage, SlackMessageParams
from ipaas.kit.http import HttpClient
from tests.standins.server import StandinServer, free_port

connector = SlackMessage()


def make_ctx(http: HttpClient, standin: StandinServer, secret: dict[str, Any]) -> StepContext:
    return StepContext(
        http=http, secret=secret, endpoints=Endpoints(slack_api_url=standin.slack_api_url)
    )


def webhook(standin: StandinServer, hook: str = "T0001/B0001/goodhook") -> dict[str, Any]:
    return {"webhook_url": standin.slack_webhook_url(hook)}


BOT = {"bot_token": "xoxb-1234-5678-standin"}


async def run_error(ctx: StepContext, **params: Any) -> ConnectorError:
    with pytest.raises(ConnectorError) as info:
        await connector.run(ctx, SlackMessageParams.model_validate(params))
    return info.value


def test_registered() -> None:
    assert isinstance(REGISTRY["slack_message"], SlackMessage)
    assert SlackMessage.credential_type == "slack"


class TestParams:
    def test_text(self) -> None:
        params = SlackMessageParams.model_validate({"text": "Order 42", "unfurl_links": "false"})
        assert params.text == "Order 42"
        assert params.unfurl_links is False

    def test_rendered_number_is_text(self) -> None:
        # ``"{{ trigger.body.id }}"`` renders to the number itself.
        assert SlackMessageParams.model_validate({"text": 42}).text == "42"

    def test_seed_alias_slack_message(self) -> None:
        assert SlackMessageParams.model_validate({"slack_message": "Test"}).text == "Test"

    def test_alias_and_same_text(self) -> None:
        params = SlackMessageParams.model_validate({"slack_message": "a", "text": "a"})
        assert params.text == "a"

    def test_alias_conflicts_with_text(self) -> None:
        with pytest.raises(ValidationError, match="not both"):
            SlackMessageParams.model_validate({"slack_message": "a", "text": "b"})

    @pytest.mark.parametrize("config", [{}, {"text": ""}, {"channel": "#general"}, {"blocks": []}])
    def test_needs_content(self, config: dict[str, Any]) -> None:
        with pytest.raises(ValidationError, match="give text"):
            SlackMessageParams.model_validate(config)

    def test_blocks_alone(self) -> None:
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
        assert SlackMessageParams.model_validate({"blocks": blocks}).blocks == blocks

    def test_invalid_block_is_named(self) -> None:
        blocks = [
            {"type": "divider"},
            {"type": "section", "block_id": "summary"},
        ]
        with pytest.raises(ValidationError) as info:
            SlackMessageParams.model_validate({"blocks": blocks})
        (error,) = info.value.errors()
        assert error["loc"] == ("blocks",)
        assert "blocks[1] (section 'summary')" in error["msg"]
        assert "text or fields attribute must be specified" in error["msg"]

    def test_unknown_block_type(self) -> None:
        with pytest.raises(ValidationError, match=r"blocks\[0\] \(sparkle\): unknown block type"):
            SlackMessageParams.model_validate({"blocks": [{"type": "sparkle"}]})

    def test_block_missing_field(self) -> None:
        with pytest.raises(ValidationError, match=r"blocks\[0\] \(image\)"):
            SlackMessageParams.model_validate({"blocks": [{"type": "image"}]})

    def test_too_many_blocks(self) -> None:
        with pytest.raises(ValidationError, match="at most 50 blocks"):
            SlackMessageParams.model_validate({"blocks": [{"type": "divider"}] * 51})

    def test_unknown_key(self) -> None:
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            SlackMessageParams.model_validate({"text": "x", "webhook": "y"})


class TestBuild:
    def test_webhook_request(self, http_client: HttpClient, standin: StandinServer) -> None:
        params = SlackMessageParams.model_validate(
            {"text": "Order 42 shipped", "username": "shop", "unfurl_links": False}
        )
        request = connector.build(make_ctx(http_client, standin, webhook(standin)), params)
        assert request.method == "POST"
        assert str(request.url) == standin.slack_webhook_url("T0001/B0001/goodhook")
        assert request.headers["content-type"] == "application/json; charset=utf-8"
        assert "authorization" not in request.headers
        assert json.loads(request.content) == {
            "text": "Order 42 shipped",
            "username": "shop",
            "unfurl_links": False,
        }

    def test_bot_token_request(self, http_client: HttpClient, standin: StandinServer) -> None:
        params = SlackMessageParams.model_validate(
            {"text": "hi", "channel": "C0123456789", "thread_ts": "1700000000.000100"}
        )
        request = connector.build(make_ctx(http_client, standin, BOT), params)
        assert request.method == "POST"
        assert str(request.url) == f"{standin.url}/api/chat.postMessage"
        assert request.headers["authorization"] == "Bearer xoxb-1234-5678-standin"
        assert request.headers["content-type"] == "application/json; charset=utf-8"
        assert json.loads(request.content) == {
            "text": "hi",
            "channel": "C0123456789",
            "thread_ts": "1700000000.000100",
        }

    def test_a_stored_bot_token_that_is_not_ascii_fails_naming_the_header(
        self, http_client: HttpClient, standin: StandinServer
    ) -> None:
        # Stored before the credential refused it: the shared client's build_request names
        # the header, without the token, and without the codec's error (which holds it).
        params = SlackMessageParams.model_validate({"text": "hi", "channel": "C0123456789"})
        secret = {"bot_token": "xoxb-SENTINEL-clé"}
        with pytest.raises(ValueError, match=r"^header 'authorization' is not ASCII text$") as e:
            connector.build(make_ctx(http_client, standin, secret), params)
        assert e.value.__context__ is None
        assert e.value.__cause__ is None

    def test_bot_token_needs_channel(self, http_client: HttpClient, standin: StandinServer) -> None:
        params = SlackMessageParams.model_validate({"text": "hi"})
        with pytest.raises(ConnectorError, match="needs a channel") as info:
            connector.build(make_ctx(http_client, standin, BOT), params)
        assert info.value.retryable is False

    def test_credential_without_target(
        self, http_client: HttpClient, standin: StandinServer
    ) -> None:
        params = SlackMessageParams.model_validate({"text": "hi"})
        with pytest.raises(ConnectorError, match="neither a webhook_url nor a bot_token"):
            connector.build(make_ctx(http_client, standin, {}), params)


class TestIncomingWebhook:
    async def test_success(self, http_client: HttpClient, clean_standin: StandinServer) -> None:
        ctx = make_ctx(http_client, clean_standin, webhook(clean_standin))
        params = SlackMessageParams.model_validate({"text": "Order 42 shipped"})

        output = await connector.run(ctx, params)

        assert output == {"status_code": 200, "response": "ok"}
        (received,) = clean_standin.requests(kind="slack_webhook")
        assert received["path"] == "/services/T0001/B0001/goodhook"
        assert received["body"] == {"text": "Order 42 shipped"}
        assert clean_standin.stats()["slack_messages"] == 1

    async def test_seed_alias_is_sent_as_text(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        ctx = make_ctx(http_client, clean_standin, webhook(clean_standin))
        await connector.run(ctx, SlackMessageParams.model_validate({"slack_message": "Test"}))
        assert clean_standin.requests(kind="slack_webhook")[0]["body"] == {"text": "Test"}

    async def test_blocks(self, http_client: HttpClient, clean_standin: StandinServer) -> None:
        blocks = [{"type": "header", "text": {"type": "plain_text", "text": "New order"}}]
        ctx = make_ctx(http_client, clean_standin, webhook(clean_standin))
        output = await connector.run(ctx, SlackMessageParams.model_validate({"blocks": blocks}))
        assert output["status_code"] == 200
        assert clean_standin.requests(kind="slack_webhook")[0]["body"] == {"blocks": blocks}

    @pytest.mark.parametrize(
        ("hook", "status", "remote"),
        [
            ("T0001/B0001/unknown", 404, "no_service"),
            ("T0001/B0001/channel_not_found", 404, "channel_not_found"),
            ("T0001/B0001/prohibited", 403, "action_prohibited"),
            ("T0001/B0001/invalid_token", 403, "invalid_token"),
            ("T0001/B0001/archived", 410, "channel_is_archived"),
        ],
    )
    async def test_client_errors_are_final(
        self,
        http_client: HttpClient,
        clean_standin: StandinServer,
        hook: str,
        status: int,
        remote: str,
    ) -> None:
        ctx = make_ctx(http_client, clean_standin, webhook(clean_standin, hook))
        error = await run_error(ctx, text="hi")
        assert error.retryable is False
        assert error.status_code == status
        assert error.remote_error == remote
        assert str(status) in error.message

    async def test_invalid_payload(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        clean_standin.add_fault("/services/", status=400)
        error = await run_error(
            make_ctx(http_client, clean_standin, webhook(clean_standin)), text="x"
        )
        assert (error.status_code, error.remote_error, error.retryable) == (
            400,
            "invalid_payload",
            False,
        )

    async def test_rate_limited_is_retryable(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        clean_standin.add_fault("/services/", status=429, retry_after=7)
        error = await run_error(
            make_ctx(http_client, clean_standin, webhook(clean_standin)), text="x"
        )
        assert error.retryable is True
        assert error.status_code == 429
        assert error.retry_after_s == 7.0
        assert error.remote_error == "rate_limited"

    @pytest.mark.parametrize(("hook", "status"), [("x/y/error500", 500), ("x/y/unavailable", 503)])
    async def test_server_errors_are_retryable(
        self, http_client: HttpClient, clean_standin: StandinServer, hook: str, status: int
    ) -> None:
        ctx = make_ctx(http_client, clean_standin, webhook(clean_standin, hook))
        error = await run_error(ctx, text="x")
        assert (error.retryable, error.status_code) == (True, status)

    async def test_connection_refused_is_retryable(
        self, http_client: HttpClient, standin: StandinServer
    ) -> None:
        secret = {"webhook_url": f"http://127.0.0.1:{free_port()}/services/T/B/X"}
        error = await run_error(make_ctx(http_client, standin, secret), text="x")
        assert error.retryable is True
        assert error.status_code is None
        assert "ConnectError" in error.message


class TestPostMessage:
    async def test_success(self, http_client: HttpClient, clean_standin: StandinServer) -> None:
        params = SlackMessageParams.model_validate({"text": "deploy done", "channel": "#ops"})
        output = await connector.run(make_ctx(http_client, clean_standin, BOT), params)

        assert output["ok"] is True
        assert output["channel"].startswith("C")
        assert output["ts"] == output["message"]["ts"]
        assert output["message"]["text"] == "deploy done"
        # The charset is sent, so Slack has nothing to warn about.
        assert "warning" not in output
        (received,) = clean_standin.requests(kind="slack_api")
        assert received["headers"]["authorization"] == "Bearer xoxb-1234-5678-standin"
        assert received["body"] == {"text": "deploy done", "channel": "#ops"}

    @pytest.mark.parametrize(
        ("secret", "channel", "remote"),
        [
            ({"bot_token": "xoxb-invalid"}, "#ops", "invalid_auth"),
            ({"bot_token": "not-a-slack-token"}, "#ops", "invalid_auth"),
            (BOT, "#unknown-channel", "channel_not_found"),
            (BOT, "#archived-2019", "is_archived"),
        ],
    )
    async def test_ok_false_is_final(
        self,
        http_client: HttpClient,
        clean_standin: StandinServer,
        secret: dict[str, Any],
        channel: str,
        remote: str,
    ) -> None:
        error = await run_error(
            make_ctx(http_client, clean_standin, secret), text="x", channel=channel
        )
        assert error.retryable is False
        assert error.status_code == 200
        assert error.remote_error == remote
        assert remote in error.message

    async def test_internal_error_is_retryable(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        ctx = make_ctx(http_client, clean_standin, BOT)
        error = await run_error(ctx, text="x", channel="#internal_error")
        assert (error.retryable, error.remote_error) == (True, "internal_error")

    async def test_rate_limited_is_retryable(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        ctx = make_ctx(http_client, clean_standin, BOT)
        error = await run_error(ctx, text="x", channel="#ratelimited")
        assert error.retryable is True
        assert error.status_code == 429
        assert error.remote_error == "ratelimited"
        assert error.retry_after_s == 1.0

    async def test_server_error_is_retryable(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        clean_standin.add_fault("/api/chat.postMessage", status=503, retry_after=2)
        ctx = make_ctx(http_client, clean_standin, BOT)
        error = await run_error(ctx, text="x", channel="#ops")
        assert (error.retryable, error.status_code, error.retry_after_s) == (True, 503, 2.0)
