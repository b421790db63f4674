"""A transform step: its output is its ``value``, rendered (n8n's Edit Fields, Zapier's
Formatter). It calls nothing.

Templates shape data once, for the steps after it to read as ``steps.<id>.output``: a total
computed from the payload's lines, a name joined from two fields, an object renamed to the
shape another API wants. With ``for_each`` it maps a list: each item's value, and later
steps see the list of them.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ipaas.engine.connectors.base import Connector, Params, StepContext


class TransformParams(Params):
    #: Any JSON: an object, a list, text, a number; templates anywhere inside.
    value: Any = Field(
        json_schema_extra={
            "description": 'e.g. {"total": "{{ trigger.body.lines | sum(attribute=\'qty\') }}"}'
        }
    )


class Transform(Connector):
    type = "transform"
    Params = TransformParams
    credential_type = None
    calls_out = False

    async def run(self, ctx: StepContext, params: TransformParams) -> Any:
        return params.value
