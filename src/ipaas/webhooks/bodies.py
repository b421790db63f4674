"""A webhook's body, from the bytes that arrived to the value a workflow sees: its
``Content-Encoding`` undone, then JSON and forms parsed and text decoded by its charset.

Every body is taken whole or refused with a 4xx that says why; nothing is silently
replaced (a form's ``%E9`` under UTF-8 used to become U+FFFD)."""

from __future__ import annotations

import codecs
import zlib
from urllib.parse import parse_qsl

from ipaas.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from ipaas.kit import jsontext
from ipaas.webhooks import multipart
from ipaas.webhooks.fields import MAX_FIELDS, grouped

#: zlib's ``wbits`` for each coding undone: gzip's header and trailer, zlib's (RFC 1950,
#: HTTP's "deflate"), and raw deflate, which some senders send as "deflate" all the same.
_GZIP = 16 + zlib.MAX_WBITS
_ZLIB = zlib.MAX_WBITS
_RAW_DEFLATE = -zlib.MAX_WBITS
_CODINGS: dict[str, tuple[int, ...]] = {
    "gzip": (_GZIP,),
    "x-gzip": (_GZIP,),
    "deflate": (_ZLIB, _RAW_DEFLATE),
}
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
#: Fields of one urlencoded form, at most: a megabyte of empty fields (``a=&a=&...``,
#: 349,000 of them) took 457 ms of the event loop to read, and was stored whole.
MAX_FORM_FIELDS = MAX_FIELDS
_BOM = codecs.BOM_UTF8


