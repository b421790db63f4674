"""Prefixed random ids (``wf_``, ``ex_``...): unguessable, URL-safe, roughly time-ordered."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 36)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A new id: milliseconds since the epoch (sortable) then 80 random bits (unguessable)."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_base36(millis, 9)}{_base36(rand, 16)}"
