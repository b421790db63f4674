"""Request bodies refuse fields they do not know.

Pydantic drops an unknown field by default, and with it whatever the caller meant by it.
Found by hand, each answered ``201`` or ``200``: ``"activ": false`` created an *active*
workflow; a webhook trigger's misspelled ``"auht"`` took unsigned webhooks; a dry run's
``"mod": "simulate"`` sent its messages; a token's ``expires_in_days`` made a token that
never expires. A model of what a request sends derives from ``Input`` instead: an unknown
field is a ``422`` naming it (``extra_forbidden`` at its location), and nothing is done.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

T = TypeVar("T")


class Input(BaseModel):
    """A request body, or a part of one: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


def _refuse_null(value: T) -> T:
    if value is None:
        raise PydanticCustomError(
            "null_not_allowed", "must not be null: leave the field out to keep its value"
        )
    return value


def _without_null(schema: dict[str, Any]) -> None:
    """The field's schema with ``null`` no longer among what it accepts."""
    schema.pop("default", None)
    choices = schema.get("anyOf")
    if choices is None:
        return
    choices = [choice for choice in choices if choice.get("type") != "null"]
    if len(choices) == 1:
        del schema["anyOf"]
        schema.update(choices[0])
    else:
        schema["anyOf"] = choices


#: A field of a partial update (``PATCH``): left out, what is stored stays. ``null`` is
#: refused (422 ``null_not_allowed`` at the field) rather than taken as left out: found by
#: hand, ``{"active": null}`` and ``{"name": null}`` answered 200 and changed nothing.
#: Written ``field: LeftOutKeeps[X] = None``; the schema shows ``X`` alone.
LeftOutKeeps = Annotated[
    T | None, BeforeValidator(_refuse_null), Field(json_schema_extra=_without_null)
]
