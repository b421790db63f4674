"""A webhook's query string, form fields and headers as a workflow sees them, every value
kept: ``trigger.query``, ``trigger.body`` for a form, ``trigger.headers``.

A name sent once maps to its value; a name sent more than once (``?tag=a&tag=b``, a form's
checkboxes) maps to the list of its values in the order they came, as n8n's webhook node
(Express's ``qs``) gives them. A header sent more than once is one line, its values joined
by ``", "`` (RFC 9110 5.3; ``Cookie`` by ``"; "``, RFC 9113 8.2.3). Before, the last value
of a repeated name replaced the others without a word.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar
from urllib.parse import unquote_to_bytes

from ipaas.errors import ValidationFailed

#: Fields of a query string, a urlencoded form or a multipart form, at most (Django's and
#: Starlette's limit): their size is capped, but a megabyte of empty form fields took 457 ms
#: of the event loop to read, and a 64 KiB query string of them 32 ms (docs/security.md).
MAX_FIELDS = 1000

#: Headers that describe the transport, not the event: not worth storing per execution.
HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})

Values = dict[str, str | list[str]]
V = TypeVar("V")


def grouped(pairs: Iterable[tuple[str, V]]) -> dict[str, V | list[V]]:
    """``pairs`` by name: a value for a name given once, a list for one given again."""
    out: dict[str, V | list[V]] = {}
    for name, value in pairs:
        held = out.get(name)
        if held is None:
            out[name] = value
        elif isinstance(held, list):
            held.append(value)
        else:
            out[name] = [held, value]
    return out


def query_values(query_string: bytes) -> Values:
    """The query string's fields (``application/x-www-form-urlencoded``, as senders write
    it): ``+`` is a space, and percent escapes are read as UTF-8. A name or value whose
    escapes are not UTF-8 (``%E9`` from a Latin-1 sender) is kept as sent, escapes and all,
    not replaced with U+FFFD: a query string cannot declare its charset, so refusing it
    would leave the sender no way through, and the text as sent loses nothing."""
    if not query_string:
        return {}
    if query_string.count(b"&") >= MAX_FIELDS:
        raise ValidationFailed(
            f"Query string has more than {MAX_FIELDS} fields", code="invalid_query"
        )
    pairs: list[tuple[str, str]] = []
    for field in query_string.split(b"&"):
        if not field:
            continue
        name, _, value = field.partition(b"=")
        pairs.append((_unquoted(name), _unquoted(value)))
    return grouped(pairs)


def _unquoted(raw: bytes) -> str:
    raw = raw.replace(b"+", b" ")
    if b"%" in raw:
        try:
            return unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            pass
    return _as_sent(raw)


def _as_sent(raw: bytes) -> str:
    """Bytes as they arrived: UTF-8 when they are, else one character per byte (Latin-1,
    as ASGI servers read header bytes)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def header_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers by (lower-case) name, transport headers left out; a repeated header's
    values joined as one line."""
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in HOP_HEADERS:
            continue
        held = out.get(name)
        if held is None:
            out[name] = value
        else:
            out[name] = f"{held}{'; ' if name == 'cookie' else ', '}{value}"
    return out
