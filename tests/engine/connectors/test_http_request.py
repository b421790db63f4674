from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pydantic import ValidationError

from ipaas.engine.connectors import REGISTRY, ConnectorError, StepContext
from ipaas.engine.connectors.http_request import HttpRequest, HttpRequestParams
from ipaas.kit.http import MAX_JSON_BYTES, MAX_RESPONSE_BYTES, HttpClient
from tests.standins.server import StandinServer

connector = HttpRequest()


def make_ctx(http: HttpClient, secret: dict[str, Any] | None = None, **kw: Any) -> StepContext:
    return StepContext(http=http, secret=secret, **kw)


def params(**config: Any) -> HttpRequestParams:
    return HttpRequestParams.model_validate(config)


async def run_error(ctx: StepContext, **config: Any) -> ConnectorError:
    with pytest.raises(ConnectorError) as info:
        await connector.run(ctx, params(**config))
    return info.value


def test_registered() -> None:
    assert isinstance(REGISTRY["http_request"], HttpRequest)
    assert HttpRequest.credential_type == "http"
    assert HttpRequest.credential_optional is True


class TestParams:
    def test_defaults(self) -> None:
        p = params(url="https://api.example.com/orders")
        assert (p.method, p.json_, p.expected_status) == ("GET", None, None)

    def test_method_is_case_insensitive(self) -> None:
        assert params(method="post", url="https://x.example").method == "POST"

    def test_json_key(self) -> None:
        assert params(url="https://x.example", json={"a": [1, 2]}).json_ == {"a": [1, 2]}

    def test_rendered_numbers_in_headers_are_text(self) -> None:
        assert params(url="https://x.example", headers={"X-Count": 3}).headers == {"X-Count": "3"}

    def test_rendered_status_codes_are_coerced(self) -> None:
        assert params(url="https://x.example", expected_status=["200", 404]).expected_status == [
            200,
            404,
        ]

    @pytest.mark.parametrize(
        ("config", "message"),
        [
            ({"method": "FETCH", "url": "https://x.example"}, "'GET', 'POST'"),
            ({}, "give exactly one of url or path"),
            ({"url": "https://x.example", "path": "/a"}, "give exactly one of url or path"),
            ({"url": "ftp://x.example/file"}, "scheme must be http or https, not 'ftp'"),
            ({"url": "file:///etc/passwd"}, "scheme must be http or https, not 'file'"),
            ({"url": "/relative/path"}, "url must be absolute"),
            ({"url": "http://"}, "url has no host"),
            ({"path": "https://evil.example/x"}, "give a full URL as url"),
            (
                {"url": "https://x.example", "json": {}, "form": {"a": "1"}},
                "not json and form",
            ),
            ({"url": "https://x.example", "body": "x", "form": {"a": "1"}}, "at most one body"),
            ({"url": "https://x.example", "content_type": "text/csv"}, "applies to a raw body"),
            ({"url": "https://x.example", "expected_status": [700]}, "less than or equal to 599"),
            ({"url": "https://x.example", "expected_status": []}, "at least 1 item"),
            ({"url": "https://x.example", "timeout": 3}, "Extra inputs are not permitted"),
            # A line break would start another header: refused here, so a dry run in simulate
            # mode fails as the HTTP client would refuse to send it in a real run.
            (
                {"url": "https://x.example", "headers": {"X-A": "ok\r\nEvil: 1"}},
                "header 'X-A' contains a line break or NUL",
            ),
            ({"url": "https://x.example", "headers": {"X-A\n": "ok"}}, "contains a line break"),
            ({"url": "https://x.example", "headers": {"X-A": "a\x00b"}}, "or NUL"),
            # httpx sends headers as ASCII: refused here with a hint, not a codec error per call.
            (
                {"url": "https://x.example", "headers": {"X-A": "café ☃"}},
                r"header 'X-A' is not ASCII text; percent-encode other characters",
            ),
            ({"url": "https://x.example", "headers": {"X-Ä": "a"}}, "header 'X-Ä' is not ASCII"),
            # aiohttp sends any name as given: one the server reads as another header, or
            # one it answers 400 to without saying why.
            (
                {"url": "https://x.example", "headers": {"Transfer-Encoding:chunked": "y"}},
                r"header name 'Transfer-Encoding:chunked' is not an HTTP field name \(letters",
            ),
            ({"url": "https://x.example", "headers": {"X V": "a"}}, "'X V' is not an HTTP field"),
            ({"url": "https://x.example", "headers": {"": "a"}}, "'' is not an HTTP field name"),
            # The client frames the body: Content-Length 5 sent 5 bytes of a 17-byte body.
            (
                {"url": "https://x.example", "headers": {"Content-Length": "5"}},
                "header 'Content-Length' is set by the HTTP client from the body",
            ),
            ({"url": "https://x.example", "headers": {"transfer-encoding": "chunked"}}, "set by"),
            ({"url": "https://x.example", "headers": {"Upgrade": "websocket"}}, "set by"),
            ({"url": "https://x.example", "headers": {"TE": "trailers"}}, "set by"),
            ({"url": "https://x.example", "headers": {"Trailer": "X-A"}}, "set by"),
        ],
    )
    def test_invalid(self, config: dict[str, Any], message: str) -> None:
        with pytest.raises(ValidationError, match=message):
            HttpRequestParams.model_validate(config)

    @pytest.mark.parametrize(
        ("config", "loc", "message"),
        [
            ({"query": {"z": None}}, ("query", "z"), "or a list of them, not null"),
            ({"query": {"o": {"a": 1}}}, ("query", "o"), "not an object"),
            ({"query": {"l": [1, None]}}, ("query", "l"), "not one holding null"),
            ({"query": {"l": [[1]]}}, ("query", "l"), "not one holding a list"),
            ({"form": {"a": [1, 2]}}, ("form", "a"), "a string, number or boolean, not a list"),
            ({"form": {"a": None}}, ("form", "a"), "not null"),
        ],
    )
    def test_a_query_or_form_value_that_cannot_be_sent_is_one_error(
        self, config: dict[str, Any], loc: tuple[str, str], message: str
    ) -> None:
        """Pydantic's union said it once for each type the value was not: four or five
        errors (``query.z.str``, ``query.z.int``, ...) for one ``null``."""
        with pytest.raises(ValidationError) as info:
            params(url="https://api.example.com/", **config)
        (error,) = info.value.errors()
        assert (error["loc"], error["type"]) == (loc, "scalar_type")
        assert message in error["msg"]

    def test_query_and_form_values_keep_their_types(self) -> None:
        query = {"s": "x", "n": 5, "f": 1.5, "b": True, "tags": ["a", 2, False]}
        p = params(url="https://api.example.com/", query=query, form={"n": 5, "b": False})
        assert p.query == query
        assert p.form == {"n": 5, "b": False}


