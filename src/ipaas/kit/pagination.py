"""Opaque cursors for keyset pagination over (created_at, id)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

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
            return cls(datetime.fromisoformat(created_at), str(id_))
        except (ValueError, TypeError, binascii.Error) as exc:
            raise BadRequest("Invalid cursor", code="invalid_cursor") from exc
