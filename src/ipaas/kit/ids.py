"""Prefixed random ids (``wf_``, ``ex_``...): unguessable, URL-safe, time-ordered to the
millisecond."""

from __future__ import annotations

import os
import threading
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

#: Random bytes are read from the OS this many at a time. One ``os.urandom`` per id was a
#: third of the webhook handler's samples in a profile: the system call releases the GIL,
#: and taking it back waited on the other threads.
_POOL_BYTES = 4096
_pool = b""
_offset = 0
_pool_lock = threading.Lock()


def _random_bytes(n: int) -> bytes:
    global _pool, _offset
    with _pool_lock:
        if _offset + n > len(_pool):
            _pool, _offset = os.urandom(_POOL_BYTES), 0
        chunk = _pool[_offset : _offset + n]
        _offset += n
    return chunk


def _forget_pool() -> None:
    """A forked child must not hand out its parent's remaining bytes again."""
    global _pool, _offset
    _pool, _offset = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


def new_id(prefix: str) -> str:
    """A new id: milliseconds since the epoch (sortable) then ~82 random bits (unguessable)."""
    global _last_millis, _last_prefix
    millis = time.time_ns() // 1_000_000
    if millis != _last_millis:  # one conversion per millisecond, not per id
        _last_millis, _last_prefix = millis, _base36(millis, 9)
    return f"{prefix}_{_last_prefix}{_random_bytes(16).translate(_RANDOM_CHARS).decode()}"
