"""Integer request fields read as JSON Schema reads them.

Pydantic's lax mode reads ``true`` as 1 and ``"120"`` as 120, which the OpenAPI schema
(``type: integer``) calls invalid: a token lifetime of ``true`` was a token that expired a
second later. Its strict mode refuses ``120.0``, which JSON Schema calls an integer. As a
``mode="before"`` field validator, ``json_int`` refuses bools and strings and leaves the
rest to the lax int (an int, or a float with no fractional part), the field's constraints
and its JSON schema unchanged. (Float fields use ``Field(strict=True)``: an int or a float,
not a bool or a string.)
"""

from __future__ import annotations

from typing import Any

from pydantic_core import PydanticCustomError

#: The largest integer every store holds in an INTEGER column (PostgreSQL's is 32 bits; a
#: larger operator limit was a traceback there).
MAX_INT32 = 2**31 - 1
#: Sustained rates a limit may set, per second: one a day to a million. A rate far below
#: the first made a window of 10**300 seconds for the rate limiter.
MIN_RATE_PER_S = 1 / 86_400
MAX_RATE_PER_S = 1_000_000.0


def json_int(value: Any) -> Any:
    if isinstance(value, bool | str):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


#: The longest a token may last: one made with ``expires_in_s``, or a sign-in's
#: (``IPAAS_TOKEN_TTL_S``).
MAX_TOKEN_TTL_S = 10 * 365 * 24 * 3600