class TestBuild:
    def test_get_with_query(self, http_client: HttpClient) -> None:
        request = connector.build(
            make_ctx(http_client),
            params(url="https://api.example.com/orders?page=2", query={"status": "open", "n": 5}),
        )
        assert request.method == "GET"
        assert str(request.url) == "https://api.example.com/orders?page=2&status=open&n=5"
        assert "content-type" not in request.headers
        assert request.content == b""

    def test_credential_headers_and_bearer(self, http_client: HttpClient) -> None:
        secret = {
            "base_url": "https://api.example.com/v1/",
            "headers": {"X-Tenant": "acme", "Accept": "text/plain"},
            "bearer_token": "tok-123456",
        }
        request = connector.build(
            make_ctx(http_client, secret),
            params(
                method="POST",
                path="/orders",
                headers={"accept": "application/json"},
                json={"id": 42, "note": "café"},
            ),
        )
        assert request.method == "POST"
        assert str(request.url) == "https://api.example.com/v1/orders"
        assert request.headers["authorization"] == "Bearer tok-123456"
        assert request.headers["x-tenant"] == "acme"
        # Step headers win over the credential's defaults.
        assert request.headers["accept"] == "application/json"
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.content) == {"id": 42, "note": "café"}

    def test_credential_query_is_added_and_a_step_parameter_replaces_one(
        self, http_client: HttpClient
    ) -> None:
        secret = {"base_url": "https://api.trello.example/1", "query": {"key": "k1", "token": "t1"}}
        request = connector.build(
            make_ctx(http_client, secret),
            params(path="/boards?fields=name", query={"token": "t2", "filter": "open"}),
        )
        assert str(request.url) == (
            "https://api.trello.example/1/boards?fields=name&key=k1&token=t2&filter=open"
        )

    def test_an_oauth2_credential_shows_a_masked_bearer_until_sent(
        self, http_client: HttpClient
    ) -> None:
        # The token is asked for when the call is made (run), never for a request only built.
        oauth2 = {"token_url": "https://login.example/token", "client_id": "c"}
        secret = {"oauth2": {**oauth2, "client_secret": "s"}}
        request = connector.build(make_ctx(http_client, secret), params(url="https://x.example"))
        assert request.headers["authorization"] == "Bearer ***"

    def test_a_stored_header_that_is_not_ascii_fails_naming_it(
        self, http_client: HttpClient
    ) -> None:
        # A credential stored before its headers were checked: the step fails naming the
        # header, without its value (the codec's own error holds the whole value).
        secret = {"headers": {"X-Key": "SENTINEL-clé"}}
        with pytest.raises(ValueError, match=r"^header 'X-Key' is not ASCII text$") as caught:
            connector.build(make_ctx(http_client, secret), params(url="https://x.example"))
        assert caught.value.__cause__ is None
        assert caught.value.__context__ is None

    def test_a_stored_header_name_that_is_no_field_name_fails_naming_it(
        self, http_client: HttpClient
    ) -> None:
        secret = {"headers": {"X Key": "x"}}  # stored before the names were checked
        with pytest.raises(ValueError, match=r"^header name 'X Key' is not an HTTP field name"):
            connector.build(make_ctx(http_client, secret), params(url="https://x.example"))

    def test_a_stored_framing_header_fails_naming_it(self, http_client: HttpClient) -> None:
        secret = {"headers": {"Content-Length": "5"}}  # stored before it was refused
        with pytest.raises(ValueError, match=r"^header 'Content-Length' is set by the HTTP"):
            connector.build(
                make_ctx(http_client, secret),
                params(method="POST", url="https://x.example", json={"hello": "world"}),
            )

    def test_basic_auth_and_form(self, http_client: HttpClient) -> None:
        secret = {"basic": {"username": "ada", "password": "s3cret:x"}}
        request = connector.build(
            make_ctx(http_client, secret),
            params(method="put", url="https://x.example/form", form={"a": "1", "b": True}),
        )
        expected = base64.b64encode(b"ada:s3cret:x").decode()
        assert request.headers["authorization"] == f"Basic {expected}"
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        assert request.content == b"a=1&b=true"

    def test_raw_body(self, http_client: HttpClient) -> None:
        request = connector.build(
            make_ctx(http_client),
            params(
                method="POST", url="https://x.example", body="a,b\n1,2", content_type="text/csv"
            ),
        )
        assert request.headers["content-type"] == "text/csv"
        assert request.content == b"a,b\n1,2"

    def test_raw_body_default_content_type(self, http_client: HttpClient) -> None:
        request = connector.build(
            make_ctx(http_client), params(method="POST", url="https://x.example", body="hi")
        )
        assert request.headers["content-type"] == "text/plain; charset=utf-8"

    def test_path_needs_base_url(self, http_client: HttpClient) -> None:
        with pytest.raises(ConnectorError, match="needs a credential with a base_url") as info:
            connector.build(make_ctx(http_client, {"bearer_token": "t"}), params(path="/x"))
        assert info.value.retryable is False

    def test_bearer_and_basic_conflict(self, http_client: HttpClient) -> None:
        secret = {"bearer_token": "t", "basic": {"username": "u", "password": "p"}}
        with pytest.raises(ConnectorError, match="both bearer_token and basic"):
            connector.build(make_ctx(http_client, secret), params(url="https://x.example"))