def decode_content(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """``body`` as its sender wrote it: gzip and deflate undone (the last applied first),
    the result held to ``limit`` bytes like any body (413), so a small bomb cannot expand
    in memory. Any other coding is refused with 415."""
    if not content_encoding:
        return body
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    for coding in reversed(codings):
        if coding in ("", "identity"):
            continue
        wbits = _CODINGS.get(coding)
        if wbits is None:
            raise UnsupportedMediaType(
                f"Content-Encoding {coding!r} is not accepted; send gzip, deflate or none",
                code="unsupported_content_encoding",
            )
        body = _inflate(body, coding, wbits, limit)
    return body


def _inflate(body: bytes, coding: str, wbits: tuple[int, ...], limit: int) -> bytes:
    error: zlib.error | None = None
    for bits in wbits:
        try:
            return _inflate_members(body, coding, bits, limit)
        except zlib.error as exc:
            error = exc
    raise ValidationFailed(
        f"Body is not valid {coding}: {error}", code="invalid_content_encoding"
    ) from error


def _inflate_members(body: bytes, coding: str, bits: int, limit: int) -> bytes:
    """Every member of a gzip body (RFC 1952 allows several one after another, as
    ``cat a.gz b.gz`` makes; ``gzip.decompress`` reads them all too), or the one zlib or
    deflate stream; bytes after the last stream are refused, not dropped."""
    out = b""
    rest = body
    while True:
        inflater = zlib.decompressobj(bits)
        out += inflater.decompress(rest, limit + 1 - len(out))
        if len(out) > limit or inflater.unconsumed_tail:
            # Read whole, but the connection is closed as for any body over the cap: the
            # error carries it, so the fast path and the routed one answer alike.
            raise PayloadTooLarge(
                f"Body exceeds {limit} bytes once {coding} is undone",
                headers={"Connection": "close"},
            )
        if not inflater.eof:
            raise ValidationFailed(
                f"Body ends before its {coding} stream does", code="invalid_content_encoding"
            )
        rest = inflater.unused_data
        if not rest:
            return out
        if bits != _GZIP:
            raise ValidationFailed(
                f"Body has {len(rest)} bytes after the end of its {coding} stream",
                code="invalid_content_encoding",
            )


def parse_body(body: bytes, content_type: str | None) -> object:
    """JSON and form bodies (urlencoded, or ``multipart/form-data``: ``webhooks/multipart.py``)
    become objects (a form field sent more than once: the list of its values,
    ``webhooks/fields.py``); anything else is kept as text. A declared
    ``charset`` is honoured (JSON is UTF-8 by RFC 8259, whose leading BOM is skipped);
    bytes that are not valid in it are refused."""
    media, charset = _media_type(content_type)
    if not body:
        return None
    if media == "application/json" or media.endswith("+json"):
        if charset is not None and charset not in _UTF8:
            body = _decode(body, charset, "JSON").encode("utf-8")
        if body.startswith(_BOM):
            body = body[len(_BOM) :]
        try:
            return jsontext.loads(body)
        except jsontext.JsonError as exc:
            raise ValidationFailed(f"Body is not valid JSON: {exc}", code="invalid_json") from exc
    if media in ("", "application/x-www-form-urlencoded"):
        sniffed = _json_as_sent(body, charset)
        if sniffed is not _NOT_JSON:
            return sniffed
    if media == "application/x-www-form-urlencoded":
        charset = charset or "utf-8"
        try:
            text = body.decode(charset)
            pairs = parse_qsl(
                text,
                keep_blank_values=True,
                encoding=charset,
                errors="strict",
                max_num_fields=MAX_FORM_FIELDS,
            )
            return grouped(pairs)
        except UnicodeDecodeError as exc:
            raise ValidationFailed(
                f"Form body is not valid {charset}; declare its charset in Content-Type",
                code="invalid_form",
            ) from exc
        except LookupError as exc:
            raise _unknown_charset(charset) from exc
        except ValueError as exc:  # parse_qsl's count of fields, checked before parsing
            raise ValidationFailed(
                f"Form body has more than {MAX_FORM_FIELDS} fields", code="invalid_form"
            ) from exc
    if media == "multipart/form-data":
        return multipart.parse(body, content_type or "")
    if media.startswith("multipart/"):
        raise UnsupportedMediaType(
            f"{media} bodies are not accepted; send JSON, a form (urlencoded or "
            "multipart/form-data) or raw text"
        )
    return _decode(body, charset or "utf-8", "Raw")


#: ``_json_as_sent``'s answer for a body that is not a JSON object or list.
_NOT_JSON = object()


def _json_as_sent(body: bytes, charset: str | None) -> object:
    """A JSON object or list sent without a JSON media type: with none at all (some
    senders, scripts and devices send none), or as a form (``curl -d '{"a": 1}'`` labels
    its JSON ``application/x-www-form-urlencoded``, and a form parse made it the one field
    ``{"{\"a\": 1}": ""}``). Only a body that opens with ``{`` or ``[`` and parses whole
    is taken as JSON (a form's own ``{`` would be sent as ``%7B``); anything else is left
    to the media type's own reading."""
    if charset is not None and charset not in _UTF8:
        return _NOT_JSON
    text = body[len(_BOM) :] if body.startswith(_BOM) else body
    if text.lstrip()[:1] not in (b"{", b"["):
        return _NOT_JSON
    try:
        return jsontext.loads(text)
    except jsontext.JsonError:
        return _NOT_JSON


def _media_type(content_type: str | None) -> tuple[str, str | None]:
    """The media type, lower case, and the ``charset`` parameter if there is one."""
    if not content_type:
        return "", None
    media, sep, params = content_type.partition(";")
    charset = None
    if sep:
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset":
                charset = value.strip().strip('"').lower() or None
    return media.strip().lower(), charset


def _decode(body: bytes, charset: str, what: str) -> str:
    try:
        return body.decode(charset)
    except UnicodeDecodeError as exc:
        message = f"{what} bodies must be valid {charset}" + (
            "" if charset != "utf-8" else " text, or declare their charset in Content-Type"
        )
        raise UnsupportedMediaType(message) from exc
    except LookupError as exc:
        raise _unknown_charset(charset) from exc


def _unknown_charset(charset: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(f"Unknown charset {charset!r}", code="unknown_charset")
