"""Opaque cursors for keyset pagination over (created_at, id)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from ipaas.errors import BadRequest


@dataclass(frozen=True, slots=True)
class Cursor:
    created_at: datetime
    id: str

    def encode(self) -> str:
        raw = json.dumps([self.created_at.isoformat(), self.id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            padded = token + "=" * (-len(token) % 4)
            created_at, id_ = json.loads(base64.urlsafe_b64decode(padded))
            # A cursor this API made is in UTC; an altered one may be naive or out of range
            # once in UTC (a 500 on the stores before).
            at = datetime.fromisoformat(created_at)
            if at.utcoffset() is None:
                msg = "a cursor's time has its zone"
                raise ValueError(msg)
            return cls(at.astimezone(UTC), str(id_))
        except (ValueError, TypeError, OverflowError, binascii.Error) as exc:
            raise BadRequest("Invalid cursor", code="invalid_cursor") from exc