class TestRun:
    async def test_json_round_trip(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        secret = {"base_url": clean_standin.url, "bearer_token": "tok-123456"}
        output = await connector.run(
            make_ctx(http_client, secret),
            params(method="POST", path="echo/orders", query={"dry": "1"}, json={"id": 42}),
        )
        assert output["status_code"] == 200
        assert output["headers"]["content-type"] == "application/json"
        echo = output["body"]
        assert echo["method"] == "POST"
        assert echo["path"] == "/echo/orders"
        assert echo["query"] == {"dry": "1"}
        assert echo["json"] == {"id": 42}
        assert echo["headers"]["authorization"] == "Bearer tok-123456"

    async def test_a_json_answer_over_a_mib_is_kept_as_cut_text(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        """Every output is stored with its execution: a whole 10 MB answer per run would
        fill the disk. Up to ``MAX_JSON_BYTES`` it is parsed (later steps address it)."""
        url = f"{clean_standin.url}/echo"
        fits = MAX_JSON_BYTES - 4096  # the rest of the echo is well under 4 KiB
        output = await connector.run(make_ctx(http_client), params(url=f"{url}?pad={fits}"))
        assert output["body"]["pad"] == "x" * fits
        assert "body_truncated" not in output

        too_big = MAX_JSON_BYTES + 1
        output = await connector.run(make_ctx(http_client), params(url=f"{url}?pad={too_big}"))
        assert isinstance(output["body"], str)
        assert len(output["body"].encode()) == MAX_RESPONSE_BYTES
        assert output["body"].startswith("{")
        assert output["body_truncated"] is True
        assert output["body_bytes"] > MAX_JSON_BYTES

    async def test_form(self, http_client: HttpClient, clean_standin: StandinServer) -> None:
        output = await connector.run(
            make_ctx(http_client),
            params(method="PATCH", url=f"{clean_standin.url}/echo", form={"a": "1", "b": "x y"}),
        )
        assert output["body"]["form"] == {"a": "1", "b": "x y"}
        (received,) = clean_standin.requests(kind="echo")
        assert received["method"] == "PATCH"

    async def test_text_response(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        output = await connector.run(
            make_ctx(http_client),
            params(
                method="POST",
                url=clean_standin.slack_webhook_url(),
                body='{"text": "raw"}',
                content_type="application/json",
            ),
        )
        assert output["body"] == "ok"
        assert clean_standin.requests(kind="slack_webhook")[0]["body"] == {"text": "raw"}

    async def test_head(self, http_client: HttpClient, clean_standin: StandinServer) -> None:
        output = await connector.run(
            make_ctx(http_client), params(method="HEAD", url=f"{clean_standin.url}/echo")
        )
        assert (output["status_code"], output["body"]) == (200, "")
        assert output["headers"]["x-echo-method"] == "HEAD"

    async def test_expected_status(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        output = await connector.run(
            make_ctx(http_client),
            params(url=f"{clean_standin.url}/echo?standin_status=404", expected_status=[200, 404]),
        )
        assert output["status_code"] == 404

    async def test_unexpected_2xx_fails(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        error = await run_error(
            make_ctx(http_client), url=f"{clean_standin.url}/echo", expected_status=[201]
        )
        assert error.retryable is False
        assert error.status_code == 200
        assert "expected 201" in error.message

    async def test_client_error_is_final(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        error = await run_error(make_ctx(http_client), url=f"{clean_standin.url}/nowhere")
        assert (error.retryable, error.status_code) == (False, 404)
        assert error.remote_error == "Not Found"
        assert "GET answered HTTP 404 (expected 2xx)" in error.message

    async def test_remote_error_is_the_body(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        error = await run_error(
            make_ctx(http_client), url=f"{clean_standin.url}/echo?standin_status=422"
        )
        assert error.status_code == 422
        assert error.remote_error is not None
        assert json.loads(error.remote_error)["query"] == {"standin_status": "422"}

    @pytest.mark.parametrize(("status", "retry_after"), [(429, 2.0), (503, 1.0)])
    async def test_rate_limit_and_server_errors_are_retryable(
        self,
        http_client: HttpClient,
        clean_standin: StandinServer,
        status: int,
        retry_after: float,
    ) -> None:
        clean_standin.add_fault("/echo", status=status, retry_after=2 if status == 429 else None)
        error = await run_error(
            make_ctx(http_client), method="DELETE", url=f"{clean_standin.url}/echo"
        )
        assert (error.retryable, error.status_code, error.retry_after_s) == (
            True,
            status,
            retry_after,
        )

    async def test_timeout_is_retryable_and_disconnects(
        self, http_client: HttpClient, clean_standin: StandinServer
    ) -> None:
        ctx = make_ctx(http_client, timeout_s=0.3)
        error = await run_error(ctx, url=f"{clean_standin.url}/slow?seconds=30&id=timeout-test")
        assert error.retryable is True
        assert "timed out" in error.message
        await clean_standin.wait_until(
            lambda: (
                (clean_standin.state.slow_call("timeout-test") or {}).get("outcome")
                == "disconnected"
            ),
            what="the stand-in seeing the client leave",
        )
