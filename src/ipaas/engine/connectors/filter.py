"""A filter step: the execution goes on only when its condition holds (Zapier's Filter,
n8n's IF with one branch). It calls nothing.

The condition is usually one expression, ``{{ trigger.body.action == "opened" }}``, which
renders to its value. It must come out as a boolean: ``true``/``false`` as a form or query
string sends them count too, and ``null`` (a payload field that is missing) is false. Any
other value is an error of the step, not a guess at what the user meant: Python would take
the text ``"no"`` or a list as true.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from ipaas.engine.connectors.base import Connector, Params, StepContext

_TEXT = {"true": True, "false": False}


def as_condition(value: Any) -> bool:
    """A rendered condition as a boolean (a filter's, a step's ``when``): ``true``/``false``,
    as such or as text, and ``null`` as false; anything else is a ``ValueError``."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TEXT:
        return _TEXT[value.strip().lower()]
    shown = repr(value) if len(repr(value)) <= 80 else f"a {type(value).__name__}"
    msg = f"the condition must be true or false, not {shown}; compare it, e.g. x == 1"
    raise ValueError(msg)


class FilterParams(Params):
    #: Go on only when this is true (a missing value is false).
    condition: Any = Field(
        json_schema_extra={"description": 'e.g. {{ trigger.body.action == "opened" }}'}
    )

    @field_validator("condition")
    @classmethod
    def _boolean(cls, value: Any) -> bool:
        return as_condition(value)


class Filter(Connector):
    type = "filter"
    Params = FilterParams
    credential_type = None
    calls_out = False
    loops = False

    async def run(self, ctx: StepContext, params: FilterParams) -> Any:
        return {"passed": params.condition}

    def halts(self, output: Any) -> bool:
        return isinstance(output, dict) and output.get("passed") is False
