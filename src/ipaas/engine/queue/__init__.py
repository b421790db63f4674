from __future__ import annotations

from ipaas.config import Settings
from ipaas.engine.queue.base import JobQueue
from ipaas.engine.queue.memory import MemoryQueue


def create_queue(settings: Settings) -> JobQueue:
    """The queue adapter for the configured URL (unset: the embedded in-memory broker)."""
    match settings.redis_url:
        case None | "" | "memory://":
            return MemoryQueue(settings.queue_buffer)
        case str(url) if url.startswith(("redis://", "rediss://")):
            # Imported here so embedded mode never loads the Redis client (~60 ms).
            from ipaas.engine.queue.redis import RedisQueue

            return RedisQueue(url)
        case url:  # named by its scheme only: the URL may hold a password
            scheme = url.partition("://")[0]
            raise ValueError(f"unsupported queue URL scheme {scheme!r}: use redis:// or rediss://")


__all__ = ["JobQueue", "MemoryQueue", "create_queue"]
