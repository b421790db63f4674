"""Text every store can hold: PostgreSQL's text types cannot hold U+0000 (NUL).

Names sent to the API are refused with it (``Name``, a 422 naming the field); text that
comes from elsewhere and is only recorded, such as a remote API's error, has it replaced by
U+FFFD (``without_nul``), which the PostgreSQL store also does to every string it sends, as
a last guard (``stores/sql/engine.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, Field

NUL = "\x00"
REPLACEMENT = "\ufffd"

T = TypeVar("T")


def without_nul(value: Any) -> Any:
    """``value`` with every U+0000 replaced by U+FFFD when it is a string holding one;
    anything else as it is (``None`` included)."""
    if isinstance(value, str) and NUL in value:
        return value.replace(NUL, REPLACEMENT)
    return value


def refuse_nul(value: T) -> T:
    """``value``, or ``ValueError`` when it is a string holding U+0000."""
    if isinstance(value, str) and NUL in value:
        msg = "must not contain the NUL character (U+0000)"
        raise ValueError(msg)
    return value


#: The same rule in an OpenAPI schema (ECMA-262), for clients and schemathesis.
NO_NUL_PATTERN = "^[^\\u0000]*$"
#: The schema of a ``Name`` (for a field that must not show ``null`` in it).
NAME_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NO_NUL_PATTERN}

#: A name a user gives something (tenant, token, credential, workflow).
Name = Annotated[
    str,
    Field(min_length=1, max_length=200, json_schema_extra={"pattern": NO_NUL_PATTERN}),
    AfterValidator(refuse_nul),
]
