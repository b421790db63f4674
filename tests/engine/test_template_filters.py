"""The filters templates have beyond Jinja's own (``engine/filters.py``), rendered as a step's
config is."""

from __future__ import annotations

from typing import Any

import pytest

from ipaas.engine.templating import TemplateRenderError, check_syntax, render

CTX: dict[str, Any] = {
    "trigger": {
        "body": {
            "iso": "2026-12-07T05:30:00Z",
            "offset": "2026-12-07T06:30:00+01:00",
            "day": "2026-03-29",
            "seconds": 1796621400,
            "seconds_text": "1796621400",
            "millis": 1796621400250,
            "http_date": "Mon, 07 Dec 2026 05:30:00 GMT",
            "naive": "2026-12-07 05:30:00",
            "nothing": None,
            "words": "next tuesday",
            "flag": True,
            # As Slack posts an interaction: a form whose one field is JSON text.
            "payload": (
                '{"type": "block_actions", "user": {"id": "U0123"}, '
                '"actions": [{"value": "approve"}]}'
            ),
            "parsed": {"already": "an object"},
        },
        "headers": {},
        "query": {},
    },
    "steps": {},
    "execution": {"created_at": "2026-12-07T05:30:00.123456Z"},
}


def one(source: str) -> Any:
    return render({"v": source}, CTX)["v"]


@pytest.mark.parametrize(
    ("source", "rendered"),
    [
        ("{{ trigger.body.iso | date }}", "2026-12-07T05:30:00Z"),
        ("{{ trigger.body.offset | date }}", "2026-12-07T06:30:00+01:00"),
        ("{{ trigger.body.offset | date(tz='UTC') }}", "2026-12-07T05:30:00Z"),
        ("{{ trigger.body.day | date }}", "2026-03-29T00:00:00Z"),
        ("{{ trigger.body.seconds | date }}", "2026-12-07T05:30:00Z"),
        ("{{ trigger.body.seconds_text | date }}", "2026-12-07T05:30:00Z"),
        ("{{ (trigger.body.millis / 1000) | date }}", "2026-12-07T05:30:00.250000Z"),
        ("{{ trigger.body.http_date | date }}", "2026-12-07T05:30:00Z"),
        ("{{ trigger.body.naive | date }}", "2026-12-07T05:30:00Z"),  # no offset: UTC
        # The clocks went forward in Berlin that night: 01:00 UTC is 03:00 there.
        ("{{ '2026-03-29T01:00:00Z' | date('%H:%M %Z', 'Europe/Berlin') }}", "03:00 CEST"),
        (
            "Due {{ trigger.body.iso | date('%A %d %B %Y, %H:%M', 'America/New_York') }}",
            "Due Monday 07 December 2026, 00:30",
        ),
        ("{{ trigger.body.iso | date(tz='Asia/Kolkata') }}", "2026-12-07T11:00:00+05:30"),
        ("Report {{ execution.created_at | date('%Y-%m-%d') }}", "Report 2026-12-07"),
        # A missing field or null is nothing, as anywhere in text.
        ("[{{ trigger.body.absent | date }}]", "[]"),
        ("[{{ trigger.body.nothing | date('%Y') }}]", "[]"),
        ("{{ 'hello wörld' | b64encode }}", "aGVsbG8gd8O2cmxk"),
        ("{{ 'aGVsbG8gd8O2cmxk' | b64decode }}", "hello wörld"),
        ("{{ 'PDw_Pz4-' | b64decode }}", "<<??>>"),  # URL-safe, padding left out
        ("{{ 42 | b64encode }}", "NDI="),
        # FIPS 180-2's and RFC 1321's vectors.
        ("{{ 'abc' | md5 }}", "900150983cd24fb0d6963f7d28e17f72"),
        ("{{ 'abc' | sha1 }}", "a9993e364706816aba3e25717850c26c9cd0d89d"),
        (
            "{{ 'abc' | sha256 }}",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        # Mailchimp's subscriber hash: the MD5 of the lowercase email.
        ("{{ 'ABC' | lower | md5 }}", "900150983cd24fb0d6963f7d28e17f72"),
        ("[{{ trigger.body.absent | sha256 }}]", "[]"),
        ("[{{ trigger.body.absent | b64encode }}]", "[]"),
        ("{{ (trigger.body.payload | fromjson).user.id }}", "U0123"),
        ("{{ (trigger.body.payload | fromjson).actions[0].value }}", "approve"),
        ("{{ (trigger.body.parsed | fromjson).already }}", "an object"),
        ("[{{ (trigger.body.absent | fromjson).user }}]", "[]"),
    ],
)
def test_renders(source: str, rendered: str) -> None:
    assert one(source) == rendered


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("{{ trigger.body.words | date }}", "cannot read 'next tuesday' as a date-time"),
        ("{{ trigger.body.flag | date }}", "cannot read True as a date-time"),
        ("{{ trigger.body.iso | date(tz='Mars/Olympus') }}", "unknown time zone 'Mars/Olympus'"),
        ("{{ trigger.body.iso | date(tz='../../etc/passwd') }}", "unknown time zone"),
        ("{{ trigger.body.iso | date(7) }}", "the format must be text"),
        ("{{ 1e30 | date }}", "seconds is out of range"),
        ("{{ '@@@' | b64decode }}", "not base64 text that decodes to UTF-8"),
        ("{{ '/w==' | b64decode }}", "not base64 text that decodes to UTF-8"),  # byte 0xff
        ("{{ trigger.body.words | fromjson }}", "fromjson: not JSON text"),
        ("{{ 'NaN' | fromjson }}", "fromjson: not JSON text"),
        ("{{ trigger.body.flag | fromjson }}", "fromjson: reads JSON text, not bool"),
    ],
)
def test_what_cannot_be_read_fails_the_step_naming_it(source: str, says: str) -> None:
    with pytest.raises(
        TemplateRenderError, match=r"^config\.v: (ValueError|TypeError): "
    ) as caught:
        one(source)
    assert says in str(caught.value)


def test_a_long_value_is_not_repeated_whole_in_the_error() -> None:
    with pytest.raises(TemplateRenderError) as caught:
        render({"v": "{{ x | date }}"}, {**CTX, "x": "y" * 10_000})
    assert len(str(caught.value)) < 200


def test_the_filters_compile_when_a_workflow_is_saved() -> None:
    config = {"text": "{{ trigger.body.iso | date('%d.%m.') }} {{ trigger.body.x | b64encode }}"}
    assert check_syntax(config) == []


def test_one_expression_of_fromjson_keeps_its_type() -> None:
    assert one("{{ trigger.body.payload | fromjson }}")["actions"] == [{"value": "approve"}]


def test_fromjson_is_held_to_the_template_limits() -> None:
    deep = "[" * 10_000 + "]" * 10_000
    with pytest.raises(TemplateRenderError, match="fromjson: not JSON text"):
        render({"v": "{{ x | fromjson }}"}, {**CTX, "x": deep})
