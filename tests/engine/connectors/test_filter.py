"""The ``filter`` step: the execution goes on only when its condition holds."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from ipaas.engine.connectors import REGISTRY
from ipaas.engine.connectors.filter import Filter, FilterParams


def test_registered_without_a_credential_or_a_call() -> None:
    connector = REGISTRY["filter"]
    assert isinstance(connector, Filter)
    assert connector.credential_type is None
    assert connector.calls_out is False


@pytest.mark.parametrize(
    ("condition", "passed"),
    [
        (True, True),
        (False, False),
        # A payload field that is missing renders as null.
        (None, False),
        # As a form or a query string sends them.
        ("true", True),
        (" FALSE ", False),
    ],
)
async def test_the_condition_decides(condition: Any, passed: bool) -> None:
    params = FilterParams.model_validate({"condition": condition})
    assert params.condition is passed
    output = await Filter().run(None, params)  # type: ignore[arg-type]
    assert output == {"passed": passed}
    assert Filter().halts(output) is not passed


@pytest.mark.parametrize(
    ("condition", "says"),
    [
        # Python would take each of these as true, and the user may well mean false.
        ("no", "not 'no'"),
        ("opened", "not 'opened'"),
        (["opened"], "not ['opened']"),
        (1, "not 1"),
        ("x" * 200, "not a str"),
    ],
)
def test_anything_but_a_boolean_is_an_error(condition: Any, says: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(says)):
        FilterParams.model_validate({"condition": condition})


def test_the_condition_is_required() -> None:
    with pytest.raises(ValidationError, match="Field required"):
        FilterParams.model_validate({})
