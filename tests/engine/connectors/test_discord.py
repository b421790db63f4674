from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from ipaas.engine.connectors import REGISTRY, ConnectorError, StepContext
from ipaas.engine.connectors.discord import DiscordMessage, DiscordMessageParams
from ipaas.kit.http import HttpClient
from tests.standins.server import StandinServer

connector = DiscordMessage()
GOOD_TOKEN = "good-token"


def make_ctx(http: HttpClient, standin: StandinServer, token: str = GOOD_TOKEN) -> StepContext:
    url = standin.discord_webhook_url("1200000000000000001", token)
    return StepContext(http=http, secret={"webhook_url": url})


async def run_error(ctx: StepContext, **params: Any) -> ConnectorError:
    with pytest.raises(ConnectorError) as info:
        await connector.run(ctx, DiscordMessageParams.model_validate(params))
    return info.value


def test_registered() -> None:
    assert isinstance(REGISTRY["discord_message"], DiscordMessage)
    assert DiscordMessage.credential_type == "discord"


class TestParams:
    def test_content(self) -> None:
        params = DiscordMessageParams.model_validate({"content": "hi", "tts": "true", "wait": 1})
        assert (params.content, params.tts, params.wait) == ("hi", True, True)

    def test_embeds_alone(self) -> None:
        params = DiscordMessageParams.model_validate({"embeds": [{"title": "Order 42"}]})
        assert params.model_dump(exclude_none=True)["embeds"] == [{"title": "Order 42"}]

    def test_a_full_embed_is_sent_as_given(self) -> None:
        embed = {
            "title": "Order 42", "type": "rich", "description": "Paid", "url": "https://x.test/42",
            "timestamp": "2026-12-01T12:00:00Z", "color": 0x5865F2,
            "footer": {"text": "shop", "icon_url": "https://x.test/i.png"},
            "image": {"url": "https://x.test/a.png"}, "thumbnail": {"url": "https://x.test/t.png"},
            "author": {"name": "Ada", "url": "https://x.test/ada"},
            "fields": [{"name": "Total", "value": "99.50", "inline": True}],
        }  # fmt: skip
        params = DiscordMessageParams.model_validate({"embeds": [embed]})
        assert params.model_dump(exclude_none=True)["embeds"] == [embed]

    @pytest.mark.parametrize(
        ("embed", "loc", "says"),
        [
            ({"title": "x", "descripton": "y"}, ("descripton",), "Extra inputs"),
            ({"title": "x", "colour": 1}, ("colour",), "Extra inputs"),
            ({"title": "x", "video": {"url": "https://x.test/v"}}, ("video",), "Extra inputs"),
            ({"color": "red"}, ("color",), "valid integer"),
            ({"color": 0x1000000}, ("color",), "less than or equal to 16777215"),
            ({"title": "x" * 257}, ("title",), "at most 256"),
            ({"description": "x" * 4097}, ("description",), "at most 4096"),
            ({"timestamp": "yesterday"}, ("timestamp",), "ISO 8601"),
            ({"image": "https://x.test/a.png"}, ("image",), "valid dictionary"),
            ({"footer": {"icon_url": "https://x.test/i.png"}}, ("footer", "text"), "required"),
            ({"fields": [{"name": "a", "value": ""}]}, ("fields", 0, "value"), "at least 1"),
            ({"fields": [{"name": "a", "value": "b"}] * 26}, ("fields",), "at most 25"),
        ],
    )
    def test_an_embed_discord_would_refuse_or_ignore_is_named(
        self, embed: dict[str, Any], loc: tuple[Any, ...], says: str
    ) -> None:
        with pytest.raises(ValidationError) as info:
            DiscordMessageParams.model_validate(
                {"content": "x", "embeds": [{"title": "ok"}, embed]}
            )
        (error,) = info.value.errors()
        assert error["loc"] == ("embeds", 1, *loc)
        assert says in error["msg"]

    def test_the_embeds_characters_together(self) -> None:
        """6,000 characters across every embed's texts; templates count once rendered."""
        fits = [{"description": "x" * 3000}, {"description": "y" * 2990, "title": "0123456789"}]
        assert DiscordMessageParams.model_validate({"embeds": fits}).embeds
        with pytest.raises(ValidationError, match="hold 6001 characters; Discord takes at most"):
            DiscordMessageParams.model_validate({"embeds": [*fits, {"title": "z"}]})
        templated = [{"description": "{{ trigger.body.text }}" * 150}, *fits]
        assert DiscordMessageParams.model_validate({"embeds": templated}).embeds

    @pytest.mark.parametrize("config", [{}, {"content": ""}, {"embeds": []}, {"username": "x"}])
    def test_needs_content_or_embeds(self, config: dict[str, Any]) -> None:
        with pytest.raises(ValidationError, match="give content or embeds"):
            DiscordMessageParams.model_validate(config)

    def test_at_most_ten_embeds(self) -> None:
        with pytest.raises(ValidationError, match="at most 10 items"):
            DiscordMessageParams.model_validate({"embeds": [{"title": "x"}] * 11})

    def test_content_limit(self) -> None:
        with pytest.raises(ValidationError, match="at most 2000 characters"):
            DiscordMessageParams.model_validate({"content": "x" * 2001})

    def test_unknown_key(self) -> None:
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            DiscordMessageParams.model_validate({"content": "x", "text": "y"})

    @pytest.mark.parametrize(
        ("username", "says"),
        [
            ("Discord alerts", 'with "discord" in it'),
            ("shopDISCORDbot", 'with "discord" in it'),
            ("Clyde", 'with "clyde" in it'),
            ("here", 'the username "here"'),
            (" Everyone ", 'the username "Everyone"'),
        ],
    )
    def test_a_username_discord_refuses_is_named(self, username: str, says: str) -> None:
        # Discord answered 400 at every run; the step was saved without a word.
        with pytest.raises(ValidationError, match=says):
            DiscordMessageParams.model_validate({"content": "x", "username": username})

    @pytest.mark.parametrize("username", ["Shop alerts", "hereford", "everyone's bot"])
    def test_a_username_with_those_words_inside_others_is_taken(self, username: str) -> None:
        params = DiscordMessageParams.model_validate({"content": "x", "username": username})
        assert params.username == username

    def test_a_forum_post_with_tags_and_flags(self) -> None:
        params = DiscordMessageParams.model_validate(
            {
                "content": "Order 42",
                "thread_name": "Order 42",
                "applied_tags": ["1300000000000000002", 1300000000000000003],
                "flags": 4096,
            }
        )
        assert params.applied_tags == ["1300000000000000002", "1300000000000000003"]

    @pytest.mark.parametrize(
        ("config", "says"),
        [
            ({"thread_id": "1", "thread_name": "x"}, "not both"),
            ({"applied_tags": ["1300000000000000002"]}, "give thread_name"),
            ({"thread_name": "x", "applied_tags": ["bug"]}, "digits only"),
            ({"thread_name": "x", "applied_tags": ["1"] * 6}, "at most 5 items"),
            ({"thread_name": ""}, "at least 1 character"),
            ({"thread_name": "x" * 101}, "at most 100 characters"),
            ({"flags": 64}, "4 (SUPPRESS_EMBEDS), 4096"),
            ({"flags": -4}, "4 (SUPPRESS_EMBEDS), 4096"),
            ({"flags": "4"}, "valid integer"),
        ],
    )
    def test_what_discord_refuses_of_threads_and_flags_is_named(
        self, config: dict[str, Any], says: str
    ) -> None:
        with pytest.raises(ValidationError, match=re.escape(says)):
            DiscordMessageParams.model_validate({"content": "x", **config})


