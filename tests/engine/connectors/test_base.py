"""Helpers every connector shares."""

from __future__ import annotations

import httpx
import pytest

from ipaas.engine.connectors.base import response_text


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
