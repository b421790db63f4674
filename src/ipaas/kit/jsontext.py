"""JSON in: only what every store and every response can hold again.

Python's ``json.loads`` takes more than RFC 8259 allows, and what it let through went wrong
later: ``NaN`` and ``Infinity`` are not JSON, and were stored as ``null`` without a word; a
lone surrogate (``"\\ud800"``) cannot be encoded as UTF-8, so writing the execution failed
(a 500 after the body was read); an array nested a few thousand levels deep overflowed the
parser's stack (a 500).

``loads`` parses with pydantic-core (jiter), the parser the SQL stores read their JSON
columns with, so what is accepted here reads back the same: it refuses ``NaN``/``Infinity``,
lone surrogates, invalid UTF-8 and more than ``MAX_DEPTH`` levels of nesting, and keeps large
integers exact. A number literal too large for a double (``1e999``) still reads as infinity,
which the stores write as ``null``, as before: finding one would take a pass over every
number, which cost more than the parse itself (docs/benchmarks.md). ``loads`` is also
faster than ``json.loads`` (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any

import pydantic_core

#: jiter's own limit: arrays and objects nested deeper are refused (it counts one level
#: more for an array than for an object).
MAX_DEPTH = 200


class JsonError(ValueError):
    """Not JSON that can be stored and sent back; the message says why, for a 422."""


def loads(data: bytes | str) -> Any:
    """Parse ``data`` as strict JSON (RFC 8259); ``JsonError`` if it is not."""
    try:
        return pydantic_core.from_json(data, allow_inf_nan=False)
    except ValueError as exc:
        message = str(exc)
        if message.startswith("recursion limit exceeded"):
            message = f"nested more than {MAX_DEPTH} levels deep ({message})"
        raise JsonError(message) from exc