class TestBuild:
    def test_plain(self, http_client: HttpClient, standin: StandinServer) -> None:
        params = DiscordMessageParams.model_validate({"content": "Order 42", "username": "shop"})
        request = connector.build(make_ctx(http_client, standin), params)
        assert request.method == "POST"
        assert str(request.url) == standin.discord_webhook_url("1200000000000000001", GOOD_TOKEN)
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.content) == {"content": "Order 42", "username": "shop"}

    def test_wait_and_thread_go_to_the_query(
        self, http_client: HttpClient, standin: StandinServer
    ) -> None:
        params = DiscordMessageParams.model_validate(
            {
                "content": "hi",
                "wait": True,
                "thread_id": "1300000000000000001",
                "allowed_mentions": {"parse": []},
            }
        )
        request = connector.build(make_ctx(http_client, standin), params)
        assert request.url.params == httpx.QueryParams(
            {"wait": "true", "thread_id": "1300000000000000001"}
        )
        assert json.loads(request.content) == {"content": "hi", "allowed_mentions": {"parse": []}}

    def test_query_of_the_webhook_url_is_kept(self, http_client: HttpClient) -> None:
        secret = {"webhook_url": "https://discord.com/api/webhooks/1/t?thread_id=7"}
        params = DiscordMessageParams.model_validate({"content": "hi", "wait": True})
        request = connector.build(StepContext(http=http_client, secret=secret), params)
        assert str(request.url) == "https://discord.com/api/webhooks/1/t?thread_id=7&wait=true"

    def test_credential_without_url(self, http_client: HttpClient) -> None:
        params = DiscordMessageParams.model_validate({"content": "hi"})
        with pytest.raises(ConnectorError, match="no webhook_url") as info:
            connector.build(StepContext(http=http_client, secret={}), params)
        assert info.value.retryable is False


