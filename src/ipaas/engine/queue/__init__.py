from __future__ import annotations

from ipaas.config import Settings
from ipaas.engine.queue.base import JobQueue
from ipaas.engine.queue.memory import MemoryQueue


def create_queue(settings: Settings) -> JobQueue:
    """The queue adapter for the configured URL (unset: the embedded in-memory broker)."""
    match settings.redis_url:
        case None | "" | "memory://":
            return MemoryQueue(settings.queue_buffer)
        case url:
            msg = f"unsupported queue URL {url!r}: the Redis queue arrives with scale-out mode"
            raise ValueError(msg)


__all__ = ["JobQueue", "MemoryQueue", "create_queue"]
