"""Entity tags and ``If-Match`` (RFC 9110, sections 8.8.3 and 13.1.1): an edit made from a
stale copy is refused with 412 instead of silently replacing what it never saw."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ipaas.errors import BadRequest, IpaasError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

#: ``If-Match`` as RFC 9110 writes it: ``*``, or a comma-separated list of entity tags,
#: ``"opaque"`` or ``W/"opaque"`` (etagc: visible ASCII but DQUOTE). Also the OpenAPI
#: ``pattern`` of the header, so a request validator and this module agree.
IF_MATCH_PATTERN = r'^\s*(\*|(W/)?"[!#-~]*")(\s*,\s*(\*|(W/)?"[!#-~]*"))*\s*$'
_WHOLE = re.compile(IF_MATCH_PATTERN)
_MEMBER = re.compile(r'\*|(?:W/)?"[!#-~]*"')


def entity_tag(version: int, updated_at: datetime) -> str:
    """A strong entity tag for one saved state: every save gets a later ``updated_at``
    (the edit's compare-and-set), so a new tag. The version is in it for people reading."""
    micros = (updated_at - _EPOCH) // _MICROSECOND
    return f'"{version}-{micros}"'


class PreconditionFailed(IpaasError):
    status_code = 412
    code = "precondition_failed"


@dataclass(frozen=True, slots=True)
class IfMatch:
    """A parsed ``If-Match``: ``*`` or the entity tags it lists."""

    any: bool
    tags: frozenset[str]

    @classmethod
    def parse(cls, header: str | None) -> IfMatch | None:
        """``None`` without the header; 400 for one that is neither ``*`` nor a list of
        quoted entity tags (a bare ``3-17...`` would otherwise never match)."""
        if header is None:
            return None
        if _WHOLE.match(header) is None:
            raise BadRequest(
                'If-Match must be "*" or quoted entity tags as sent in ETag, '
                'e.g. If-Match: "3-1764979200000000"',
                code="invalid_if_match",
            )
        members = _MEMBER.findall(header)
        if "*" in members:
            return cls(any=True, tags=frozenset())
        # Strong comparison: a weak tag never matches (RFC 9110, 13.1.1).
        return cls(any=False, tags=frozenset(m for m in members if not m.startswith("W/")))

    def check(self, current: str, what: str) -> None:
        """Raise 412 unless ``current`` (the object's tag now) is one of these."""
        if self.any or current in self.tags:
            return
        raise PreconditionFailed(
            f"The {what} has changed since you read it (its ETag is now {current}); "
            "read it again and reapply your change",
            details={"etag": current},
        )