class TestRun:
    async def test_sent_204(self, http_client: HttpClient, clean_standin: StandinServer) -> None:
        params = DiscordMessageParams.model_validate({"content": "Order 42 shipped"})
        output = await connector.run(make_ctx(http_client, clean_standin), params)

        assert output == {"status_code": 204, "message": None}
        (received,) = clean_standin.requests(kind="discord")
        assert received["body"] == {"content": "Order 42 shipped"}
        assert clean_standin.stats()["discord_messages"] == 1

    async def test_wait_returns_the_message(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        params = DiscordMessageParams.model_validate(
            {
                "content": "hi",
                "embeds": [{"title": "Order 42"}],
                "wait": True,
                "thread_id": "1300000000000000001",
            }
        )
        output = await connector.run(make_ctx(http_client, clean_standin), params)

        assert output["status_code"] == 200
        message = output["message"]
        assert message["content"] == "hi"
        assert message["embeds"] == [{"title": "Order 42"}]
        assert message["channel_id"] == "1300000000000000001"
        assert message["id"].isdigit()
        (received,) = clean_standin.requests(kind="discord")
        assert received["query"] == "wait=true&thread_id=1300000000000000001"

    async def test_a_forum_channel_takes_a_new_post_with_its_tags(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        params = DiscordMessageParams.model_validate(
            {
                "content": "Order 42 paid",
                "thread_name": "Order 42",
                "applied_tags": ["1300000000000000002"],
                "flags": 4100,
                "wait": True,
            }
        )
        forum = make_ctx(http_client, clean_standin, "forum-token")
        output = await connector.run(forum, params)
        assert output["status_code"] == 200
        (received,) = clean_standin.requests(kind="discord")
        assert received["body"] == {
            "content": "Order 42 paid",
            "thread_name": "Order 42",
            "applied_tags": ["1300000000000000002"],
            "flags": 4100,
        }
        assert received["query"] == "wait=true"

    async def test_a_forum_channel_refuses_a_message_without_a_thread(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        forum = make_ctx(http_client, clean_standin, "forum-token")
        error = await run_error(forum, content="x")
        assert (error.retryable, error.status_code) == (False, 400)
        assert error.remote_error == (
            "Webhooks posted to forum channels must have a thread_name or thread_id"
        )

    async def test_empty_message_is_final(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        # Discord trims content, so whitespace passes our params but not Discord.
        error = await run_error(make_ctx(http_client, clean_standin), content="   ")
        assert error.retryable is False
        assert error.status_code == 400
        assert error.remote_error == "Cannot send an empty message"

    async def test_a_username_discord_refuses_is_final(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        # A template can render one; the stand-in answers as Discord does.
        params = DiscordMessageParams.model_construct(content="x", username="Discord bot")
        with pytest.raises(ConnectorError) as info:
            await connector.run(make_ctx(http_client, clean_standin), params)
        assert (info.value.retryable, info.value.status_code) == (False, 400)
        assert info.value.remote_error == (
            'Invalid Form Body {"username":{"_errors":[{"code":"USERNAME_INVALID_CONTAINS",'
            '"message":"Username cannot contain \\"discord\\""}]}}'
        )

    async def test_unknown_webhook_is_final(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        error = await run_error(make_ctx(http_client, clean_standin, "unknown-token"), content="x")
        assert (error.retryable, error.status_code) == (False, 404)
        assert error.remote_error == "Unknown Webhook"

    async def test_rate_limited_is_retryable(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        error = await run_error(make_ctx(http_client, clean_standin, "ratelimited"), content="x")
        assert (error.retryable, error.status_code) == (True, 429)
        assert error.remote_error == "You are being rate limited."
        # Discord's JSON ``retry_after`` (1.5) is more precise than its header (2).
        assert error.retry_after_s == 1.5

    async def test_server_error_is_retryable(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        error = await run_error(make_ctx(http_client, clean_standin, "error500"), content="x")
        assert (error.retryable, error.status_code) == (True, 500)


class TestParse:
    def test_field_errors_are_kept(self) -> None:
        request = httpx.Request("POST", "https://discord.com/api/webhooks/1/t")
        body = {
            "code": 50035,
            "errors": {"embeds": {"0": {"url": {"_errors": [{"code": "URL_TYPE_INVALID_URL"}]}}}},
            "message": "Invalid Form Body",
        }
        with pytest.raises(ConnectorError) as info:
            connector.parse(httpx.Response(400, json=body, request=request))
        assert info.value.remote_error is not None
        assert info.value.remote_error.startswith("Invalid Form Body {")
        assert "URL_TYPE_INVALID_URL" in info.value.remote_error
