from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ipaas.errors import BadRequest
from ipaas.kit.preconditions import IfMatch, PreconditionFailed, entity_tag


def test_entity_tag_changes_with_every_microsecond_and_version() -> None:
    at = datetime(2026, 12, 6, 10, 0, 0, 123456, tzinfo=UTC)
    assert entity_tag(3, at) == '"3-1796551200123456"'
    assert entity_tag(3, at.replace(microsecond=123457)) != entity_tag(3, at)
    assert entity_tag(4, at) != entity_tag(3, at)


@pytest.mark.parametrize(
    ("header", "tags", "any_"),
    [
        ('"a"', {'"a"'}, False),
        ('"a", "b",W/"c"', {'"a"', '"b"'}, False),  # weak tags never match
        ("  *  ", set(), True),
        ('"x", *', set(), True),
        ('""', {'""'}, False),
    ],
)
def test_parse(header: str, tags: set[str], any_: bool) -> None:
    parsed = IfMatch.parse(header)
    assert parsed is not None
    assert (set(parsed.tags), parsed.any) == (tags, any_)


@pytest.mark.parametrize("header", ["", "a", '"a" "b"', '"a', 'W/ "a"', '"a b"', "**"])
def test_malformed_is_400(header: str) -> None:
    with pytest.raises(BadRequest) as raised:
        IfMatch.parse(header)
    assert raised.value.code == "invalid_if_match"


def test_check() -> None:
    assert IfMatch.parse(None) is None
    listed = IfMatch.parse('"1-1", "2-2"')
    assert listed is not None
    listed.check('"2-2"', "workflow")
    with pytest.raises(PreconditionFailed) as refused:
        listed.check('"3-3"', "workflow")
    assert refused.value.status_code == 412
    assert refused.value.details == {"etag": '"3-3"'}
    weak = IfMatch.parse('W/"3-3"')
    assert weak is not None
    with pytest.raises(PreconditionFailed):
        weak.check('"3-3"', "workflow")
