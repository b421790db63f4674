"""Helpers every connector shares."""

from __future__ import annotations

import httpx
import pytest

from ipaas.engine.connectors.base import body_cut, response_body, response_text
from ipaas.kit.http import MAX_JSON_BYTES, MAX_RESPONSE_BYTES


@pytest.mark.parametrize(
    ("content_type", "body", "text"),
    [
        ("text/plain", "héllo".encode(), "héllo"),
        ("text/plain; charset=iso-8859-1", "héllo".encode("latin-1"), "héllo"),
        ('text/plain; Charset="ISO-8859-1"', "héllo".encode("latin-1"), "héllo"),
        ("text/plain; charset=no-such-charset", "héllo".encode(), "héllo"),
        ("", b"\xff ok", "\ufffd ok"),
    ],
)
def test_response_text_decodes_by_the_declared_charset(
    content_type: str, body: bytes, text: str
) -> None:
    response = httpx.Response(200, headers={"content-type": content_type}, content=body)
    assert response_text(response) == text


@pytest.mark.parametrize(
    ("content_type", "body", "parsed"),
    [
        (
            "application/json",
            b'{"ok": true, "id": 36893488147419103232}',
            {"ok": True, "id": 36893488147419103232},
        ),
        ("application/problem+json", b'{"title": "x"}', {"title": "x"}),
        # Not JSON a store can hold (the step's output is stored): kept as the text it was.
        ("application/json", b'{"temp": NaN}', '{"temp": NaN}'),
        ("application/json", b'{"name": "\\ud800"}', '{"name": "\\ud800"}'),
        ("application/json", b"not json", "not json"),
        ("text/plain", b'{"a": 1}', '{"a": 1}'),
    ],
)
def test_response_body_is_strict_json_or_text(
    content_type: str, body: bytes, parsed: object
) -> None:
    response = httpx.Response(200, headers={"content-type": content_type}, content=body)
    assert response_body(response) == parsed


def test_a_json_body_over_the_limit_is_cut_text() -> None:
    body = b'{"pad": "' + b"x" * MAX_JSON_BYTES + b'"}'
    response = httpx.Response(200, headers={"content-type": "application/json"}, content=body)
    text = response_body(response)
    assert text == body[:MAX_RESPONSE_BYTES].decode()
    assert body_cut(response, text) == {"body_truncated": True, "body_bytes": len(body)}
    small = httpx.Response(200, headers={"content-type": "application/json"}, content=b"[1]")
    assert body_cut(small, response_body(small)) == {}
