"""Scale-out queue: taskiq-redis's ``RedisStreamBroker`` (a Redis Stream read by a consumer group).

Sending writes a taskiq message (a ``TaskiqMessage`` for the registered task, serialized by the
broker's formatter) carrying only the execution id to the stream (``XADD``, trimmed to about
``maxlen`` entries), exactly what kicking the task would write. It is written with this queue's
long-lived client rather than through ``kiq()``: the broker's ``kick`` builds a new Redis client
object per message, which py-spy showed as a tenth of the API process's CPU under load.

Receiving reads the same stream with ``XREADGROUP`` through the broker's own connection pool
instead of the broker's ``listen()``. ``listen()`` is built for a taskiq worker process: an
endless generator with a fixed block time and batch size that reads ahead of its consumer. Behind
a bounded buffer that would break the port's contract: ids already read into this process are
invisible to ``receive`` (a receive right after three enqueues could see only the first), a
timeout of 0 could not look at Redis at all, and ids read ahead are taken from the other workers
of the group. Reading on demand gives exact semantics: ``COUNT max_items``, ``BLOCK timeout`` (no
``BLOCK`` when the timeout is 0, so the call returns at once), nothing read that is not handed out.

Acknowledgement: the ids a read returns are acknowledged (``XACK``) before they are handed to the
caller. The store is the source of truth: claiming is a compare-and-set, so a re-delivered id is
harmless, and an id lost with a crashed worker stays ``queued`` in the store, where a store poll
or the reaper finds it. Entries that stay unacknowledged (a worker killed between read and ack, a
read cancelled in flight) are taken over with ``XAUTOCLAIM`` once idle for ``reclaim_idle_s``,
as taskiq's ``listen()`` does. taskiq's retries, results and scheduler are not used.

Consumers of SIGKILLed workers would pile up in the group (a clean stop removes its own): at each
reclaim, consumers idle for ``prune_idle_s`` with nothing pending are deleted. Deleting a live
one is harmless too: its next read recreates it.

If Redis loses the consumer group (a restart without persistence), the next read recreates it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from typing import Any, cast

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from taskiq.message import TaskiqMessage
from taskiq_redis import RedisStreamBroker

from ipaas.engine.queue.memory import DELIVER_TASK
from ipaas.kit.batching import LoopBatch

_log = structlog.get_logger(__name__)

#: Most XADDs one pipeline sends.
MAX_PIPELINE = 256
#: Extra time on top of a blocking read's own timeout before the connection counts as dead.
_READ_GRACE_S = 10.0

_Entry = tuple[bytes, dict[bytes, bytes] | None]


def _consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RedisQueue:
    def __init__(
        self,
        url: str,
        *,
        stream: str = "ipaas:executions",
        group: str = "ipaas-workers",
        consumer: str | None = None,
        maxlen: int = 100_000,
        reclaim_idle_s: float = 60.0,
        prune_idle_s: float = 3600.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.stream = stream
        self.group = group
        self.consumer = consumer or _consumer_name()
        self._reclaim_idle_ms = max(int(reclaim_idle_s * 1000), 0)
        self._last_reclaim = float("-inf")
        self._prune_idle_ms = int(prune_idle_s * 1000)
        self._maxlen = maxlen
        self._connect_timeout_s = connect_timeout_s
        self._broker = RedisStreamBroker(
            url,
            queue_name=stream,
            consumer_group_name=group,
            consumer_name=self.consumer,
            # "0": a group created after the stream (Redis restarted empty) still sees its ids.
            consumer_id="0",
            maxlen=maxlen,
            approximate=True,
            socket_connect_timeout=connect_timeout_s,
        )
        self._redis: Redis = Redis(connection_pool=self._broker.connection_pool)
        #: Messages to XADD, a loop iteration's worth at a time.
        self._unsent: LoopBatch[bytes | str, None] = LoopBatch(self._send)

        async def deliver(execution_id: str) -> None:
            """Never runs here: ``receive`` reads the stream itself (see the module docstring)."""

        self._deliver: Any = self._broker.register_task(deliver, task_name=DELIVER_TASK)

    async def startup(self) -> None:
        try:
            await self._broker.startup()  # declares the consumer group (and the stream)
        except (RedisError, OSError):
            # Not fatal: the store holds the work; reads recreate the group once Redis is back.
            _log.warning("redis_queue_unreachable", stream=self.stream, exc_info=True)

    async def shutdown(self) -> None:
        await self._unsent.drain()
        await self._forget_consumer()
        await self._redis.aclose()
        await self._broker.shutdown()  # disconnects the connection pool

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                return bool(await self._redis.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def enqueue(self, execution_id: str) -> None:
        """Sends are pipelined: the ids enqueued in one event-loop iteration (concurrent
        webhooks) go to Redis as one pipeline of XADDs (``_send``), one connection checkout
        and one round trip for all; each caller returns once its XADD is answered."""
        message = TaskiqMessage(
            task_id=uuid.uuid4().hex,
            task_name=DELIVER_TASK,
            labels={},
            labels_types={},
            args=[execution_id],
            kwargs={},
        )
        await self._unsent.submit(self._broker.formatter.dumps(message).message)

    async def _send(self, messages: list[bytes | str]) -> list[BaseException | None]:
        """One pipeline of XADDs per ``MAX_PIPELINE`` messages, one after the other, so the
        stream keeps the order of the enqueues; a failed pipeline fails its messages."""
        outcomes: list[BaseException | None] = []
        for start in range(0, len(messages), MAX_PIPELINE):
            chunk = messages[start : start + MAX_PIPELINE]
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for data in chunk:
                        pipe.xadd(
                            self.stream, {b"data": data}, maxlen=self._maxlen, approximate=True
                        )
                    await pipe.execute()
            except Exception as exc:  # its callers get it (the store keeps the work)
                outcomes += [exc] * len(chunk)
            else:
                outcomes += [None] * len(chunk)
        return outcomes

    async def receive(self, max_items: int, timeout_s: float) -> list[str]:
        if max_items <= 0:
            return []
        entries = await self._reclaim(max_items) if self._reclaim_due() else []
        if len(entries) < max_items:
            wait_s = 0.0 if entries else timeout_s
            entries += await self._read(max_items - len(entries), wait_s)
        if not entries:
            return []
        try:
            await self._redis.xack(self.stream, self.group, *(entry_id for entry_id, _ in entries))
        except RedisError:
            # Still handed out: the entries stay pending and are reclaimed later, a harmless
            # duplicate for the store's compare-and-set claim.
            _log.warning("redis_queue_ack_failed", stream=self.stream, exc_info=True)
        return [execution_id for _, fields in entries if (execution_id := self._decode(fields))]

    async def _read(self, count: int, timeout_s: float) -> list[_Entry]:
        # BLOCK 0 would wait forever: a zero timeout leaves BLOCK out and returns at once.
        block_ms = max(int(timeout_s * 1000), 1) if timeout_s > 0 else None
        for attempt in range(2):
            try:
                async with asyncio.timeout(timeout_s + _READ_GRACE_S):
                    response = await self._redis.xreadgroup(
                        self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
                    )
                streams = cast("list[tuple[bytes, list[_Entry]]] | None", response)
            except ResponseError as error:
                if attempt or not str(error).startswith("NOGROUP"):
                    raise
                await self._create_group()
                continue
            return [entry for _, stream_entries in streams or () for entry in stream_entries]
        return []

    def _reclaim_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_reclaim < self._reclaim_idle_ms / 1000:
            return False
        self._last_reclaim = now
        return True

    async def _reclaim(self, count: int) -> list[_Entry]:
        """Entries another consumer read but never acknowledged (it died in between)."""
        try:
            response = await self._redis.xautoclaim(
                self.stream, self.group, self.consumer, self._reclaim_idle_ms, count=count
            )
        except ResponseError as error:
            if not str(error).startswith("NOGROUP"):
                raise
            await self._create_group()
            return []
        # [next start id, claimed entries, deleted ids]; entries trimmed away come back empty.
        entries: list[_Entry] = response[1]
        await self._prune_consumers()
        return entries

    async def _prune_consumers(self) -> None:
        try:
            consumers = await self._redis.xinfo_consumers(self.stream, self.group)
            for consumer in consumers:
                name, idle, pending = consumer["name"], consumer["idle"], consumer["pending"]
                if pending == 0 and idle >= self._prune_idle_ms and name != self.consumer:
                    await self._redis.xgroup_delconsumer(self.stream, self.group, name)
        except RedisError as error:  # tidying only: the next reclaim tries again
            _log.warning("redis_queue_prune_failed", stream=self.stream, error=repr(error))

    async def _create_group(self) -> None:
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as error:
            if not str(error).startswith("BUSYGROUP"):  # another process was first
                raise
        _log.warning("redis_queue_group_recreated", stream=self.stream, group=self.group)

    async def _forget_consumer(self) -> None:
        """Leave the group on a clean stop, so restarts do not pile up dead consumers; one
        that still holds unacknowledged entries stays, for ``XAUTOCLAIM`` to take them over."""
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                pending = await self._redis.xpending_range(
                    self.stream, self.group, min="-", max="+", count=1, consumername=self.consumer
                )
                if not pending:
                    await self._redis.xgroup_delconsumer(self.stream, self.group, self.consumer)
        except (RedisError, OSError, TimeoutError):
            pass  # Redis down or the group gone: nothing to tidy up

    def _decode(self, fields: dict[bytes, bytes] | None) -> str | None:
        data = fields.get(b"data") if fields else None
        execution_id = None
        if data is not None:
            try:
                message = self._broker.formatter.loads(data)
            except Exception:  # a corrupt entry: acknowledged and skipped, never retried
                message = None
            if message is not None and message.task_name == DELIVER_TASK and message.args:
                execution_id = message.args[0]
        if not isinstance(execution_id, str):
            _log.warning("redis_queue_bad_entry", stream=self.stream, fields=fields)
            return None
        return execution_id
