"""Work submitted during one event-loop iteration, sent together: group commit for a client.

Concurrent webhooks each insert a row and offer an id to the queue within the same few loop
iterations. Sent one by one, each takes a pooled connection, a round trip and (for the
database) a commit of its own; ``LoopBatch`` hands everything submitted in one iteration to
one ``send`` call instead (PostgreSQL's executemany, a Redis pipeline).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: ``send(items)`` gives one outcome per item, in order: its result or its exception.
Send = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class LoopBatch(Generic[T, R]):
    """``submit`` queues an item; the items queued in one loop iteration go to one ``send``
    call, started in the next iteration, and each caller gets its own item's outcome.

    An exception raised by ``send`` itself is every item's outcome. A caller cancelled while
    it waits does not withdraw its item: it is sent all the same (a write that was called
    completes). ``drain`` sends what is queued and waits for every ``send`` in flight.
    """

    def __init__(self, send: Send[T, R]) -> None:
        self._send = send
        self._queued: list[tuple[T, asyncio.Future[R]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((item, future))
        return await asyncio.shield(future)

    async def drain(self) -> None:
        self._flush()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        if queued:
            task = asyncio.create_task(self._run(queued))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _run(self, queued: list[tuple[T, asyncio.Future[R]]]) -> None:
        outcomes: Sequence[R | BaseException]
        try:
            outcomes = await self._send([item for item, _ in queued])
        except Exception as exc:
            outcomes = [exc] * len(queued)
        for (_, future), outcome in zip(queued, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
