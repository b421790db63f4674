"""Strict JSON in: what every store and response can hold again (``kit.jsontext``)."""

from __future__ import annotations

import json
from typing import Any

import pydantic_core
import pytest

from ipaas.kit import jsontext


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b'{"a": [1, 2.5, "x", null, true]}', {"a": [1, 2.5, "x", None, True]}),
        # Larger than 64 bits: exact, as json.loads keeps it (orjson would make a float).
        (b'{"id": 36893488147419103232}', {"id": 36893488147419103232}),
        (b'"\\ud83d\\ude00 h\\u00e9llo"', "\U0001f600 héllo"),  # a surrogate *pair* is fine
        ('{"€": "ü"}'.encode(), {"€": "ü"}),
        (b'{"a": 1e308, "b": 1e-999}', {"a": 1e308, "b": 0.0}),  # the largest double; underflow
        # Too large for a double: infinity, as json.loads read it (the stores write null).
        (b'{"a": 1e999}', {"a": float("inf")}),
        (b"[" * 200 + b"]" * 200, json.loads("[" * 200 + "]" * 200)),
        ('{"a": 1}', {"a": 1}),  # str as well as bytes
    ],
)
def test_what_it_reads(text: bytes | str, value: Any) -> None:
    parsed = jsontext.loads(text)
    assert parsed == value
    # ... and what the SQL stores write and read back (pydantic-core, both ways).
    assert pydantic_core.from_json(pydantic_core.to_json(parsed)) == value


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b'{"a": NaN}', "expected value"),
        (b'{"a": Infinity}', "expected value"),
        (b'{"a": -Infinity}', "invalid number"),
        (b'{"a": "\\ud800"}', "hex escape"),  # a lone high surrogate
        (b'{"a": "x\\udfff"}', "surrogate"),  # a lone low surrogate
        (b'"\xff"', "unicode"),  # not UTF-8
        (b"[" * 202 + b"]" * 202, "nested more than 200 levels deep"),
        (b'{"a":' * 201 + b"1" + b"}" * 201, "nested more than 200 levels deep"),
        (b"[" * 5000 + b"]" * 5000, "nested more than 200 levels deep"),  # was a RecursionError
        (b'{"a": 1} trailing', "trailing characters"),
        (b"{nope", "key must be a string"),
    ],
)
def test_what_it_refuses(text: bytes, reason: str) -> None:
    with pytest.raises(jsontext.JsonError, match=reason):
        jsontext.loads(text)
