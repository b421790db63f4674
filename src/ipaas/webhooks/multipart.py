"""A ``multipart/form-data`` webhook body (RFC 7578) as the object a workflow sees.

Form senders that upload (Jotform, SendGrid's Inbound Parse, Mailgun's routes, an HTML form
with a file input) post this media type, and were refused with 415. The parts are read by
python-multipart (already installed for FastAPI's forms: the parser Starlette uses), from
the body the intake has already read whole and held to ``IPAAS_MAX_BODY_BYTES``.

A text field is its value, a file part an object (``filename``, ``content_type``, ``size``
and the bytes as ``content_base64``: a body is bytes, and a step that forwards a file, to
an API that takes base64 attachments say, needs them unchanged). A name sent more than once
is the list of its values, as in a urlencoded form (``webhooks/fields.py``). Text is decoded
by the part's own ``charset``, else the form's ``_charset_`` field (HTML's way of naming
it), else the ``charset`` of the body's Content-Type, else UTF-8; bytes not valid in it are
refused, as in a urlencoded form, not replaced with U+FFFD.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from ipaas.errors import UnsupportedMediaType, ValidationFailed
from ipaas.webhooks.fields import MAX_FIELDS, grouped

#: A file part with no Content-Type of its own (RFC 7578 4.4).
_OCTETS = "application/octet-stream"
#: Parts of one body, at most, as a urlencoded form's fields: a megabyte of one-byte fields
#: (~20,000 parts) took 200 ms of the event loop to read; a thousand take ~15.
MAX_PARTS = MAX_FIELDS


@dataclass(slots=True)
class _Part:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    name: str = ""
    filename: str | None = None
    content_type: str | None = None
    charset: str | None = None


class _Reader:
    """python-multipart's callbacks, collecting each part whole (the body is in memory)."""

    def __init__(self) -> None:
        self.parts: list[_Part] = []
        self.ended = False
        self._field = b""
        self._value = b""

    def part_begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise ValidationFailed(
                f"Form body has more than {MAX_PARTS} parts", code="invalid_form"
            )
        self.parts.append(_Part())

    def part_data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].data += data[start:end]

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        self.parts[-1].headers.append((self._field.lower(), self._value))
        self._field = self._value = b""

    def headers_finished(self) -> None:
        part = self.parts[-1]
        disposition = content_type = None
        for name, value in part.headers:
            if name == b"content-disposition":
                disposition = value
            elif name == b"content-type":
                content_type = value
        kind, options = parse_options_header(disposition)
        if disposition is None or kind != b"form-data" or b"name" not in options:
            msg = 'every part needs "Content-Disposition: form-data; name=..." (RFC 7578)'
            raise ValidationFailed(f"Form body is not valid multipart: {msg}", code="invalid_form")
        part.name = _text(options[b"name"])
        if b"filename" in options:
            part.filename = _text(options[b"filename"])
        if content_type is not None:
            _, params = parse_options_header(content_type)
            part.content_type = _text(content_type).strip()
            charset = params.get(b"charset")
            if charset and part.filename is None:
                part.charset = _text(charset).lower()

    def end(self) -> None:
        self.ended = True


def parse(body: bytes, content_type: str) -> dict[str, Any]:
    """The form's fields by name; a body that is not a whole ``multipart/form-data``
    message is a 422 ``invalid_form`` that says where it went wrong."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ValidationFailed(
            "multipart/form-data needs a boundary parameter in Content-Type",
            code="invalid_form",
        )
    reader = _Reader()
    callbacks = {
        "on_part_begin": reader.part_begin,
        "on_part_data": reader.part_data,
        "on_header_field": reader.header_field,
        "on_header_value": reader.header_value,
        "on_header_end": reader.header_end,
        "on_headers_finished": reader.headers_finished,
        "on_end": reader.end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise ValidationFailed(
            f"Form body is not valid multipart: {exc}", code="invalid_form"
        ) from exc
    if not reader.ended:
        raise ValidationFailed(
            "Form body is not valid multipart: it ends before its closing boundary",
            code="invalid_form",
        )
    fallback = _form_charset(reader.parts, params.get(b"charset"))
    return grouped((part.name, _value(part, fallback)) for part in reader.parts)


def _form_charset(parts: list[_Part], declared: bytes | None) -> str:
    """The charset of text parts that name none: the ``_charset_`` field's, else the body's
    Content-Type's, else UTF-8."""
    for part in parts:
        if part.name == "_charset_" and part.filename is None:
            return bytes(part.data).decode("ascii", "replace").strip().lower() or "utf-8"
    return _text(declared).lower() if declared else "utf-8"


def _value(part: _Part, fallback: str) -> str | dict[str, object]:
    data = bytes(part.data)
    if part.filename is not None:
        return {
            "filename": part.filename,
            "content_type": part.content_type or _OCTETS,
            "size": len(data),
            "content_base64": base64.b64encode(data).decode("ascii"),
        }
    charset = part.charset or fallback
    try:
        return data.decode(charset)
    except UnicodeDecodeError as exc:
        raise ValidationFailed(
            f"Form field {part.name!r} is not valid {charset}; declare its charset",
            code="invalid_form",
        ) from exc
    except LookupError as exc:  # no such codec, or not a text one (base64)
        raise UnsupportedMediaType(f"Unknown charset {charset!r}", code="unknown_charset") from exc


def _text(raw: bytes | None) -> str:
    """A header's bytes as text: UTF-8 when they are (RFC 7578 4.2 names files in UTF-8),
    else one character per byte."""
    if raw is None:
        return ""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
