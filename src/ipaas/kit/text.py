"""Text every store can hold: PostgreSQL's text types cannot hold U+0000 (NUL).

Names sent to the API are refused with it, or with nothing but white space (``Name``, a 422
naming the field); text that comes from elsewhere and is only recorded, such as a remote
API's error, has it replaced by U+FFFD (``without_nul``), which the PostgreSQL store also
does to every string it sends, as a last guard (``stores/sql/engine.py``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError

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


#: White space as ECMA-262's ``\s`` has it, spelled out so that the schema's pattern and
#: the server's check (Python's ``re``, whose ``\s`` differs) refuse the same names.
_SPACE = "\\t\\n\\v\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
#: A name in an OpenAPI schema (ECMA-262), for clients and schemathesis: no NUL, and
#: something besides white space (a name of spaces was a blank link in the console's lists).
NAME_PATTERN = f"^[^\\u0000]*[^\\u0000{_SPACE}][^\\u0000]*$"
_NAME = re.compile(NAME_PATTERN)


def refuse_blank(value: str) -> str:
    """``value``, or ``ValueError`` when it holds nothing but white space (or NUL)."""
    if _NAME.match(value) is None:
        msg = "must hold something besides white space"
        raise ValueError(msg)
    return value


#: A name a user gives something (tenant, token, credential, workflow).
Name = Annotated[
    str,
    Field(min_length=1, max_length=200, json_schema_extra={"pattern": NAME_PATTERN}),
    AfterValidator(refuse_nul),
    AfterValidator(refuse_blank),
]


_NAME_ADAPTER: TypeAdapter[str] = TypeAdapter(Name)


def name_error(value: str) -> tuple[str, str] | None:
    """Why ``value`` is not a ``Name``, as pydantic's error type and message, or ``None``:
    for a name checked outside a model (a step's, ``ipaas token create --name``)."""
    try:
        _NAME_ADAPTER.validate_python(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        return error["type"], error["msg"].removeprefix("Value error, ")
    return None
