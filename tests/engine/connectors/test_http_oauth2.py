"""``http`` credentials with OAuth 2.0's client credentials grant, against the stand-in's
token endpoint and a resource server that takes only its live tokens
(``tests.standins.oauth``)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any
from urllib.parse import parse_qs

import pytest

from ipaas.engine.connectors import ConnectorError, StepContext
from ipaas.engine.connectors.http_request import HttpRequest, HttpRequestParams
from ipaas.engine.connectors.oauth2 import (
    DEFAULT_LIFETIME_S,
    TOKEN_ERROR,
    TokenCache,
    _lifetime,
)
from ipaas.kit.egress import EgressPolicy
from ipaas.kit.http import HttpClient
from tests.standins.oauth import CLIENT_ID, CLIENT_SECRET
from tests.standins.server import StandinServer

connector = HttpRequest()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def oauth_secret(standin: StandinServer, **oauth2: Any) -> dict[str, Any]:
    grant = {"token_url": f"{standin.url}/oauth/token", "client_id": CLIENT_ID}
    grant["client_secret"] = CLIENT_SECRET
    return {"base_url": f"{standin.url}/oauth/api", "oauth2": {**grant, **oauth2}}


def ctx_for(http: HttpClient, secret: dict[str, Any], tokens: TokenCache) -> StepContext:
    return StepContext(http=http, secret=secret, tokens=tokens)


def get(path: str = "orders") -> HttpRequestParams:
    return HttpRequestParams.model_validate({"path": path})


def token_requests(standin: StandinServer) -> list[dict[str, Any]]:
    return standin.requests(kind="oauth_token")


def api_statuses(standin: StandinServer) -> list[int]:
    return [r["status"] for r in standin.requests(kind="oauth_api")]


def steer(standin: StandinServer, **spec: Any) -> None:
    import httpx

    httpx.post(f"{standin.url}/_standin/oauth", json=spec).raise_for_status()


async def failure(ctx: StepContext) -> ConnectorError:
    with pytest.raises(ConnectorError) as caught:
        await connector.run(ctx, get())
    return caught.value


class TestToken:
    async def test_asked_once_with_basic_auth_then_sent_as_bearer_and_masked(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        secret = oauth_secret(clean_standin, scope="orders:read", audience="https://api")
        tokens = TokenCache()
        first = await connector.run(ctx_for(http_client, secret, tokens), get())
        second = await connector.run(ctx_for(http_client, secret, tokens), get())

        (asked,) = token_requests(clean_standin)
        form = parse_qs(asked["body"]) if isinstance(asked["body"], str) else {}
        assert form == {
            "grant_type": ["client_credentials"],
            "scope": ["orders:read"],
            "audience": ["https://api"],
        }
        # RFC 6749, 2.3.1: id and secret form-urlencoded, then joined and encoded.
        basic = asked["headers"]["authorization"].removeprefix("Basic ")
        assert base64.b64decode(basic).decode() == "standin-client:standin+secret%2B1"
        assert asked["headers"]["accept"] == "application/json"
        assert api_statuses(clean_standin) == [200, 200]
        sent = [r["headers"]["authorization"] for r in clean_standin.requests(kind="oauth_api")]
        assert sent[0] == sent[1]
        assert sent[0].startswith("Bearer tok-")
        # The API echoes the request's headers: the token is masked in the step's output.
        for output in (first, second):
            assert output["status_code"] == 200
            assert output["body"]["headers"]["authorization"] == "***"
            assert sent[0].removeprefix("Bearer ") not in repr(output)

    async def test_client_secret_in_the_body(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        secret = oauth_secret(clean_standin, client_auth="body")
        await connector.run(ctx_for(http_client, secret, TokenCache()), get())
        (asked,) = token_requests(clean_standin)
        assert "authorization" not in asked["headers"]
        assert parse_qs(asked["body"]) == {
            "grant_type": ["client_credentials"],
            "client_id": [CLIENT_ID],
            "client_secret": [CLIENT_SECRET],
        }

    async def test_steps_at_once_make_one_token_request(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        secret, tokens = oauth_secret(clean_standin), TokenCache()
        await asyncio.gather(
            *(connector.run(ctx_for(http_client, secret, tokens), get()) for _ in range(20))
        )
        assert len(token_requests(clean_standin)) == 1
        assert api_statuses(clean_standin) == [200] * 20

    async def test_renewed_before_it_expires(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        steer(clean_standin, expires_in=100)
        clock = Clock()
        secret, tokens = oauth_secret(clean_standin), TokenCache(clock=clock)
        await connector.run(ctx_for(http_client, secret, tokens), get())
        clock.now += 49  # renewed at half of a short lifetime: 50 s in
        await connector.run(ctx_for(http_client, secret, tokens), get())
        assert len(token_requests(clean_standin)) == 1
        clock.now += 2
        await connector.run(ctx_for(http_client, secret, tokens), get())
        assert len(token_requests(clean_standin)) == 2

    async def test_a_new_secret_asks_for_a_new_token(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        tokens = TokenCache()
        await connector.run(ctx_for(http_client, oauth_secret(clean_standin), tokens), get())
        rotated = oauth_secret(clean_standin, scope="orders:write")
        await connector.run(ctx_for(http_client, rotated, tokens), get())
        assert len(token_requests(clean_standin)) == 2


class TestRefused:
    async def test_a_cached_token_refused_with_401_is_renewed_once(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        secret, tokens = oauth_secret(clean_standin), TokenCache()
        await connector.run(ctx_for(http_client, secret, tokens), get())
        steer(clean_standin, revoke=True)
        output = await connector.run(ctx_for(http_client, secret, tokens), get())
        assert output["status_code"] == 200
        assert len(token_requests(clean_standin)) == 2
        assert api_statuses(clean_standin) == [200, 401, 200]

    async def test_a_new_token_refused_with_401_fails_the_step_without_showing_it(
        self,
        http_client: HttpClient,
        clean_standin: StandinServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        secret, tokens = oauth_secret(clean_standin), TokenCache()
        await connector.run(ctx_for(http_client, secret, tokens), get())
        steer(clean_standin, revoke=True)
        # From now on the tokens given are not the ones the API takes: the cached one is
        # refused, then the new one, and the step fails there.
        issue = clean_standin.state.oauth_issue
        monkeypatch.setattr(
            clean_standin.state, "oauth_issue", lambda value: issue(f"{value}-other")
        )
        error = await failure(ctx_for(http_client, secret, tokens))
        assert (error.status_code, error.retryable) == (401, False)
        assert len(token_requests(clean_standin)) == 2
        assert api_statuses(clean_standin) == [200, 401, 401]
        # The API named the token it refused: scrubbed from what the step records.
        sent = [r["headers"]["authorization"] for r in clean_standin.requests(kind="oauth_api")]
        for header in sent:
            token = header.removeprefix("Bearer ")
            assert token not in (error.remote_error or "")
            assert token not in error.message
        assert "not a live token: ***" in (error.remote_error or "")

    async def test_a_wrong_client_secret_fails_with_the_endpoints_words(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        secret = oauth_secret(clean_standin, client_secret="not the secret")
        error = await failure(ctx_for(http_client, secret, TokenCache()))
        assert (error.code, error.status_code, error.retryable) == (TOKEN_ERROR, 401, False)
        assert "invalid_client" in (error.remote_error or "")
        assert "token endpoint answered HTTP 401" in error.message
        assert api_statuses(clean_standin) == []

    async def test_a_scope_not_granted_is_final(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        secret = oauth_secret(clean_standin, scope="forbidden")
        error = await failure(ctx_for(http_client, secret, TokenCache()))
        assert (error.code, error.status_code, error.retryable) == (TOKEN_ERROR, 400, False)
        assert "invalid_scope" in (error.remote_error or "")

    async def test_an_endpoint_that_is_down_may_pass(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        clean_standin.add_fault("/oauth/token", status=503, retry_after=7)
        tokens = TokenCache()
        error = await failure(ctx_for(http_client, oauth_secret(clean_standin), tokens))
        assert (error.code, error.status_code, error.retryable) == (TOKEN_ERROR, 503, True)
        assert error.retry_after_s == 7
        # Nothing was cached from the failure: the next try asks again, and gets one.
        await connector.run(ctx_for(http_client, oauth_secret(clean_standin), tokens), get())
        assert [r["status"] for r in token_requests(clean_standin)] == [503, 200]

    async def test_an_answer_without_a_token_is_final(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        # A token_url that is not a token endpoint: the echo answers 200 with JSON.
        secret = oauth_secret(clean_standin, token_url=f"{clean_standin.url}/echo/token")
        error = await failure(ctx_for(http_client, secret, TokenCache()))
        assert (error.code, error.retryable) == (TOKEN_ERROR, False)
        assert "holds no access_token" in error.message

    async def test_a_token_endpoint_the_egress_policy_refuses_is_not_called(
        self, clean_standin: StandinServer
    ) -> None:
        guarded = HttpClient(timeout_s=5.0, egress=EgressPolicy())  # loopback refused
        try:
            error = await failure(ctx_for(guarded, oauth_secret(clean_standin), TokenCache()))
        finally:
            await guarded.aclose()
        assert error.retryable is False
        assert error.code == "egress_refused"
        assert token_requests(clean_standin) == []


@pytest.mark.parametrize(
    ("expires_in", "seconds"),
    [
        (3599, 3599.0),
        ("3599", 3599.0),  # as Azure AD's v1 endpoint sends it
        (None, DEFAULT_LIFETIME_S),
        (0, DEFAULT_LIFETIME_S),
        (-5, DEFAULT_LIFETIME_S),
        (True, DEFAULT_LIFETIME_S),
        ("soon", DEFAULT_LIFETIME_S),
        (float("nan"), DEFAULT_LIFETIME_S),
    ],
)
def test_lifetime(expires_in: Any, seconds: float) -> None:
    assert _lifetime(expires_in) == seconds


def test_a_grant_never_shows_its_secret(clean_standin: StandinServer) -> None:
    from ipaas.engine.connectors.oauth2 import Grant

    grant = Grant.of(oauth_secret(clean_standin))
    assert grant is not None
    assert CLIENT_SECRET not in repr(grant)


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ({"access_token": "tok\r\nX-Injected: 1", "token_type": "Bearer"}, "one line of ASCII"),
        ({"access_token": "tök-123456", "token_type": "Bearer"}, "one line of ASCII"),
        ({"access_token": "tok 123456", "token_type": "Bearer"}, "without spaces"),
        ({"access_token": "tok-123456", "token_type": "mac"}, "of type 'mac', not Bearer"),
        ({"token_type": "Bearer"}, "holds no access_token"),
        ({"access_token": 123456, "token_type": "Bearer"}, "holds no access_token"),
    ],
)
async def test_a_token_that_cannot_be_sent_is_final(
    http_client: HttpClient, clean_standin: StandinServer, answer: dict[str, Any], says: str
) -> None:
    steer(clean_standin, answer=answer)
    error = await failure(ctx_for(http_client, oauth_secret(clean_standin), TokenCache()))
    assert (error.code, error.retryable) == (TOKEN_ERROR, False)
    assert says in error.message
    assert "X-Injected" not in error.message
    assert api_statuses(clean_standin) == []
