"""Prefixed random ids (``wf_``, ``ex_``...): unguessable, URL-safe, time-ordered to the
millisecond."""

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


#: Maps each random byte to a base-36 character in C (``bytes.translate``). 256 is not a
#: multiple of 36, so the first 4 characters are a little likelier: ~5.16 bits per character
#: instead of 5.17, ~82 bits over the 16 random characters.
_RANDOM_CHARS = bytes(_ALPHABET[b % 36].encode()[0] for b in range(256))

_last_millis = -1
_last_prefix = ""


def new_id(prefix: str) -> str:
    """A new id: milliseconds since the epoch (sortable) then ~82 random bits (unguessable)."""
    global _last_millis, _last_prefix
    millis = time.time_ns() // 1_000_000
    if millis != _last_millis:  # one conversion per millisecond, not per id
        _last_millis, _last_prefix = millis, _base36(millis, 9)
    return f"{prefix}_{_last_prefix}{os.urandom(16).translate(_RANDOM_CHARS).decode()}"
