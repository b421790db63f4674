"""What a webhook's body becomes (webhooks/bodies.py): compressed bodies, charsets, a BOM;
each either taken whole or refused with a 4xx that says why, with nothing persisted."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import zlib
from typing import Any

import httpx
import pytest

from ipaas.api.app import create_app
from ipaas.runtime import Runtime
from tests.webhooks.conftest import NewWorkflow, executions_of
from tests.webhooks.test_signatures import credential

JSON = {"content-type": "application/json"}


async def post(
    client: httpx.AsyncClient, workflow_id: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return await client.post(f"/api/webhooks/{workflow_id}", content=body, headers=headers)


def stored_body(runtime: Runtime, workflow_id: str) -> Any:
    (execution,) = executions_of(runtime, workflow_id)
    return execution.trigger.body


class TestContentEncoding:
    @pytest.mark.parametrize(
        ("coding", "compress"),
        [
            ("gzip", gzip.compress),
            ("x-gzip", gzip.compress),
            ("deflate", zlib.compress),
            # Raw deflate (no zlib header), which some senders call "deflate" too.
            ("deflate", lambda b: zlib.compress(b, wbits=-zlib.MAX_WBITS)),
            ("identity", lambda b: b),
        ],
        ids=["gzip", "x-gzip", "deflate", "raw-deflate", "identity"],
    )
    async def test_compressed_bodies_are_undone(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        new_workflow: NewWorkflow,
        coding: str,
        compress: Any,
    ) -> None:
        workflow_id = await new_workflow()
        body = compress(b'{"order": {"id": 1042}}')
        response = await post(client, workflow_id, body, JSON | {"content-encoding": coding})
        assert response.status_code == 202, response.text
        assert stored_body(runtime, workflow_id) == {"order": {"id": 1042}}

    async def test_gzip_over_gzip_is_undone_in_order(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        workflow_id = await new_workflow()
        body = zlib.compress(gzip.compress(b"[1, 2]"))
        headers = JSON | {"content-encoding": "gzip, deflate"}
        assert (await post(client, workflow_id, body, headers)).status_code == 202
        assert stored_body(runtime, workflow_id) == [1, 2]

    @pytest.mark.parametrize(
        ("coding", "body", "status", "code"),
        [
            ("br", b"\x0b\x02\x80{}\x03", 415, "unsupported_content_encoding"),
            ("gzip", b'{"not": "compressed"}', 422, "invalid_content_encoding"),
            ("gzip", gzip.compress(b'{"a": 1}')[:-12], 422, "invalid_content_encoding"),
            # Bytes after the stream were dropped silently: the body taken was not all sent.
            ("gzip", gzip.compress(b'{"a": 1}') + b"trailing", 422, "invalid_content_encoding"),
            ("deflate", zlib.compress(b'{"a": 1}') + b"\x00", 422, "invalid_content_encoding"),
        ],
        ids=["brotli", "not-gzip", "cut-short", "gzip-then-bytes", "deflate-then-bytes"],
    )
    async def test_bad_encodings_are_refused(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        new_workflow: NewWorkflow,
        coding: str,
        body: bytes,
        status: int,
        code: str,
    ) -> None:
        workflow_id = await new_workflow()
        response = await post(client, workflow_id, body, JSON | {"content-encoding": coding})
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        assert executions_of(runtime, workflow_id) == []

    async def test_every_member_of_a_gzip_body_is_kept(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        """RFC 1952 allows members one after another (``cat a.gz b.gz``); only the first
        was kept, and the rest dropped without a word."""
        workflow_id = await new_workflow()
        body = gzip.compress(b'{"order": ') + gzip.compress(b'{"id": 1042}}')
        response = await post(client, workflow_id, body, JSON | {"content-encoding": "gzip"})
        assert response.status_code == 202, response.text
        assert stored_body(runtime, workflow_id) == {"order": {"id": 1042}}

    async def test_members_together_are_held_to_the_limit(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        workflow_id = await new_workflow()
        half = runtime.settings.max_body_bytes // 2 + 1
        body = gzip.compress(b" " * half) + gzip.compress(b" " * half)
        response = await post(client, workflow_id, body, JSON | {"content-encoding": "gzip"})
        assert response.status_code == 413, response.text
        assert executions_of(runtime, workflow_id) == []

    async def test_a_bomb_is_413_however_small_it_arrives(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        new_workflow: NewWorkflow,
    ) -> None:
        workflow_id = await new_workflow()
        limit = runtime.settings.max_body_bytes
        bomb = gzip.compress(b" " * (limit + 1))
        assert len(bomb) < limit // 100
        response = await post(client, workflow_id, bomb, JSON | {"content-encoding": "gzip"})
        assert response.status_code == 413, response.text
        assert "once gzip is undone" in response.json()["error"]["message"]
        assert response.headers["connection"] == "close"
        assert executions_of(runtime, workflow_id) == []

    async def test_a_bomb_closes_the_connection_on_the_routed_intake_too(
        self, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        # With CORS on, a request with an Origin takes the app's route, not the fast path;
        # before, only the fast path closed the connection after this 413.
        workflow_id = await new_workflow()
        runtime.settings.cors_origins = ["https://console.example.com"]
        app = create_app(runtime=runtime, workers=False)
        bomb = gzip.compress(b" " * (runtime.settings.max_body_bytes + 1))
        headers = JSON | {"content-encoding": "gzip", "origin": "https://console.example.com"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as routed:
            response = await post(routed, workflow_id, bomb, headers)
        assert response.status_code == 413, response.text
        assert response.headers["connection"] == "close"
        assert response.headers["access-control-allow-origin"] == "https://console.example.com"
        assert executions_of(runtime, workflow_id) == []

    async def test_the_signature_is_checked_over_the_uncompressed_body(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        runtime: Runtime,
        new_workflow: NewWorkflow,
    ) -> None:
        secret = "s3cret-for-hmac"
        cred = await credential(client, auth, {"secret": secret})
        workflow_id = await new_workflow(
            trigger={"type": "webhook", "auth": {"scheme": "hmac_sha256", "credential_id": cred}}
        )
        body = b'{"signed": true}'
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers = JSON | {"content-encoding": "gzip", "x-hub-signature-256": f"sha256={digest}"}
        response = await post(client, workflow_id, gzip.compress(body), headers)
        assert response.status_code == 202, response.text
        assert stored_body(runtime, workflow_id) == {"signed": True}


class TestJsonSentAsSomethingElse:
    """A JSON object or list sent with no Content-Type, or labelled a form (as ``curl -d``
    labels it), is read as JSON: it was kept as text, or made a form of one field named
    after the whole document."""

    @pytest.mark.parametrize(
        ("body", "headers", "stored"),
        [
            (b'{"order": {"id": 7}}', {}, {"order": {"id": 7}}),
            (b"  [1, 2]", {}, [1, 2]),
            (b'\xef\xbb\xbf{"a": 1}', {}, {"a": 1}),
            (b'{"order": 7}', {"content-type": "application/x-www-form-urlencoded"}, {"order": 7}),
            # What is not a JSON object or list is read as before.
            (b"42", {}, "42"),
            (b'{"broken": ', {}, '{"broken": '),
            (
                b"a=1&b=2",
                {"content-type": "application/x-www-form-urlencoded"},
                {"a": "1", "b": "2"},
            ),
            (
                b"{broken=1",
                {"content-type": "application/x-www-form-urlencoded"},
                {"{broken": "1"},
            ),
        ],
        ids=[
            "none-object",
            "none-list",
            "none-bom",
            "form-label",
            "none-number",
            "none-broken",
            "form",
            "form-brace",
        ],
    )
    async def test_read_as_what_it_is(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        new_workflow: NewWorkflow,
        body: bytes,
        headers: dict[str, str],
        stored: Any,
    ) -> None:
        workflow_id = await new_workflow()
        response = await post(client, workflow_id, body, headers)
        assert response.status_code == 202, response.text
        assert stored_body(runtime, workflow_id) == stored
        (execution,) = executions_of(runtime, workflow_id)
        assert execution.trigger.content_type == headers.get("content-type")


class TestCharsets:
    async def test_a_form_in_a_declared_charset(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        workflow_id = await new_workflow()
        headers = {"content-type": "application/x-www-form-urlencoded; charset=windows-1252"}
        response = await post(client, workflow_id, b"name=Ren%E9&sum=%8010", headers)
        assert response.status_code == 202, response.text
        assert stored_body(runtime, workflow_id) == {"name": "René", "sum": "€10"}

    async def test_a_form_that_is_not_utf8_is_422_not_replaced(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        # It used to be stored as {"name": "Ren\ufffd"}.
        workflow_id = await new_workflow()
        headers = {"content-type": "application/x-www-form-urlencoded"}
        response = await post(client, workflow_id, b"name=Ren%E9", headers)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_form"
        assert "declare its charset" in error["message"]
        assert executions_of(runtime, workflow_id) == []

    async def test_a_form_of_more_than_1000_fields_is_422(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        # A megabyte of empty fields took half a second of the event loop to read.
        workflow_id = await new_workflow()
        headers = {"content-type": "application/x-www-form-urlencoded"}
        fields = "&".join(f"f{n}=1" for n in range(1000)).encode()
        assert (await post(client, workflow_id, fields, headers)).status_code == 202
        response = await post(client, workflow_id, fields + b"&one=more", headers)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["code"], error["message"]) == (
            "invalid_form",
            "Form body has more than 1000 fields",
        )
        assert len(executions_of(runtime, workflow_id)) == 1

    async def test_json_with_a_bom_or_in_utf16(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        bom = await new_workflow()
        response = await post(client, bom, b'\xef\xbb\xbf{"a": "\xc3\xa9"}', JSON)
        assert response.status_code == 202, response.text
        assert stored_body(runtime, bom) == {"a": "é"}
        utf16 = await new_workflow()
        headers = {"content-type": 'application/json; charset="UTF-16"'}
        response = await post(client, utf16, '{"a": "é"}'.encode("utf-16"), headers)
        assert response.status_code == 202, response.text
        assert stored_body(runtime, utf16) == {"a": "é"}

    async def test_text_in_a_declared_charset(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        workflow_id = await new_workflow()
        headers = {"content-type": "text/plain; charset=iso-8859-1"}
        assert (await post(client, workflow_id, b"caf\xe9", headers)).status_code == 202
        assert stored_body(runtime, workflow_id) == "café"

    @pytest.mark.parametrize(
        "content_type",
        [
            "text/plain; charset=klingon",
            "application/json; charset=base64",  # a codec, but not a text encoding
            "application/x-www-form-urlencoded; charset=nope",
        ],
    )
    async def test_an_unknown_charset_is_415(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        new_workflow: NewWorkflow,
        content_type: str,
    ) -> None:
        workflow_id = await new_workflow()
        response = await post(client, workflow_id, b"a=1", {"content-type": content_type})
        assert response.status_code == 415, response.text
        assert response.json()["error"]["code"] == "unknown_charset"
        assert executions_of(runtime, workflow_id) == []


def multipart_body(*parts: tuple[str, bytes]) -> bytes:
    """A ``multipart/form-data`` body of ``parts`` (each its header lines and its data),
    with the boundary ``XX``, written out as senders write it."""
    out = b""
    for headers, data in parts:
        out += b"--XX\r\n" + headers.encode() + b"\r\n\r\n" + data + b"\r\n"
    return out + b"--XX--\r\n"


MULTIPART = {"content-type": "multipart/form-data; boundary=XX"}


def field(name: str, data: bytes, extra: str = "") -> tuple[str, bytes]:
    return f'Content-Disposition: form-data; name="{name}"{extra}', data


class TestMultipart:
    """``multipart/form-data`` (RFC 7578), which Jotform, SendGrid's Inbound Parse and HTML
    forms with a file post: it was refused with 415 before."""

    async def test_fields_and_files_become_an_object(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        workflow_id = await new_workflow()
        # As httpx (like curl -F) writes it: a file with its type, repeated fields.
        response = await client.post(
            f"/api/webhooks/{workflow_id}",
            data={"subject": "Résumé", "tag": ["a", "b"]},
            files={"report": ("état.csv", b"id,total\n1,9\xe9\n", "text/csv")},
        )
        assert response.status_code == 202, response.text
        assert stored_body(runtime, workflow_id) == {
            "subject": "Résumé",
            "tag": ["a", "b"],
            "report": {
                "filename": "état.csv",
                "content_type": "text/csv",
                "size": 14,
                # The bytes as sent, whatever they are (this file's are Latin-1).
                "content_base64": "aWQsdG90YWwKMSw56Qo=",
            },
        }

    async def test_a_file_without_a_type_and_an_empty_one(
        self, client: httpx.AsyncClient, runtime: Runtime, new_workflow: NewWorkflow
    ) -> None:
        workflow_id = await new_workflow()
        body = multipart_body(
            field("blob", b"\x00\xff", '; filename="a.bin"'),
            # What a browser sends for a file input left empty.
            field("none", b"", '; filename=""'),
        )
        assert (await post(client, workflow_id, body, MULTIPART)).status_code == 202
        assert stored_body(runtime, workflow_id) == {
            "blob": {
                "filename": "a.bin",
                "content_type": "application/octet-stream",
                "size": 2,
                "content_base64": "AP8=",
            },
            "none": {
                "filename": "",
                "content_type": "application/octet-stream",
                "size": 0,
                "content_base64": "",
            },
        }

    @pytest.mark.parametrize(
        ("body", "content_type", "expected"),
        [
            # The part's own charset.
            (
                multipart_body(
                    field("a", b"Ren\xe9 \x8010", "\r\nContent-Type: text/plain; charset=cp1252")
                ),
                MULTIPART["content-type"],
                {"a": "René €10"},
            ),
            # HTML's _charset_ field names the charset of the others.
            (
                multipart_body(field("_charset_", b"windows-1252"), field("a", b"Ren\xe9 \x8010")),
                MULTIPART["content-type"],
                {"_charset_": "windows-1252", "a": "René €10"},
            ),
            # The body's Content-Type.
            (
                multipart_body(field("a", b"Ren\xe9 \x8010")),
                MULTIPART["content-type"] + "; charset=windows-1252",
                {"a": "René €10"},
            ),
        ],
        ids=["part", "_charset_", "content-type"],
    )
    async def test_a_declared_charset_is_honoured(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        new_workflow: NewWorkflow,
        body: bytes,
        content_type: str,
        expected: dict[str, str],
    ) -> None:
        workflow_id = await new_workflow()
        response = await post(client, workflow_id, body, {"content-type": content_type})
        assert response.status_code == 202, response.text
        assert stored_body(runtime, workflow_id) == expected

    @pytest.mark.parametrize(
        ("body", "content_type", "status", "code", "words"),
        [
            (multipart_body(field("a", b"Ren\xe9")), MULTIPART, 422, "invalid_form", "utf-8"),
            (
                multipart_body(field("_charset_", b"klingon"), field("a", b"x")),
                MULTIPART,
                415,
                "unknown_charset",
                "klingon",
            ),
            (
                multipart_body(field("a", b"x")),
                {"content-type": "multipart/form-data; boundary=XX; charset=base64"},
                415,
                "unknown_charset",
                "base64",
            ),
            (b"x", {"content-type": "multipart/form-data"}, 422, "invalid_form", "boundary"),
            (multipart_body(field("a", b"x"))[:-9], MULTIPART, 422, "invalid_form", "ends"),
            (b"garbage", MULTIPART, 422, "invalid_form", "not valid multipart"),
            (
                multipart_body(("Content-Type: text/plain", b"x")),
                MULTIPART,
                422,
                "invalid_form",
                "Content-Disposition",
            ),
            (
                multipart_body(("Content-Disposition: attachment", b"x")),
                MULTIPART,
                422,
                "invalid_form",
                "Content-Disposition",
            ),
            (
                multipart_body(*[field("a", b"x")] * 1001),
                MULTIPART,
                422,
                "invalid_form",
                "more than 1000 parts",
            ),
            (
                multipart_body(field("a", b"x")),
                {"content-type": "multipart/mixed; boundary=XX"},
                415,
                "unsupported_media_type",
                "multipart/mixed",
            ),
        ],
        ids=[
            "not-utf8",
            "unknown-charset-field",
            "not-a-text-codec",
            "no-boundary",
            "truncated",
            "garbage",
            "no-disposition",
            "not-form-data",
            "too-many-parts",
            "multipart-mixed",
        ],
    )
    async def test_a_bad_multipart_body_is_refused_and_nothing_stored(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        new_workflow: NewWorkflow,
        body: bytes,
        content_type: dict[str, str],
        status: int,
        code: str,
        words: str,
    ) -> None:
        workflow_id = await new_workflow()
        response = await post(client, workflow_id, body, content_type)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code
        assert words in error["message"]
        assert executions_of(runtime, workflow_id) == []
